"""A small HTTP client for the router, used by the Streamlit view.

Every call returns parsed JSON or raises :class:`RouterError` with a sentence a
person can act on ("the router at http://127.0.0.1:8000 is not answering"),
never a stack trace.

Work is sent with an API key (``api_key``, else ``$ORCH_API_KEY`` or the file named
by ``$ORCH_API_KEY_FILE``). Calls that are safe to repeat are retried with backoff
on a connection error, a 5xx or a 429 (after its ``Retry-After``): reads, cancels,
and ``POST /v1/tasks``, to which :meth:`RouterClient.run` gives a task id when it
has none, so a retry of a request cut by a router crash finds the same task
instead of starting a second one (the router's contract, README "Serve router").
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from cluster.vocabulary import FINAL

DEFAULT_URL = os.environ.get("ORCH_ROUTER_URL", "http://127.0.0.1:8000")
KEY_ENV = "ORCH_API_KEY"
KEY_FILE_ENV = "ORCH_API_KEY_FILE"
#: answers worth a retry of an idempotent call: the replica restarting, or admission's 429
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def api_key_from_env() -> str | None:
    """``$ORCH_API_KEY``, else the contents of the file ``$ORCH_API_KEY_FILE``, else None."""
    key = os.environ.get(KEY_ENV, "").strip()
    if key:
        return key
    path = os.environ.get(KEY_FILE_ENV)
    if path:
        try:
            return open(path).read().strip() or None
        except OSError:
            return None
    return None


def admin_token(path: str | None = None) -> str:
    """The admin token: from ``path``, else ``$ORCH_ADMIN_TOKEN``, else the file ``$ORCH_ADMIN_TOKEN_FILE`` names;
    ValueError saying which source failed and why."""
    from serve_app.config import TOKEN_ENV, TOKEN_FILE_ENV

    path = path or (None if os.environ.get(TOKEN_ENV) else os.environ.get(TOKEN_FILE_ENV))
    try:
        token = Path(path).expanduser().read_text().strip() if path else os.environ.get(TOKEN_ENV)
    except OSError as exc:
        raise ValueError(f"--token-file {path}: {exc.strerror}") from None
    if not token:
        raise ValueError(f"the admin token: set {TOKEN_ENV} or {TOKEN_FILE_ENV}, or give --token-file")
    return token


class RouterError(RuntimeError):
    """The router is down or answered with an error; ``str()`` is for people."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class RouterClient:
    """``token``: the admin token (admin calls); ``api_key``: the client's key (work), default from the
    environment; ``retries``: extra attempts of an idempotent call (backoff doubling from ``backoff_s``)."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0,
                 api_key: str | None = None, retries: int = 4, backoff_s: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.api_key = api_key if api_key is not None else api_key_from_env()
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s

    def _call(self, method: str, path: str, *, admin: bool = False, retry: bool | None = None,
              timeout: float | None = None, **kwargs: Any) -> Any:
        secret = self.token if admin else self.api_key
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        retry = method in ("GET", "DELETE") if retry is None else retry
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            try:
                r = requests.request(method, self.url + path, headers=headers, timeout=timeout or self.timeout,
                                     **kwargs)
            except requests.RequestException:
                if attempt + 1 < attempts:
                    time.sleep(self.backoff_s * 2 ** attempt)
                    continue
                raise RouterError(f"the router at {self.url} is not answering; start it with "
                                  "`orchestrator serve` (or `make demo`)") from None
            busy = r.status_code == 409 and "Retry-After" in r.headers  # the same id in progress elsewhere
            if (r.status_code in RETRY_STATUSES or busy) and attempt + 1 < attempts:
                wait = r.headers.get("Retry-After", "")
                time.sleep(min(30.0, float(wait)) if wait.isdigit() else self.backoff_s * 2 ** attempt)
                continue
            break
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
        task = task if task.get("id") else {**task, "id": f"c-{uuid.uuid4().hex}"}  # a retry finds the same task
        wait_s = (timeout_s or 300.0) + 30.0 if wait else None  # the router holds the answer that long
        return self._call("POST", "/v1/tasks", params=params, json=task, retry=True, timeout=wait_s)

    def cancel(self, task_id: str) -> dict:
        """``DELETE /v1/tasks/{id}``: cancel a queued or running task of this client's (a retry that finds
        it cancelled by the first attempt answers its record)."""
        try:
            return self._call("DELETE", f"/v1/tasks/{task_id}")
        except RouterError as exc:
            if exc.status == 409 and isinstance(exc.body, dict) and exc.body.get("status") == "cancelled":
                return self.task(task_id)
            raise

    def wait_final(self, task_id: str, timeout_s: float = 120.0, poll_s: float = 1.0) -> dict:
        """Poll ``GET /v1/tasks/{id}`` until the task has ended (:data:`FINAL`) or the time is up."""
        deadline = time.monotonic() + timeout_s
        while True:
            rec = self.task(task_id)
            if rec.get("status") in FINAL or time.monotonic() > deadline:
                return rec
            time.sleep(poll_s)

    def task(self, task_id: str) -> dict:
        return self._call("GET", f"/v1/tasks/{task_id}")

    def tasks(self, **filters: Any) -> dict:
        return self._call("GET", "/v1/tasks", params=_given(filters))

    def aggregates(self, **filters: Any) -> list[dict]:
        """Daily totals of the tasks retention trimmed (admin; filters: day, pool, policy, kind, status)."""
        return self._call("GET", "/v1/history/aggregates", admin=True, params=_given(filters))

    def cluster(self) -> Any:
        return self._call("GET", "/v1/cluster")

    def policy(self) -> dict:
        return self._call("GET", "/v1/policy")

    def capacity_forecast(self, interval: str = "1h", horizon: int = 24, models: str = "snaive,ets") -> dict:
        """``GET /v1/capacity/forecast``: the history's demand forecast beside its actuals (seconds to fit)."""
        return self._call("GET", "/v1/capacity/forecast", timeout=max(self.timeout, 120.0),
                          params={"interval": interval, "horizon": horizon, "models": models})

    def capacity_recommendation(self) -> dict:
        return self._call("GET", "/v1/capacity/recommendation")

    def loop(self, hours: float = 24.0) -> dict:
        """``GET /v1/loop``: calibration, shadow agreement over ``hours``, counterfactual, retrain, promotions."""
        return self._call("GET", "/v1/loop", params={"hours": hours})

    def set_policy(self, policy: str, version: str | None = None) -> dict:
        body: dict[str, Any] = {"policy": policy}
        if version:
            body["version"] = version
        return self._call("PUT", "/v1/policy", admin=True, json=body)

    def set_draining(self, nodes: list[str]) -> dict:
        """Drain exactly ``nodes`` (admin; [] ends every drain); answers the cluster view."""
        return self._call("PUT", "/v1/cluster/draining", admin=True, json={"nodes": list(nodes)})

    def promote(self) -> dict:
        """Promote the router's shadow policy (admin); ``GET /v1/policy``'s ``promotion`` follows its judgement."""
        return self._call("POST", "/v1/policy/promote", admin=True, retry=False)


def _given(filters: dict[str, Any]) -> dict[str, Any]:
    """The query filters that were set (None and "" mean no filter)."""
    return {k: v for k, v in filters.items() if v not in (None, "")}
