"""The range of candidate rows a node-level ``rl`` network was trained on, kept so serving stays inside it
(forests keep theirs too, from the rows they were fit on: :func:`columns_range`, for their explanation).

Why: a network extrapolates linearly past the inputs it saw, where a forest holds its edge
value. On the 1,213-node Alibaba cluster a month-long task's ``cost_rel`` reaches 300,000 (at
most 4.7 in training), and ``rl:9`` was 20-21% behind ``fastest-feasible`` there; served with each
column clipped to its training range (and the ``mixed`` prefilter) it was 0.4-0.5% behind
(docs/evaluation.md). The range is read from the warm start's first round (the env's own
episodes, played by the teacher, with the run's seed: the rows the clone first learned from) and
a round the trained network drives itself (the states DAgger's later rounds and PPO met).

``python -m rl_env.feature_range --policy rl:9 --prefilter mixed`` saves an existing artifact
again, as a new version, with its range (same weights; its meta says which version it derives from).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from scheduler.candidates import PREFILTERS
from scheduler.features import CANDIDATE_FEATURE_NAMES, RANGE_KEY


def columns_range(X: np.ndarray) -> dict[str, Any]:
    """Per-column min and max of candidate rows ``(rows, F)``, as an artifact's meta keeps them."""
    if not len(X):
        raise ValueError("no candidate rows to take a range from")
    return {"lo": X.min(0).astype(float).tolist(), "hi": X.max(0).astype(float).tolist(),
            "rows": int(len(X)), "names": list(CANDIDATE_FEATURE_NAMES)}


def rows_range(obs: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """:func:`columns_range` of the real rows of ``(N, K, F)`` observations (``mask`` ``(N, K)``)."""
    return columns_range(obs[mask > 0])


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {**a, "lo": np.minimum(a["lo"], b["lo"]).tolist(), "hi": np.maximum(a["hi"], b["hi"]).tolist(),
            "rows": a["rows"] + b["rows"]}


def training_range(env: Mapping[str, Any], teacher: str | None, steps: int, seed: int, driver=None,
                   horizon: int | None = None) -> dict[str, Any]:
    """The range of the rows of the warm start's first round (``env``: the artifact's ``meta["env"]``;
    none without a ``teacher``) and, with a ``driver`` network, of a round it drives itself, as DAgger's
    later rounds did (round 1's seed)."""
    from rl_env.config import EnvConfig
    from rl_env.imitation import DAGGER_SEED_STEP, demonstrations
    from scheduler.policies.rollout import HORIZON_TASKS

    if teacher is None and driver is None:
        raise ValueError("a range needs the teacher's rows, the network's, or both")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    cfg = EnvConfig.from_mapping(dict(env))
    found, parts = [], []
    if teacher is not None:
        obs, mask, *_ = demonstrations(cfg, teacher, steps, seed, horizon=horizon or HORIZON_TASKS)
        found.append(rows_range(obs, mask))
        parts.append(f"{steps} decisions of {teacher} (the warm start's round 0, seed {seed})")
    if driver is not None:  # its own choices are played; the labels are unused, so the cheapest teacher gives them
        obs, mask, *_ = demonstrations(cfg, "fastest-feasible", steps, seed + DAGGER_SEED_STEP, driver=driver)
        found.append(rows_range(obs, mask))
        parts.append(f"{steps} of the network itself (round 1's seed)")
    out = found[0] if len(found) == 1 else _merge(*found)
    return {**out, "source": " and ".join(parts)}


def derive(ref: str, root: str | Path | None = None, steps: int | None = None,
           prefilter: str | None = None) -> Path:
    """Save ``ref`` (``rl`` or ``rl:N``) again as a new ``rl`` version of ``root``, its meta with its training
    range (and, given one, the prefilter it is served with where a cluster offers more candidates than it
    scores). ``ValueError`` (or the registry's errors) when ``ref`` has no rows to take a range from."""
    from rl_env.imitation import Imitation
    from scheduler import model_registry
    from scheduler.policies.rl import POLICY_FILE
    from scheduler.policy_net import NetSpec, load_policy

    kind, _, version = ref.partition(":")
    if kind != "rl":
        raise ValueError(f"{ref!r} is not an rl artifact (rl or rl:N)")
    art = model_registry.load("rl", version or "latest", root)
    meta = dict(art.meta)
    if (meta.get("architecture") or {}).get("level") != "node" or not isinstance(meta.get("env"), dict):
        raise ValueError(f"{art.ref} is not a node-level network with its env: it reads no candidate rows")
    init = meta.get("init") or {}
    teacher = init.get("teacher_ref") or init.get("teacher")
    if not teacher:
        raise ValueError(f"{art.ref} was not warm-started: no teacher to replay its first round with")
    steps = int(steps or init.get("steps") or Imitation.steps)
    net = load_policy(NetSpec.from_dict(meta["architecture"]), str(art.file(POLICY_FILE)))
    meta[RANGE_KEY] = training_range(meta["env"], teacher, steps, int(meta.get("seed") or 0), driver=net,
                                    horizon=init.get("horizon"))
    command = ["python -m rl_env.feature_range", "--policy", ref, "--steps", str(steps)]
    command += ["--registry", str(root)] if root is not None else []
    command += ["--prefilter", prefilter] if prefilter is not None else []
    measured = "validation and the source's evaluation tables were measured without the range"
    if prefilter is not None:
        measured += f" and with the {meta['env'].get('prefilter', 'spread')} prefilter"
        meta["env"] = {**meta["env"], "prefilter": prefilter}
    # the weights' training command stays in "command"; how this version came about goes here
    meta["derived_from"] = {"policy": art.ref, "command": " ".join(command), "note": measured}
    for k in ("version", "created", "files", "evaluation", "registry_note"):  # the source's own
        meta.pop(k, None)
    files = {name: art.file(name).read_bytes() for name in (POLICY_FILE, "curves.csv") if (art.path / name).is_file()}
    return model_registry.save("rl", files, meta, root)


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rl_env.feature_range", description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", required=True, help="the rl artifact to derive from (rl:9)")
    p.add_argument("--registry", help="registry folder (default: the repository's, or $ORCH_REGISTRY)")
    p.add_argument("--steps", type=_positive,
                   help="decisions per round to take the range over (default: the warm start's)")
    p.add_argument("--prefilter", choices=PREFILTERS,
                   help="serve it with this cut of the candidates on big clusters (default: the artifact's own)")
    args = p.parse_args(argv)
    from scheduler.model_registry import RegistryError

    try:  # derive checks the artifact (kind, presence, level, warm start) before it makes any rows
        path = derive(args.policy, args.registry, args.steps, args.prefilter)
    except (ValueError, RegistryError) as e:
        p.error(f"--policy: {e}")
    print(f"saved {path} ({args.policy} with the range of its training rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
