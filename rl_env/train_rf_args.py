"""The settings of ``orchestrator train rf``, written once.

:class:`TrainArgs` follows CleanRL's ``Args``: each field holds its default and a
one-line docstring. The command-line parser is built from the fields (flag, help,
default), and :meth:`TrainArgs.argv` writes every field back as flags, so the
command saved with a model reruns it exactly. Light on purpose: the parser imports
it without loading the simulator.
"""
from __future__ import annotations

import argparse
import ast
import inspect
import textwrap
from dataclasses import MISSING, Field, dataclass, field, fields
from functools import cache
from typing import Any, get_type_hints

from cluster.variants import expand_variants, parse_variant
from scheduler.policies.rollout import HORIZON_S, HORIZON_TASKS

DEFAULT_WORKLOADS = ("configs/workloads/mixed.yaml", "configs/workloads/high_load.yaml",
                     "configs/workloads/gpu_heavy.yaml", "configs/workloads/gpu_heavy_high.yaml")
#: the heuristics ``train rf`` simulates next to the new forest
BASELINES = ("fastest-feasible", "least-loaded", "cheapest-feasible", "best-fit", "gpu-packing",
             "gpu-clustering", "k8s-default", "ray-default", "oracle")
#: policies that cannot be a rollout base: lookahead or learned ones would roll rolls (or a model) per step
NOT_BASES = frozenset({"rollout", "auto", "oracle", "rf", "rl", "rl-sample"})
#: how an optional setting's absence is written on the command line
NONE = "none"
#: settings that saved rows fix (``--rows``): the runs that labelled them chose these
FROM_ROWS = ("seeds", "variants", "rounds")


