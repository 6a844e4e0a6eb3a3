"""Which workload seeds the learned artifacts already saw, so evaluation can stay on others.

A learned policy's ``meta.json`` records the seeds it trained on and the seeds its
checkpoint (or model) was chosen or validated on. ``orchestrator evaluate`` prints
them beside its own seeds and refuses evaluation seeds that any of them used: a
policy scored on seeds it was trained or selected on is graded on its homework.
The check ignores which workload a seed drew (seed 201 of ``mixed`` is not seed 201
of ``high_load``); refusing any shared number is stricter and simpler to trust.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

#: registered learned policy -> its model-registry kind
LEARNED_KINDS = {"rl": "rl", "rl-sample": "rl", "rf": "rf"}
#: per kind: (meta field path, role) of the seed lists it records; a ``[low, high)`` pair is a range
SEED_FIELDS = {
    "rl": (("env.seeds", "training"), ("env.seed_range", "training"),
           ("validation.seeds", "checkpoint selection")),
    "rf": (("config.seeds", "training"), ("config.holdout_seeds", "validation")),
}
#: per kind: the meta fields listing the cluster variants it trained or was chosen on (``rand:N`` among them)
VARIANT_FIELDS = {"rl": ("env.cluster_variants", "validation.clusters"), "rf": ("config.variants",)}
#: per kind: the meta field naming the cluster file its variants were drawn from
CLUSTER_FIELDS = {"rl": "env.cluster", "rf": "config.cluster"}


@dataclass(frozen=True)
class SeedUse:
    """Seeds one artifact used in one role, read from one meta field."""

    artifact: str  # e.g. "rl:1"
    role: str  # "training" | "checkpoint selection" | "validation"
    field: str  # dotted path in meta.json, e.g. "env.seed_range"
    seeds: tuple[int, ...] = ()
    range: tuple[int, int] | None = None  # [low, high), for seed ranges

    def overlap(self, seeds: Iterable[int]) -> list[int]:
        """The given seeds this use already took."""
        if self.range is not None:
            lo, hi = self.range
            return [s for s in seeds if lo <= s < hi]
        mine = set(self.seeds)
        return [s for s in seeds if s in mine]

    def describe(self) -> str:
        what = (f"[{self.range[0]}, {self.range[1]})" if self.range is not None
                else format_seeds(self.seeds))
        return f"{self.artifact} {self.role} seeds ({self.field}): {what}"


def format_seeds(seeds: Sequence[int]) -> str:
    """``101-105`` for a run of consecutive seeds, else ``1,4,9``."""
    s = sorted(set(int(x) for x in seeds))
    if len(s) > 2 and s == list(range(s[0], s[-1] + 1)):
        return f"{s[0]}-{s[-1]}"
    return ",".join(map(str, s))


def _get(meta: dict, path: str):
    node = meta
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def seed_uses_of(artifact: str, kind: str, meta: dict) -> tuple[list[SeedUse], list[str]]:
    """The seed uses recorded in one artifact's meta, and a note per role it does not record."""
    uses: list[SeedUse] = []
    recorded: set[str] = set()
    for path, role in SEED_FIELDS.get(kind, ()):
        v = _get(meta, path)
        if not v:
            continue
        if path.endswith("seed_range"):
            if "env.seeds" in {u.field for u in uses}:
                continue  # explicit seeds replace the range (rl_env.config.EnvConfig)
            uses.append(SeedUse(artifact, role, path, range=(int(v[0]), int(v[1]))))
        else:
            uses.append(SeedUse(artifact, role, path, seeds=tuple(int(s) for s in v)))
        recorded.add(role)
    roles = dict.fromkeys(role for _, role in SEED_FIELDS.get(kind, ()))
    notes = [f"{artifact} records no {role} seeds: disjointness from them is unverified"
             for role in roles if role not in recorded]
    return uses, notes


def learned_artifacts(policies: Sequence[str], root=None) -> dict[str, tuple[str, dict]]:
    """Each learned policy's artifact among ``policies`` (and ``auto``'s learned members), once:
    ``{"rf:5": (kind, meta)}``."""
    from scheduler import model_registry
    from scheduler.policies.auto import learned_members

    out: dict[str, tuple[str, dict]] = {}
    # auto may place as its learned members: their seeds and clusters count as its own
    for p in [m for p in policies for m in (learned_members(root=root) if p == "auto" else [p])]:
        base, _, version = p.partition(":")
        kind = LEARNED_KINDS.get(base)
        if kind is None:
            continue
        path = model_registry.resolve(kind, version or "latest", root)
        ref = f"{kind}:{path.name}"
        if ref not in out:
            out[ref] = (kind, model_registry.load_meta(kind, path.name, root))
    return out


def learned_seed_uses(policies: Sequence[str], root=None) -> tuple[list[SeedUse], list[str]]:
    """Seed uses of every learned policy's artifact among ``policies`` (each artifact once)."""
    uses: list[SeedUse] = []
    notes: list[str] = []
    for ref, (kind, meta) in learned_artifacts(policies, root).items():
        u, n = seed_uses_of(ref, kind, meta)
        uses += u
        notes += n
    return uses, notes


def random_clusters_used(policies: Sequence[str], cluster: str, root=None) -> dict[str, set[int]]:
    """Per learned artifact among ``policies`` that trained on the cluster file ``cluster``, the random
    clusters of it (``rand:N``, :mod:`cluster.variants`) its meta says it trained or was chosen on:
    evaluation on one of them is refused like a seed (``rand:N`` of another file is another cluster).
    Raises ``ValueError`` naming the artifact when its meta lists a variant that is not one."""
    from cluster.package_data import data_path
    from cluster.variants import RANDOM_PREFIX, expand_variants

    here = data_path(cluster).resolve()
    out: dict[str, set[int]] = {}
    for ref, (kind, meta) in learned_artifacts(policies, root).items():
        own = _get(meta, CLUSTER_FIELDS[kind])  # not recorded: counted as this cluster (refusing errs safe)
        if own is not None and data_path(str(own)).resolve() != here:
            continue
        names: list[str] = []
        for field in VARIANT_FIELDS[kind]:
            v = _get(meta, field)
            names += [str(x) for x in v] if isinstance(v, (list, tuple)) else []
        try:
            names = expand_variants(names)
        except ValueError as e:
            raise ValueError(f"{ref}: its meta lists a cluster variant that is not one: {e}") from None
        out[ref] = {int(n[len(RANDOM_PREFIX):]) for n in names if n.startswith(RANDOM_PREFIX)}
    return out
