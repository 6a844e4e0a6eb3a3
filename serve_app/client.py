"""A small HTTP client for the router, used by the Streamlit view.

Every call returns parsed JSON or raises :class:`RouterError` with a sentence a
person can act on ("the router at http://127.0.0.1:8000 is not answering"),
never a stack trace.
"""
from __future__ import annotations

import os
import time
from typing import Any

import requests

from cluster.vocabulary import FINAL

DEFAULT_URL = os.environ.get("ORCH_ROUTER_URL", "http://127.0.0.1:8000")


class RouterError(RuntimeError):
    """The router is down or answered with an error; ``str()`` is for people."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class RouterClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, *, admin: bool = False, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if (admin and self.token) else {}
        try:
            r = requests.request(method, self.url + path, headers=headers, timeout=self.timeout, **kwargs)
        except requests.RequestException:
            raise RouterError(f"the router at {self.url} is not answering; start it with "
                              "`orchestrator serve` (or `make demo`)") from None
        try:
            body = r.json()
        except ValueError:
            body = r.text
        if r.status_code >= 400:
            detail = body.get("detail", body) if isinstance(body, dict) else body
            if isinstance(detail, list):  # FastAPI validation errors
                detail = "; ".join(f"{'.'.join(str(x) for x in d.get('loc', [])[1:])}: {d.get('msg')}"
                                   for d in detail if isinstance(d, dict)) or str(detail)
            elif isinstance(detail, dict):
                detail = detail.get("message") or detail.get("reason") or str(detail)
            raise RouterError(f"{r.status_code}: {detail}", r.status_code, body)
        return body

    def health(self) -> Any:
        return self._call("GET", "/healthz")

    def route(self, task: dict) -> dict:
        return self._call("POST", "/v1/route", json=task)

    def run(self, task: dict, wait: bool = True, timeout_s: float | None = None) -> dict:
        """``POST /v1/tasks``; with ``wait`` the router answers when the task ended (or after
        ``timeout_s``, with the task still placed or running: see :meth:`wait_final`)."""
        params = {"wait": str(wait).lower()}
        if wait and timeout_s:
            params["timeout_s"] = f"{timeout_s:g}"
        return self._call("POST", "/v1/tasks", params=params, json=task)

    def wait_final(self, task_id: str, timeout_s: float = 120.0, poll_s: float = 1.0) -> dict:
        """Poll ``GET /v1/tasks/{id}`` until the task succeeded, failed or was rejected (or the time is up)."""
        deadline = time.monotonic() + timeout_s
        while True:
            rec = self.task(task_id)
            if rec.get("status") in FINAL or time.monotonic() > deadline:
                return rec
            time.sleep(poll_s)

    def task(self, task_id: str) -> dict:
        return self._call("GET", f"/v1/tasks/{task_id}")

    def tasks(self, **filters: Any) -> dict:
        return self._call("GET", "/v1/tasks", params={k: v for k, v in filters.items() if v not in (None, "")})

    def cluster(self) -> Any:
        return self._call("GET", "/v1/cluster")

    def policy(self) -> dict:
        return self._call("GET", "/v1/policy")

    def set_policy(self, policy: str, version: str | None = None) -> dict:
        body: dict[str, Any] = {"policy": policy}
        if version:
            body["version"] = version
        return self._call("PUT", "/v1/policy", admin=True, json=body)
