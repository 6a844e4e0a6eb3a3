"""Which policy the router uses, switchable at run time without dropping requests.

A switch builds the new policy completely (a learned model is loaded and its
feature schema checked) before one reference swap; a request that already holds
the old policy finishes with it, and tasks in flight keep it for re-placement.
Learned policies are pinned to a concrete registry version ("rf:latest" becomes
"rf:4"), so the history says exactly which model decided.

A request naming a pool gets the active policy wrapped in
:class:`scheduler.policies.pool.PoolPolicy`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from scheduler import model_registry
from scheduler.policy import Policy, available_policies, make_policy

#: policy kinds that load a trained model from the registry
LEARNED = tuple(model_registry.TRAIN_COMMANDS)


class PolicyChoiceError(ValueError):
    """A policy/version that cannot be used; ``field`` is ``policy`` or ``version``."""

    def __init__(self, field_name: str, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(f"{field_name}: {reason}")


@dataclass(frozen=True)
class ActivePolicy:
    policy: Policy
    name: str  # as reported: "fastest-feasible", "rf:4"
    version: int | None
    since: float


def build_policy(ref: str, version: str | int | None = None, *, seed: int = 0,
                 registry: str | None = None) -> ActivePolicy:
    """Build ``ref`` (``name`` or ``name:version``; ``version`` overrides the suffix)."""
    base, _, suffix = ref.strip().partition(":")
    known = available_policies()
    if base not in known:
        raise PolicyChoiceError("policy", f"unknown policy {base!r} (known: {', '.join(known)})")
    ver = version if version is not None else (suffix or None)
    if base not in LEARNED:
        if ver is not None:
            raise PolicyChoiceError("version", f"{base} is a built-in heuristic and has no versions")
        # auto loads its learned members (rf) from the registry, and chooses off the lock every request decides under
        params = {**({"root": registry} if registry else {}), "background": True} if base == "auto" else {}
        try:
            pol = make_policy(base, seed=seed, **params)
        except model_registry.RegistryError as exc:
            raise PolicyChoiceError("policy", str(exc)) from None
        return ActivePolicy(pol, base, None, time.time())
    try:
        v = int(model_registry.resolve(base, "latest" if ver is None else ver, registry).name)
        kwargs = {"root": registry} if registry else {}
        pol = make_policy(f"{base}:{v}", **kwargs)
    except model_registry.RegistryError as exc:
        field_name = "version" if ver is not None and not isinstance(exc, model_registry.SchemaMismatchError) \
            else "policy"
        raise PolicyChoiceError(field_name, str(exc)) from None
    return ActivePolicy(pol, f"{base}:{v}", v, time.time())


def learned_versions(registry: str | None = None) -> dict[str, list[int]]:
    out = {}
    for kind in LEARNED:
        try:
            out[kind] = model_registry.versions(kind, registry)
        except model_registry.RegistryError:
            out[kind] = []
    return out


class PolicyHolder:
    """The active policy; :meth:`swap` replaces it atomically."""

    def __init__(self, active: ActivePolicy) -> None:
        self._active = active
        self._lock = threading.Lock()

    @property
    def active(self) -> ActivePolicy:
        return self._active

    def swap(self, new: ActivePolicy) -> ActivePolicy:
        with self._lock:
            old, self._active = self._active, new
        return old
