"""The Ray calls of the executor and its worker warm-up, behind one small interface.

:class:`cluster.executor.Executor` takes a :class:`Backend` (as
:class:`cluster.live_state.LiveState` takes ``reader=``): :class:`RayBackend` by
default, a fake in its unit tests, which then drive completions by hand instead
of patching module globals. Only public Ray APIs are used here; the private ones
are in :mod:`cluster.ray_compat`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from cluster.ray_resources import task_options
from cluster.task_body import hold, run

if TYPE_CHECKING:
    from cluster.state import Share
    from scheduler.task import Task


class Backend(Protocol):
    """What the executor needs from Ray: submit pinned tasks, wait for them, read them, cancel."""

    def submitter(self, node_name: str, task: "Task", share: "Share", node_id: str,
                  mig_slot: "tuple[int, str, int] | None" = None) -> Callable[..., Any]:
        """A function that submits the task body with these options and returns its ref (the
        executor caches it per node id, task shape and MIG slot). ``mig_slot``: a function's MIG
        instance, which gets worker processes of its own (:data:`cluster.task_body.MIG_SLOT_ENV`)."""

    def wait(self, refs: list, timeout: float) -> list:
        """The finished ones of ``refs``, waiting up to ``timeout`` seconds for a first one."""

    def outcomes(self, refs: list) -> list:
        """Each finished ref's value, or the exception its task ended with."""

    def cancel(self, ref: Any, force: bool = False) -> None:
        """Best effort: stop a task, dropped from Ray's queue if it has not started; a started one is
        interrupted, or with ``force`` its worker exits."""

    def holder(self, node_name: str, node_id: str, gpu: bool) -> Callable[..., Any]:
        """A function ``(seconds, modules)`` that submits one warm-up task (:func:`cluster.task_body.hold`) to
        the node's GPU or non-GPU worker pool and returns its ref."""

    def get(self, refs: list, timeout: float | None) -> list:
        """The values of ``refs``; raises ``TimeoutError`` when they are not all done in ``timeout``
        seconds, else the error of a task that failed."""


_REMOTE: Any = None
_HOLD: Any = None


def remote_body() -> Any:
    """The Ray remote function of :func:`cluster.task_body.run` (system retries off: the executor
    re-places)."""
    global _REMOTE
    if _REMOTE is None:
        import ray

        _REMOTE = ray.remote(max_retries=0, retry_exceptions=False)(run)
    return _REMOTE


class RayBackend:
    """:class:`Backend` over the connected Ray cluster."""

    def submitter(self, node_name: str, task: "Task", share: "Share", node_id: str,
                  mig_slot: "tuple[int, str, int] | None" = None) -> Callable[..., Any]:
        opts = task_options(node_name, task, share, node_id)
        if mig_slot is not None:
            # CUDA reads CUDA_VISIBLE_DEVICES once per process: a worker pool per MIG instance (Ray keeps
            # workers per runtime env) so that no process ever sees two instances
            from cluster.task_body import MIG_SLOT_ENV, slot_text

            opts["runtime_env"] = {"env_vars": {MIG_SLOT_ENV: slot_text(mig_slot)}}
        return remote_body().options(**opts).remote

    def wait(self, refs: list, timeout: float) -> list:
        """``ray.wait`` with the GIL released; ``fetch_local=False``: values are read in bulk later."""
        import ray

        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout, fetch_local=False)
        if ready and len(refs) > 1:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        return ready

    def outcomes(self, refs: list) -> list:
        """One ``ray.get`` for all; one per ref when some failed, so each failure reaches its own task."""
        import ray

        try:
            return ray.get(refs)
        except Exception:  # noqa: BLE001 - sorted out per ref below
            out = []
            for ref in refs:
                try:
                    out.append(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - delivered as the task's outcome
                    out.append(exc)
            return out

    def cancel(self, ref: Any, force: bool = False) -> None:
        """``ray.cancel``. Ray 2.60, normal tasks: a pending task is not run; a running one gets a
        KeyboardInterrupt, or with ``force`` its worker process exits (a body that ignores or never
        reaches the interrupt stops too, and Ray frees its resources with the worker). ``ray.get`` on
        it then raises TaskCancelledError, or WorkerCrashedError after a forced one."""
        try:
            import ray

            ray.cancel(ref, force=force)
        except Exception:  # noqa: BLE001 - best effort: the node may be gone, or the task finished
            pass

    def holder(self, node_name: str, node_id: str, gpu: bool) -> Callable[..., Any]:
        global _HOLD
        if _HOLD is None:
            import ray

            _HOLD = ray.remote(max_retries=0)(hold)
        share = ("slice", 1) if gpu else ("cpu", 0)
        return _HOLD.options(**task_options(node_name, _WarmShape(), share, node_id)).remote

    def get(self, refs: list, timeout: float | None) -> list:
        """``ray.get`` (its ``GetTimeoutError`` is a ``TimeoutError``)."""
        import ray

        return ray.get(refs, timeout=timeout)


class _WarmShape:
    """The smallest task shape (1 milli-CPU, no memory) for warm-up tasks."""

    cpu_milli = 1
    mem_mib = 0
