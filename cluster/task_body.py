"""What a Ray worker runs for the executor: the task body and the warm-up body.

Kept apart from :mod:`cluster.executor` and free of imports beyond the standard
library (Ray is already loaded in a worker): a worker imports the module of every
function it runs, and ``cluster.executor`` would bring numpy and the bookkeeping
(110 ms and 12 MB per worker here), the router's module the whole router (0.8 s
and 27 MB). A cluster under load runs dozens of workers, and each new one pays it.
"""
from __future__ import annotations

import importlib
import os
import re
import time
from typing import Any, Callable

_NODE_ID: str | None = None

#: task_body's defaults for its first four parameters (the executor does not send arguments equal to them)
BODY_DEFAULTS = (0.0, 0.0, "sleep", False)


def burn(seconds: float) -> None:
    """A small real CPU kernel (64x64 matrix products) for ``seconds`` of wall time."""
    import numpy as np  # only the "cpu" kernel needs it

    a = np.random.default_rng(0).random((64, 64))
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = np.tanh(a @ a.T / 64.0)


_MIG_LIST: dict[int, list[tuple[str, str]]] | None = None
#: the environment variable naming the MIG instance a worker pool is for (set through Ray's runtime env)
MIG_SLOT_ENV = "ORCH_MIG_SLOT"


def slot_text(slot: tuple[int, str, int]) -> str:
    """``(GPU, profile, ordinal)`` as ``GPU/profile/ordinal``."""
    return "/".join(map(str, slot))
_MIG_LINE = re.compile(r"^\s*MIG\s+(?P<profile>\S+)\s+Device\s+\d+:\s+\(UUID:\s*(?P<uuid>MIG-[^)\s]+)\)")
_GPU_LINE = re.compile(r"^GPU\s+(?P<index>\d+):")


def mig_devices(listing: str) -> dict[int, list[tuple[str, str]]]:
    """``nvidia-smi -L``'s MIG instances per GPU index, in its order: ``{gpu: [(profile, MIG UUID), ...]}``."""
    out: dict[int, list[tuple[str, str]]] = {}
    gpu = None
    for line in listing.splitlines():
        if (m := _GPU_LINE.match(line)) is not None:
            gpu = int(m["index"])
            out.setdefault(gpu, [])
        elif gpu is not None and (m := _MIG_LINE.match(line)) is not None:
            out[gpu].append((m["profile"], m["uuid"]))
    return out


def mig_uuid(devices: dict[int, list[tuple[str, str]]], gpu: int, profile: str, ordinal: int) -> str | None:
    """The UUID of the ``ordinal``-th (from 0) ``profile`` instance of GPU ``gpu``, the bookkeeping's slot matched
    by GPU, profile and order among that GPU's instances of the profile; None if the host has no such one."""
    same = [uuid for prof, uuid in devices.get(gpu, ()) if prof == profile]
    return same[ordinal] if ordinal < len(same) else None


def _host_mig_devices() -> dict[int, list[tuple[str, str]]]:
    """This host's MIG instances (``nvidia-smi -L``, read once per worker); none without NVIDIA's tools."""
    global _MIG_LIST
    if _MIG_LIST is None:
        import subprocess

        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        _MIG_LIST = mig_devices(listing)
    return _MIG_LIST


def _mig_visible(mig: tuple[int, str, int]) -> str | None:
    """The MIG UUID a function on slot ``mig`` must see, or None on a host without MIG (nothing to set).

    Raises where the host lists MIG instances but not this one (another layout, another GPU order):
    running anyway would show the function every device. A worker serves one slot
    (:data:`MIG_SLOT_ENV`): one that was started for another would have CUDA bound to that one.
    """
    devices = _host_mig_devices()
    if not any(devices.values()):
        return None
    bound = os.environ.get(MIG_SLOT_ENV)
    if bound is not None and bound != slot_text(mig):
        raise RuntimeError(f"this worker serves MIG slot {bound}, not {slot_text(mig)}")
    uuid = mig_uuid(devices, *mig)
    if uuid is None:
        raise RuntimeError(f"the host has no {mig[1]} MIG instance number {mig[2]} on GPU {mig[0]} (nvidia-smi -L); "
                           "its MIG layout differs from the node's mig_layout")
    return uuid


def task_body(net_s: float = 0.0, exec_s: float = 0.0, kernel: str = "sleep", gpu: bool = False,
              fn: Callable | None = None, args: tuple = (), mig: tuple[int, str, int] | None = None) -> tuple:
    """What runs on the chosen node: network delay, then the work; reports what it saw.

    Returns ``(start, network s, execution s, end, Ray node id, GPU ids, value)``; kept
    to plain arguments and a tuple because on no-op tasks its cost is the executor's
    dispatch overhead. ``mig``: the MIG instance a function's task holds, ``(GPU, profile, ordinal)``;
    where the host really has it, the function sees only it (``CUDA_VISIBLE_DEVICES`` is its MIG UUID:
    Ray sets the variable for GPU resources, and a MIG slice is a custom resource to Ray); the
    executor runs such tasks in worker processes of that slot only (:data:`MIG_SLOT_ENV`).
    """
    global _NODE_ID
    start = time.time()
    uuid = _mig_visible(mig) if fn is not None and mig is not None else None  # before the timed work
    if net_s > 0:
        time.sleep(net_s)
    t_exec = time.time()
    value = None
    if fn is not None:
        if uuid is not None:
            before = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = uuid
            try:
                value = fn(*args)
            finally:
                if before is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = before
        else:
            value = fn(*args)
    elif kernel == "cpu":
        burn(exec_s)
    elif exec_s > 0:
        time.sleep(exec_s)
    end = time.time()
    import ray

    if _NODE_ID is None:  # a worker process never changes node
        _NODE_ID = ray.get_runtime_context().get_node_id()
    gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", []) if gpu else ()
    return start, t_exec - start, end - t_exec, end, _NODE_ID, tuple(gpus), value


def run(*payload: Any) -> tuple:
    """:func:`task_body` behind a bare ``*payload`` signature: Ray binds every call's arguments to
    the remote function's signature, 20-28 us for task_body's six defaults against 5 us here."""
    return task_body(*payload)


#: the function a module of real work may define to load what its first call would (its imports, a model)
WARM_HOOK = "warm"


def hold(seconds: float, modules: tuple[str, ...] = ()) -> int:
    """Warm-up body: import ``modules`` and call each one's ``warm()`` if it has one (so a worker's first
    real task does not pay for them), then keep the worker busy for the rest of ``seconds`` (so concurrent
    ones need their own); its pid. A module that fails to warm is left for its first task to report."""
    end = time.monotonic() + seconds
    for name in modules:
        try:
            fn = getattr(importlib.import_module(name), WARM_HOOK, None)
            if callable(fn):
                fn()
        except Exception:  # noqa: BLE001 - warming is best effort; the task that needs it raises for real
            pass
    time.sleep(max(0.0, end - time.monotonic()))
    return os.getpid()
