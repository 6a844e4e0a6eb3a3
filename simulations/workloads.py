"""Synthetic workloads: a YAML scenario mix turned into a Poisson stream of tasks.

A workload file (``configs/workloads/*.yaml``) names an arrival window
(``duration_s``), a base Poisson rate (``rate_per_s``) scaled by ``load_factor``,
a default ``seed`` and a list of weighted scenarios (fraud scoring, LLM
inference, ...). Each scenario is validated once through
:func:`scheduler.task.make_task`, so a bad scenario fails at load time with the
file and field named; generation then only copies validated fields, which keeps
100k tasks well under a second.

Schema of one scenario::

    - kind: llm_inference          # scenario label, also the task id prefix
      weight: 12                   # relative share of arrivals (normalised)
      priority: 7                  # 1..10
      slo_ms: 2500                 # end-to-end latency target
      cpus: 4                      # cores (default 1)
      memory_gb: 16                # default 1
      gpu: {fraction: 0.5}         # none | {fraction: f} | {count: n} | {mig: 1g.10gb}
      gpu_models: [A100, V100]     # optional type constraint
      work_s: {dist: lognormal, mean: 1.0, sigma: 0.4}
      cost_sensitivity: 5          # 1..10 (default 5)
      description: "chat completion for the support bot"
      entry_point: pkg.mod:fn      # optional real work: through the router its node runs fn(**args)
      args: {batch: 32}            # (an entry point of the router's allow-list); work_s stays its plan

``work_s`` distributions: ``lognormal`` (``mean`` is the arithmetic mean in
seconds, ``sigma`` the log-space spread), ``uniform`` (``low``..``high``) and
``constant`` (``mean``). Instead of ``scenarios`` a file may give
``scenarios_from: other.yaml`` (relative to itself) to reuse another mix at a
different rate, so that "the same mix at 2.5x" cannot drift from the original.

An optional ``rate_profile:`` section makes the rate vary over time (daily and weekly
seasonality, trend, bursts, noise; :mod:`simulations.rate_profile`): arrivals are then a
non-homogeneous Poisson process drawn by thinning. Without it a file generates exactly
as before. :func:`draw` gives the stream as arrays (no task objects), for multi-day
workloads of millions of arrivals.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cluster.config import Collector, ConfigError, Fields, load_yaml
from cluster.package_data import DATA_ROOT, data_path
from cluster.topology import MIG_PROFILES, load_gpu_models
from cluster.vocabulary import ENTRY_POINT, args_problem
from scheduler.task import MAX_WORK_S, Task, TaskError, make_task
from simulations.rate_profile import RateProfile, parse_rate_profile

WORKLOADS_DIR = DATA_ROOT / "configs" / "workloads"
DISTRIBUTIONS = ("lognormal", "uniform", "constant")

# Task field -> the scenario field that sets it (for error messages).
_YAML_NAME = {"cpu_milli": "cpus", "mem_mib": "memory_gb", "gpu_milli": "gpu", "gpu_count": "gpu",
              "mig_profile": "gpu", "work": "work_s", "id": "kind"}


@dataclass(frozen=True)
class WorkDist:
    """Distribution of a scenario's work (seconds on the reference device)."""

    dist: str
    mean: float = 0.0
    sigma: float = 0.0
    low: float = 0.0
    high: float = 0.0

    @property
    def expected(self) -> float:
        """Mean work in seconds (for load estimates)."""
        return (self.low + self.high) / 2 if self.dist == "uniform" else self.mean

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` work values, clipped to what a task accepts."""
        if self.dist == "lognormal":
            mu = math.log(self.mean) - self.sigma ** 2 / 2  # so that E[work] == mean
            out = rng.lognormal(mu, self.sigma, n)
        elif self.dist == "uniform":
            out = rng.uniform(self.low, self.high, n)
        else:
            out = np.full(n, self.mean)
        return np.clip(out, 0.0, MAX_WORK_S)


@dataclass(frozen=True)
class Scenario:
    """One kind of task in a mix: validated task fields plus weight and work law."""

    kind: str
    weight: float
    priority: int
    slo_ms: float
    cpu_milli: int
    mem_mib: int
    gpu_milli: int
    gpu_count: int
    mig_profile: str | None
    gpu_models: tuple[str, ...]
    work: WorkDist
    cost_sensitivity: int
    description: str | None
    #: real work (a router's allow-listed ``package.module:function`` and its keyword arguments): through
    #: the router its node runs that function; the simulator plans and times it by ``work`` as any task
    entry_point: str | None = None
    args: Mapping | None = field(default=None, compare=False)


@dataclass(frozen=True)
class WorkloadSpec:
    """A validated workload file."""

    name: str
    duration_s: float
    rate_per_s: float
    load_factor: float
    seed: int
    scenarios: tuple[Scenario, ...]
    description: str | None = None
    source: str = "<built>"
    rate_profile: RateProfile | None = None

    @property
    def effective_rate(self) -> float:
        """Arrivals per second at this spec's load factor."""
        return self.rate_per_s * self.load_factor

    @property
    def expected_tasks(self) -> float:
        return self.effective_rate * self.duration_s

    def weights(self) -> np.ndarray:
        """Scenario probabilities (weights normalised to sum to 1)."""
        w = np.array([s.weight for s in self.scenarios], dtype=float)
        return w / w.sum()

    def real_work(self) -> dict[str, dict]:
        """Per task kind that runs real code, the ``entry_point`` and ``args`` of its ``POST /v1/tasks``."""
        return {s.kind: {"entry_point": s.entry_point, "args": dict(s.args or {})}
                for s in self.scenarios if s.entry_point}


# ---------------------------------------------------------------- loading


def _parse_gpu(f: Fields) -> dict[str, object]:
    """``gpu:`` -> the task's GPU fields; ``none`` or a one-key mapping."""
    raw = f.raw("gpu", "none")
    if raw is None or raw == "none":
        return {}
    if not isinstance(raw, Mapping):
        raise f.error("gpu", f"must be 'none' or one of {{fraction: f}}, {{count: n}}, {{mig: profile}}, "
                             f"got {raw!r}")
    g = f.section("gpu")
    g.check_keys({"fraction", "count", "mig"})
    if len(g.data) != 1:
        raise f.error("gpu", "give exactly one of fraction, count or mig")
    if g.has("fraction"):
        frac = g.num("fraction", min=0, max=1, strict_min=True)
        milli = int(round(frac * 1000))
        if not 1 <= milli <= 999:
            raise g.error("fraction", f"must be a fraction of one GPU in (0, 1), got {frac} "
                                      "(use count: n for whole GPUs)")
        return {"gpu_milli": milli}
    if g.has("count"):
        return {"gpu_count": g.int("count", min=1, max=64)}
    return {"mig_profile": g.str("mig", choices=set(MIG_PROFILES))}


def _parse_work(f: Fields) -> WorkDist:
    w = f.section("work_s")
    dist = w.str("dist", choices=set(DISTRIBUTIONS))
    if dist == "lognormal":
        w.check_keys({"dist", "mean", "sigma"})
        return WorkDist(dist, mean=w.num("mean", min=0, strict_min=True),
                        sigma=w.num("sigma", min=0, max=3))
    if dist == "uniform":
        w.check_keys({"dist", "low", "high"})
        low, high = w.num("low", min=0), w.num("high", min=0)
        if high < low:
            raise w.error("high", f"must be >= low ({low}), got {high}")
        return WorkDist(dist, low=low, high=high)
    w.check_keys({"dist", "mean"})
    return WorkDist(dist, mean=w.num("mean", min=0))


def _parse_scenario(f: Fields, known_models: set[str]) -> Scenario:
    f.check_keys({"kind", "weight", "priority", "slo_ms", "cpus", "memory_gb", "gpu", "gpu_models",
                  "work_s", "cost_sensitivity", "description", "entry_point", "args"})
    kind = f.str("kind")
    models: list[str] = []
    for _, m, name in f.items("gpu_models", []):
        if not isinstance(m, str) or m not in known_models:
            raise ConfigError(f.file, name, f"unknown GPU model {m!r} (known: {', '.join(sorted(known_models))})")
        models.append(m)
    desc = f.raw("description", None)
    if desc is not None and not isinstance(desc, str):
        raise f.error("description", f"must be a string, got {desc!r}")
    fields = {
        "id": f"{kind}-0", "kind": kind,
        "priority": f.int("priority", min=1, max=10),
        "slo_ms": f.num("slo_ms", min=0, strict_min=True),
        "cpu_milli": int(round(f.num("cpus", 1.0, min=0) * 1000)),
        "mem_mib": int(round(f.num("memory_gb", 1.0, min=0) * 1024)),
        "gpu_models": tuple(models),
        "cost_sensitivity": f.int("cost_sensitivity", 5, min=1, max=10),
        "description": desc,
        **_parse_gpu(f),
    }
    work = _parse_work(f)
    entry_point, args = _parse_real_work(f)
    try:  # cross-field checks and ranges, once per scenario
        t = make_task({**fields, "work": work.expected}, infer=False)
    except TaskError as exc:
        raise f.error(_YAML_NAME.get(exc.field, exc.field), exc.reason) from None
    return Scenario(kind=kind, weight=f.num("weight", min=0, strict_min=True), priority=t.priority,
                    slo_ms=t.slo_ms, cpu_milli=t.cpu_milli, mem_mib=t.mem_mib, gpu_milli=t.gpu_milli,
                    gpu_count=t.gpu_count, mig_profile=t.mig_profile, gpu_models=t.gpu_models,
                    work=work, cost_sensitivity=t.cost_sensitivity, description=t.description,
                    entry_point=entry_point, args=args)


def _parse_real_work(f: Fields) -> tuple[str | None, dict | None]:
    """A scenario's ``entry_point`` (``package.module:function``) and ``args`` (keyword arguments)."""
    name = f.raw("entry_point", None)
    args = f.raw("args", None)
    if name is None:
        if args is not None:
            raise f.error("args", "args without an entry_point: name the function they are for")
        return None, None
    if not isinstance(name, str) or not ENTRY_POINT.fullmatch(name):
        raise f.error("entry_point", f"must be 'package.module:function', got {name!r}")
    problem = None if args is None else args_problem(args)
    if problem:
        raise f.error("args", problem)
    return name, dict(args or {})


def load_workload(path: str | Path, *, _seen: frozenset[Path] = frozenset()) -> WorkloadSpec:
    """Load and validate a workload YAML; raises :class:`ConfigError` naming file and field."""
    p = data_path(path)
    f = load_yaml(p)
    errs = Collector()  # every bad field and scenario is reported at once
    errs(f.check_keys, {"name", "description", "duration_s", "rate_per_s", "load_factor", "seed",
                        "scenarios", "scenarios_from", "rate_profile"})
    scenarios = errs(_load_scenarios, f, p, _seen, default=())
    desc = f.raw("description", None)
    if desc is not None and not isinstance(desc, str):
        errs.errors.append(f.error("description", f"must be a string, got {desc!r}"))
    top = {key: errs(fn) for key, fn in (
        ("name", lambda: f.str("name", p.stem)),
        ("duration_s", lambda: f.num("duration_s", min=0, max=30 * 24 * 3600, strict_min=True)),
        ("rate_per_s", lambda: f.num("rate_per_s", min=0, max=1e5, strict_min=True)),
        ("load_factor", lambda: f.num("load_factor", 1.0, min=0, max=1e3, strict_min=True)),
        ("seed", lambda: f.int("seed", 0, min=0)),
        ("rate_profile", lambda: parse_rate_profile(f.section("rate_profile")) if f.has("rate_profile") else None))}
    errs.check()
    return WorkloadSpec(scenarios=scenarios, description=desc, source=str(p), **top)


def _load_scenarios(f: Fields, p: Path, _seen: frozenset[Path]) -> tuple[Scenario, ...]:
    """The scenarios of a workload file, its own or its ``scenarios_from`` base's; every bad one reported."""
    if f.has("scenarios") == f.has("scenarios_from"):
        raise f.error("scenarios", "give exactly one of scenarios or scenarios_from")
    if f.has("scenarios_from"):
        base = p.parent / f.str("scenarios_from")
        if base.resolve() in _seen | {p.resolve()}:
            raise f.error("scenarios_from", f"circular reference to {base}")
        if not base.is_file():
            raise f.error("scenarios_from", f"no such file {base}")
        scenarios = load_workload(base, _seen=_seen | {p.resolve()}).scenarios
    else:
        models = set(load_gpu_models())
        errs = Collector()
        parsed = [(i, errs(_parse_scenario, s, models)) for i, s in enumerate(f.sections("scenarios"))]
        if not parsed:
            raise f.error("scenarios", "at least one scenario is required")
        seen: set[str] = set()
        for i, s in parsed:
            if s is None:
                continue
            if s.kind in seen:
                errs.errors.append(ConfigError(p, f"scenarios[{i}].kind", f"duplicate kind {s.kind!r}"))
            seen.add(s.kind)
        errs.check()
        scenarios = tuple(s for _, s in parsed)
    return scenarios


# ---------------------------------------------------------------- generation


def poisson_arrivals(rng: np.random.Generator, rate: float, duration: float) -> np.ndarray:
    """Arrival times in [0, duration) with exponential inter-arrival gaps of mean 1/rate."""
    expected = rate * duration
    chunk = int(expected + 6 * math.sqrt(expected) + 16)
    parts, t0 = [], 0.0
    while True:
        t = t0 + np.cumsum(rng.exponential(1.0 / rate, chunk))
        parts.append(t)
        if t[-1] >= duration:
            break
        t0 = float(t[-1])
    times = np.concatenate(parts)
    return times[times < duration]


@dataclass(frozen=True)
class Drawn:
    """A task stream as arrays (arrival order): what :func:`generate` turns into tasks."""

    arrivals: np.ndarray  #: seconds since t = 0
    which: np.ndarray     #: index into ``spec.scenarios``
    work: np.ndarray      #: seconds on the reference device


def draw(spec: WorkloadSpec, seed: int | None = None, load_factor: float | None = None, *,
         duration_s: float | None = None) -> Drawn:
    """The arrays of :func:`generate`'s stream (same arguments, same random draws), without task objects."""
    lf = spec.load_factor if load_factor is None else float(load_factor)
    duration = spec.duration_s if duration_s is None else float(duration_s)
    if not lf > 0 or not duration > 0:
        raise ValueError(f"load_factor and duration_s must be > 0, got {lf}, {duration}")
    rng = np.random.default_rng(spec.seed if seed is None else seed)
    if spec.rate_profile is None:
        arrivals = poisson_arrivals(rng, spec.rate_per_s * lf, duration)
    else:  # thinning: candidates at the rate's bound, each kept with probability m(t) / bound
        real = spec.rate_profile.realise(rng, duration)
        arrivals = spec.rate_profile.thin(rng, real, poisson_arrivals(rng, spec.rate_per_s * lf * real.bound,
                                                                      duration))
    n = len(arrivals)
    which = rng.choice(len(spec.scenarios), size=n, p=spec.weights())
    work = np.empty(n)
    for j, sc in enumerate(spec.scenarios):
        idx = np.flatnonzero(which == j)
        work[idx] = sc.work.sample(rng, len(idx))
    return Drawn(arrivals, which, work)


def generate(spec: WorkloadSpec, seed: int | None = None, load_factor: float | None = None, *,
             duration_s: float | None = None) -> list[Task]:
    """Draw the task stream of ``spec``, sorted by arrival; the same seed gives the same tasks.

    Args:
        spec: the workload.
        seed: RNG seed (``spec.seed`` when None).
        load_factor: replaces ``spec.load_factor`` (rate = rate_per_s * load_factor).
        duration_s: replaces ``spec.duration_s`` (e.g. shorter RL episodes).

    Task ids are ``<kind>-<n>`` with ``n`` the task's position in arrival order.
    """
    d = draw(spec, seed, load_factor, duration_s=duration_s)
    arrivals, which, work = d.arrivals, d.which, d.work
    tasks: list[Task] = []
    for i, (a, j, w) in enumerate(zip(arrivals.tolist(), which.tolist(), work.tolist())):
        s = spec.scenarios[j]  # validated at load time, so construct directly (fast)
        tasks.append(Task(f"{s.kind}-{i}", a, s.priority, s.slo_ms, s.cpu_milli, s.mem_mib,
                          s.gpu_milli, s.gpu_count, s.mig_profile, s.gpu_models, w,
                          s.cost_sensitivity, s.description, s.kind))
    return tasks


def generate_warm(spec: WorkloadSpec, seed: int | None, load_factor: float | None, duration_s: float | None,
                  warmup_s: float) -> tuple[list[Task], float]:
    """:func:`generate` with ``warmup_s`` seconds of the same draw before the ``duration_s`` window
    (None: the workload's own duration), and the arrival time the window starts at: the tasks
    before it only fill the cluster (training episodes that do not always start empty). Without a
    warm-up the draw is :func:`generate`'s and the window starts at ``-inf``."""
    if warmup_s <= 0:
        return generate(spec, seed, load_factor, duration_s=duration_s), -math.inf
    window = spec.duration_s if duration_s is None else duration_s
    tasks = generate(spec, seed, load_factor, duration_s=warmup_s + window)
    return tasks, (tasks[0].arrival if tasks else 0.0) + warmup_s


#: seeds of the streams a lookahead samples its futures from (:func:`future_streams`): far from
#: any evaluation or training seed, so a lookahead never sees the run's actual arrivals
FUTURE_SEED_BASE = 7_000_000_000


def future_streams(spec: WorkloadSpec, n: int = 4, load_factor: float | None = None) -> list[list[Task]]:
    """``n`` task streams of ``spec`` drawn with seeds of their own (:data:`FUTURE_SEED_BASE` + k):
    what the rollout policy may assume arrives next (its :class:`scheduler.policies.rollout.Future`)."""
    return [generate(spec, seed=FUTURE_SEED_BASE + k, load_factor=load_factor) for k in range(n)]
