"""Real work placed by the orchestrator, from Python: ``submit(fn, *args, task=..., **kwargs)``.

For Ray users: inside a Ray job (or any driver connected to the cluster) the call goes to
the router's deployment through a Serve handle, so the function itself travels (Ray
pickles it, as it would for a remote function; the cluster's own token is the trust
boundary). The router books the task like any other (policy, node, GPU share, its node's
FIFO queue), runs ``fn(*args, **kwargs)`` there instead of emulated work and records it;
the handle gives back the function's value and the measured outcome::

    import ray
    from orchestrator.work import placed, submit

    ray.init()  # the cluster's address and token (RAY_ADDRESS, RAY_AUTH_TOKEN)
    h = submit(train_step, batch, task={"description": "image classification", "gpu_milli": 500})
    h.result()        # what train_step returned (raises TaskFailed if it raised)
    h.outcome()       # the record: node, share, queue/network/execution ms, cost, SLO met ...

    @placed(description="batch ETL aggregation", cpu_milli=2000)
    def nightly(day): ...
    nightly.submit("2026-12-05").result()

Over HTTP a task names an allow-listed function instead (``entry_point``, see
:mod:`serve_app.entry_points`). A function sent this way lives in the router process that
took it: if the router restarts before it ran, its record ends ``failed`` saying so.
"""
from __future__ import annotations

import functools
import uuid
from typing import Any, Callable, Mapping

#: the router's Serve application and deployment (configs/serve.yaml)
ROUTER_APP = "orchestrator"
ROUTER_DEPLOYMENT = "Router"


class TaskRefused(ValueError):
    """The router did not take the task (``status`` as HTTP would answer it: 409, 422, 429, 503 ...)."""

    def __init__(self, status: int, detail: Any, task_id: str) -> None:
        self.status, self.detail, self.task_id = status, detail, task_id
        super().__init__(f"task {task_id} refused ({status}): {_text(detail)}")


class TaskFailed(RuntimeError):
    """The task ran and did not succeed (its function raised, it was cancelled, its node was lost)."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.record = dict(record)
        super().__init__(f"task {record.get('task_id')} {record.get('status')}: {record.get('reason')}")


class WorkHandle:
    """A submitted task: :meth:`result` waits for the function's value, :meth:`outcome` for its record."""

    def __init__(self, response: Any, task_id: str) -> None:
        self._response = response  # a Serve DeploymentResponse (any object with .result(timeout_s=))
        self.task_id = task_id
        self._answer: dict[str, Any] | None = None

    def _wait(self, timeout_s: float | None) -> dict[str, Any]:
        if self._answer is None:
            self._answer = self._response.result(timeout_s=timeout_s)
        err = self._answer.get("error")
        if err is not None:
            raise TaskRefused(int(err.get("status", 400)), err.get("detail"), self.task_id)
        return self._answer

    def outcome(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The task's record once it ended: status, node, pool, share, measured times (ms), cost,
        whether it met its SLO, the decision (policy, confidence, explanation)."""
        return dict(self._wait(timeout_s)["record"])

    def result(self, timeout_s: float | None = None) -> Any:
        """What the function returned; raises :class:`TaskFailed` if the task did not succeed."""
        answer = self._wait(timeout_s)
        if answer["record"].get("status") != "succeeded":
            raise TaskFailed(answer["record"])
        return answer["value"]

    def __repr__(self) -> str:
        return f"WorkHandle({self.task_id!r})"


def submit(fn: Callable[..., Any], *args: Any, task: Mapping[str, Any] | None = None,
           app_name: str = ROUTER_APP, **kwargs: Any) -> WorkHandle:
    """Send ``fn(*args, **kwargs)`` to the router as a task described by ``task`` (the fields of
    ``POST /v1/tasks``: ``description``, ``priority``, ``slo_ms``, ``cpu_milli``, ``gpu_milli``,
    ``mig_profile``, ``work`` (its expected reference-device seconds, which the policy plans with),
    ``pool``, ``id`` ...). Needs ``ray.init()`` on the cluster first. An ``id`` makes a retry
    idempotent: the same id and task answer the first run's record instead of running again."""
    from ray import serve

    fields = dict(task or {})
    fields.setdefault("id", f"py-{uuid.uuid4().hex[:20]}")
    handle = serve.get_deployment_handle(ROUTER_DEPLOYMENT, app_name=app_name)
    return WorkHandle(handle.run_function.remote(fields, fn, tuple(args), dict(kwargs)), fields["id"])


def placed(**task: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``f.submit(*args, **kwargs)`` sends ``f`` as a task with these fields; a plain call
    of ``f`` still runs it here."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def local(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        local.submit = lambda *args, **kwargs: submit(fn, *args, task=task, **kwargs)  # type: ignore[attr-defined]
        return local
    return wrap


def _text(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc') or []))}: {d.get('msg')}" for d in detail)
    return str(detail)