@dataclass
class TrainArgs:
    """One ``orchestrator train rf`` run; saved as the model's ``config``.

    Budget: the rollout teacher rolls each candidate over 120 sampled arrivals (its horizon) with two
    bases (fastest-feasible, and best-fit, which keeps the MIG slices free for MIG-only work under
    GPU-heavy load) over three futures, several tenths of a second a decision on this 2-core machine
    (more on the doubled cluster at twice the load: more candidates, longer queues to play out), so
    the episodes are 30 s windows, each after a minute of the workload that fills the cluster, of
    the four workloads, two seeds, on three clusters (local, every node doubled at twice the load,
    the MIG pool removed), one DAgger round: 34 minutes for rf:5 on a machine shared with other
    training (rf:2, one base, four futures, windows from an empty cluster: 41; rf:1, 40 arrivals
    ahead: 18), most of it on the doubled cluster. The forest is small (30 trees of depth <= 8): a
    decision's cost grows with depth (about 3 microseconds a level for all of its candidates and
    trees at once), far less with the number of trees.
    """

    cluster: str = "configs/cluster/local.yaml"
    """cluster topology YAML (or Alibaba trace folder) the episodes run on"""
    workloads: list[str] = field(default_factory=lambda: list(DEFAULT_WORKLOADS),
                                 metadata={"flag": "--workload", "repeat": True})
    """workload YAML whose windows are the training episodes (repeatable)"""
    variants: list[str] = field(default_factory=lambda: ["x1", "x2", "no:gpu-mig"])
    """clusters trained on: xK (every node K times, workloads at K times their load), no:POOL (a pool removed), rand:N or rand:A-B (clusters drawn from the pools, cluster.variants.random_cluster)"""
    seeds: list[int] = field(default_factory=lambda: [1, 2])
    """training seeds, e.g. 1-4 or 1,2,5"""
    holdout_seeds: list[int] = field(default_factory=lambda: [901, 902])
    """seeds of the held-out regret, agreement and simulation, on the cluster itself (not orchestrator evaluate's)"""
    rounds: int = 1
    """DAgger rounds after the first (0: plain imitation of the teacher)"""
    trees: int = 30
    """trees in the forest"""
    max_depth: int | None = 8
    """deepest level of a tree (0 or none: unbounded)"""
    min_samples_leaf: int = 5
    """fewest training candidates in a leaf"""
    max_features: float = 0.5
    """share of the features each split considers"""
    random_state: int = 0
    """seed of the forest and of the teacher"""
    load_factor: float | None = None
    """multiplies each workload's arrival rate (none: the workload's own load factor)"""
    duration_s: float | None = 30.0
    """seconds of each labelled workload window (none: the workload's own duration)"""
    warmup_s: list[float] = field(default_factory=lambda: [60.0])
    """seconds of the workload placed before each window, unlabelled (by the driver, or fastest-feasible in the teacher's round), so long jobs and queues are already there as in a run's later minutes; several, comma-separated, are cycled over the seeds (0: an empty cluster)"""
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    """policies simulated next to the trained forest, comma-separated"""
    teacher: str = "rollout"
    """registered policy whose per-node scores label the candidates (regret: best score minus the candidate's)"""
    teacher_base: str = "fastest-feasible,best-fit"
    """heuristics the rollout teacher places the sampled future tasks with, comma-separated (each candidate valued by the best of their rolls; each one more costs a labelling pass)"""
    teacher_samples: int = 3
    """futures the rollout teacher averages per decision"""
    teacher_horizon: int = HORIZON_TASKS
    """sampled arrivals per future the rollout teacher rolls forward (its horizon)"""
    teacher_horizon_s: float = HORIZON_S
    """seconds the rollout teacher's sampled arrivals may span at most"""
    future_streams: int = 4
    """workload streams the rollout teacher samples futures from (seeds of their own, simulations.workloads.future_streams)"""
    rows: list[str] = field(default_factory=list, metadata={"flag": "--rows", "repeat": True})
    """rows written by --save-rows (repeatable, pooled): the forest is fit on them and nothing is labelled; their own seeds, clusters and rounds are recorded (--seeds, --variants, --rounds are refused), the cluster and teacher settings must be theirs, and the workload and held-out settings shape the held-out runs"""
    variant_weights: list[str] = field(default_factory=list, metadata={"omit_default": True})
    """VARIANT=W, comma-separated: each training row of that cluster variant weighs W in the fit, others 1 (e.g. x1=3 favours the cluster itself)"""
    save_rows: str | None = field(default=None, metadata={"omit_default": True})
    """write the pooled training rows, each decision tagged with its episode and round, to this .npz (for --rows)"""
    jobs: int = field(default=1, metadata={"omit_default": True})
    """episodes labelled at once, each in a process of its own, and threads fitting the forest (the forest is the same for any number)"""

    def __post_init__(self) -> None:
        if self.max_depth == 0:
            self.max_depth = None

    def argv(self) -> list[str]:
        """Every field as ``train rf`` flags: parsing them gives back an equal :class:`TrainArgs` (with ``rows``,
        equal once :func:`rl_env.train_rf.train` has filled in the rows' own seeds, variants and rounds; a field
        that is new or changes only the speed or an output, ``omit_default``, is left out at its default, so
        older saved commands still match; with ``rows``, the fields they fix, :data:`FROM_ROWS`, are too)."""
        out: list[str] = []
        for f in fields(self):
            value, flag = getattr(self, f.name), _flag(f)
            if self.rows and f.name in FROM_ROWS:
                continue
            if f.metadata.get("omit_default") and value == (
                    f.default_factory() if f.default is MISSING else f.default):  # type: ignore[misc]
                continue
            if f.metadata.get("repeat"):
                for v in value:
                    out += [flag, str(v)]
            else:
                out += [flag, _text(value)]
        return out

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> "TrainArgs":
        """The parsed flags (those not given keep their defaults), checked; raises ``UsageError``."""
        from cluster.config import UsageError

        given: dict[str, Any] = {}
        for f in fields(cls):
            if not hasattr(ns, f.name):
                continue
            value = getattr(ns, f.name)
            if _hint(f) == list[int]:
                value = _seeds(value, _flag(f))
            elif _hint(f) == list[float]:
                value = _seconds(value, _flag(f))
            elif _hint(f) == list[str] and not f.metadata.get("repeat"):
                value = [v.strip() for v in value.split(",") if v.strip()]
            given[f.name] = value
        args = cls(**given)
        if args.rows and set(given) & set(FROM_ROWS):
            raise UsageError(f"--rows: the rows' own {', '.join(FROM_ROWS)} are used; leave out "
                             + ", ".join(_flag(f) for f in fields(cls) if f.name in set(given) & set(FROM_ROWS)))
        if args.save_rows is not None and not args.save_rows.strip():
            raise UsageError("--save-rows: name a file")
        if set(args.seeds) & set(args.holdout_seeds) and not args.rows:  # the rows' seeds are checked when read
            raise UsageError(f"held-out seeds {args.holdout_seeds} overlap the training seeds {args.seeds}")
        if args.rounds < 0 or args.trees < 1 or args.min_samples_leaf < 1 or (
                args.max_depth is not None and args.max_depth < 1):
            raise UsageError("--rounds must be >= 0, --trees, --max-depth and --min-samples-leaf >= 1")
        if not 0.0 < args.max_features <= 1.0 or args.teacher_samples < 1 or args.future_streams < 1 \
                or args.teacher_horizon < 1 or not args.teacher_horizon_s > 0:
            raise UsageError("--max-features must be in (0, 1], --teacher-samples, --teacher-horizon and "
                             "--future-streams >= 1, --teacher-horizon-s > 0")
        if args.jobs < 1:
            raise UsageError("--jobs must be >= 1")
        from rl_env.rf_rows import parse_weights

        parse_weights(args.variant_weights)
        if not args.variants:
            raise UsageError("--variants: at least one cluster (x1 is the cluster itself)")
        try:
            for v in expand_variants(args.variants):
                parse_variant(v)
        except ValueError as e:
            raise UsageError(f"--variants: {e}") from None
        if not args.workloads:
            raise UsageError("--workload: at least one workload")
        from scheduler.policy import available_policies

        known = set(available_policies())
        if args.teacher.partition(":")[0] not in known:
            raise UsageError(f"--teacher: unknown policy {args.teacher!r}")
        if args.teacher.partition(":")[0] == "auto":
            raise UsageError("--teacher: auto delegates to a forest among others; name the teacher itself")
        bases = [b.strip() for b in args.teacher_base.split(",") if b.strip()]
        bad = [b for b in bases if b not in known or b in NOT_BASES]
        if not bases or bad:
            raise UsageError(f"--teacher-base: heuristics, comma-separated (not {', '.join(sorted(NOT_BASES))}); "
                             f"unknown or not a heuristic: {', '.join(bad) or '(none given)'}")
        unknown = [b for b in args.baselines if b.partition(":")[0] not in known]
        if unknown:
            raise UsageError(f"--baselines: unknown policies {unknown}")
        for flag, v in (("--duration-s", args.duration_s), ("--load-factor", args.load_factor)):
            if v is not None and not v > 0:
                raise UsageError(f"{flag} must be > 0, got {v}")
        return args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainArgs` field, its docstring as help. A flag not given leaves no
    attribute (:meth:`TrainArgs.from_namespace` then keeps the field's default)."""
    docs = field_docs()
    defaults = TrainArgs()
    for f in fields(TrainArgs):
        hint, default = _hint(f), getattr(defaults, f.name)
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              "metavar": _flag(f)[2:].upper().replace("-", "_")}
        if f.metadata.get("repeat"):
            kw["action"] = "append"
            shown = " ".join(default)
        else:
            kw["type"] = _PARSE.get(hint, str)
            shown = _text(default)
        parser.add_argument(_flag(f), help=f"{docs[f.name]} (default: {shown})", **kw)


@cache
def field_docs() -> dict[str, str]:
    """Each :class:`TrainArgs` field's docstring (the string literal under it); every field has one."""
    body = ast.parse(textwrap.dedent(inspect.getsource(TrainArgs))).body[0].body
    docs = {a.target.id: b.value.value for a, b in zip(body, body[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)
            and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)}
    missing = [f.name for f in fields(TrainArgs) if f.name not in docs]
    if missing:
        raise TypeError(f"TrainArgs fields without a docstring: {', '.join(missing)}")
    return docs


def _optional(parse):
    def parse_optional(text: str):
        return None if text.strip().lower() == NONE else parse(text)

    parse_optional.__name__ = parse.__name__  # argparse names the type in its error message
    return parse_optional


_PARSE = {int: int, float: float, int | None: _optional(int), float | None: _optional(float),
          str | None: _optional(str)}


def _hint(f: Field) -> Any:
    return _hints()[f.name]


@cache
def _hints() -> dict[str, Any]:
    return get_type_hints(TrainArgs)


def _flag(f: Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _text(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)  # a float's str is its shortest exact form


def _seeds(text: str, flag: str) -> list[int]:
    from cluster.config import UsageError
    from simulations.packing import parse_seeds

    try:
        seeds = parse_seeds(text)
    except ValueError:
        seeds = []
    if not seeds:
        raise UsageError(f"{flag}: expected e.g. 1-4 or 1,2,5, got {text!r}")
    return seeds


def _seconds(text: str, flag: str) -> list[float]:
    """``0,60``: one or more durations in seconds, each >= 0."""
    from cluster.config import UsageError

    try:
        out = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or not all(v >= 0 and v < float("inf") for v in out):
        raise UsageError(f"{flag}: expected seconds >= 0, comma-separated (e.g. 0,60), got {text!r}")
    return out
