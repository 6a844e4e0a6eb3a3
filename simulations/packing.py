"""Packing replay of the Alibaba GPU-sharing trace: the FGD paper's main experiment.

Reproduces Weng et al., "Beware of Fragmentation" (USENIX ATC 2023), Fig. 7/9:
pods arrive one after another and never leave; the figure of merit is the share
of GPU capacity left unallocated when the GPU demand that has arrived equals
100% of the cluster's GPU capacity. Procedure (that of the paper's simulator,
hkust-adsl/kubernetes-scheduler-simulator):

1. Cluster: the 1,213 GPU nodes of ``openb_node_list_gpu_node.csv`` (6,212 GPUs),
   milli-shared. Pods: all 8,152 of the pod list (CPU-only and Pending included);
   a multi-GPU pod asks for 1000 milli on each of its GPUs.
2. Target workload of FGD: the typical shapes of the original pods (95% coverage).
3. Per seed: shuffle the pods, then append clones drawn uniformly (with
   replacement) from the original pods until the next clone's per-GPU milli would
   push total demand past 1.3 x capacity (the simulator's own quirk: it compares
   ``total + r``, not ``total + k r``). A per-seed node permutation breaks ties
   among top-scoring nodes (the simulator prefixes node names with a random number
   and takes the smallest name).
4. Each pod goes through ``policy.select`` once; a pod that fits nowhere is dropped
   but its demand still counts as arrived.
5. Metric: ``arrived %`` rounded to an integer; the mean allocated % over the pods
   at exactly 100% arrived; unallocated = 100 - that. The paper reports the
   median over seeds 42..51.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from cluster.alibaba import load_alibaba_nodes
from cluster.state import ClusterState, allocate, check_invariants
from cluster.topology import ClusterSpec
from scheduler.policies.fgd import FragmentationIndex, TargetWorkload, typical_shapes
from scheduler.policy import make_policy
from scheduler.task import Task
from simulations.pod_list import read_pod_list
from simulations.published import published_for

#: Unallocated GPU % at 100% arrived demand, Weng et al. ATC'23, on the default trace only
#: (other traces: :func:`simulations.published.published_for`).
PUBLISHED = published_for("openb_pod_list_default.csv")
PAPER_POLICIES = tuple(PUBLISHED)


@lru_cache(maxsize=4)
def load_packing_cluster(nodes_csv: str) -> ClusterSpec:
    """The node list as a :class:`ClusterSpec` with milli-shared GPUs (cached per path)."""
    return load_alibaba_nodes(nodes_csv)


@lru_cache(maxsize=4)
def load_packing_pods(pods_csv: str) -> tuple[Task, ...]:
    """Every pod of a pod list as a :class:`Task` (no filtering, file order; cached per path).

    Any upstream layout works (:mod:`simulations.pod_list`): packing needs no times,
    and a pod without ``gpu_spec`` may use any GPU model.
    """
    tasks = []
    for pod in read_pod_list(pods_csv).pods:
        gpu_milli, gpu_count = pod.gpu_share
        tasks.append(Task(id=pod.name, cpu_milli=pod.cpu_milli, mem_mib=pod.memory_mib, gpu_milli=gpu_milli,
                          gpu_count=gpu_count, gpu_models=pod.gpu_models, kind="alibaba"))
    return tuple(tasks)


def gpu_demand(task: Task) -> tuple[int, int]:
    """``(milli per GPU r, GPUs k)`` of a trace task."""
    if task.gpu_count:
        return 1000, task.gpu_count
    if task.gpu_milli:
        return task.gpu_milli, 1
    return 0, 0


def pod_sequence(n_pods: int, demands: np.ndarray, per_gpu: np.ndarray, capacity_milli: int,
                 rng: np.random.Generator, inflate: float = 1.3) -> np.ndarray:
    """Indices of the replayed pods: the originals shuffled, then clones up to ``inflate`` x capacity."""
    order = rng.permutation(n_pods)
    total = int(demands.sum())
    limit = inflate * capacity_milli
    clones = []
    draws = rng.integers(0, n_pods, size=4 * n_pods + 16)
    pos = 0
    while True:
        if pos == len(draws):
            draws, pos = rng.integers(0, n_pods, size=len(draws)), 0
        idx = int(draws[pos])
        pos += 1
        if total + per_gpu[idx] > limit:  # the reference's quirk: adds r, not k * r
            break
        clones.append(idx)
        total += int(demands[idx])
        if per_gpu[idx] == 0 and len(clones) > 100 * n_pods:  # only CPU pods: never ends
            break
    return np.concatenate([order, np.asarray(clones, dtype=np.int64)])


@dataclass
class PackingResult:
    """One replay: one row per pod in replay order."""

    policy: str
    seed: int
    capacity_milli: int
    arrived: np.ndarray  # cumulative arrived GPU milli after each pod
    allocated: np.ndarray  # cumulative allocated GPU milli after each pod
    fragmentation: np.ndarray  # cluster fragmentation (milli) after each pod
    placed: np.ndarray  # bool
    node: np.ndarray  # chosen node, -1 when failed
    pod: np.ndarray  # index into the original pod list
    seconds: float = 0.0
    final_state: ClusterState | None = field(default=None, repr=False)

    @property
    def n_failed(self) -> int:
        return int((~self.placed).sum())

    def frame(self) -> pd.DataFrame:
        """Per-pod log with arrived / allocated GPU % of capacity."""
        gpus = self.capacity_milli / 1000
        return pd.DataFrame({
            "pod": self.pod, "node": self.node, "placed": self.placed,
            "arrived_milli": self.arrived, "allocated_milli": self.allocated,
            "fragmentation_milli": self.fragmentation,
            "arrived_pct": self.arrived / gpus / 10, "allocated_pct": self.allocated / gpus / 10,
        })

    def allocated_at(self, arrived_pct: int = 100) -> float:
        """Mean allocated GPU % over the pods where the rounded arrived % equals ``arrived_pct``.

        Falls back to the rows within +-1 point when no row rounds to it exactly.
        """
        gpus = self.capacity_milli / 1000
        arr = np.array([round(x) for x in (self.arrived / gpus / 10)])
        alloc = self.allocated / gpus / 10
        rows = arr == arrived_pct
        if not rows.any():
            rows = (arr >= arrived_pct - 1) & (arr <= arrived_pct + 1)
        if not rows.any():
            return float("nan")
        return float(alloc[rows].mean())

    def unallocated_at(self, arrived_pct: int = 100) -> float:
        """The paper's figure: 100 - :meth:`allocated_at` (GPU % of capacity left unallocated)."""
        return 100.0 - self.allocated_at(arrived_pct)


def run_packing(pods_csv: str | Path, nodes_csv: str | Path, policy_name: str, seed: int, *,
                max_pods: int | None = None, inflate: float = 1.3, policy=None,
                target_workload: Sequence | None = None, track_fragmentation: bool = True,
                check_every: int = 0, progress: bool = False) -> PackingResult:
    """Replay the pod list against the node list with one policy and seed.

    Args:
        pods_csv: ``openb_pod_list_*.csv``.
        nodes_csv: ``openb_node_list_gpu_node.csv`` (every node must have GPUs for the paper's setup).
        policy_name: a registered policy (``random``, ``best-fit``, ``fgd``, ...).
        seed: drives the shuffle, the clones, the node tie-break order and the policy's randomness.
        max_pods: stop after this many replayed pods (short tests).
        inflate: demand target of the clones, as a multiple of GPU capacity.
        policy: a ready policy object to reuse (its caches survive across seeds);
            ``reset(seed)`` is called on it.
        target_workload: FGD's typical shapes; default those of the pod list (95% coverage).
        track_fragmentation: log cluster fragmentation after each pod.
        check_every: run :func:`cluster.state.check_invariants` every this many pods (0: never).
        progress: show a tqdm bar over pods.
    """
    t0 = time.perf_counter()
    spec = load_packing_cluster(str(nodes_csv))
    pods = load_packing_pods(str(pods_csv))
    typical = list(target_workload) if target_workload is not None else typical_shapes(pods)
    if policy is None:
        policy = make_policy(policy_name, target_workload=typical) if policy_name == "fgd" \
            else make_policy(policy_name)
    policy.reset(seed)
    state = ClusterState.from_spec(spec)
    capacity = int(state.gpu_total.sum())

    rng = np.random.default_rng([seed, 0x5EED])  # a stream apart from the policy's own (seeded with seed)
    rk = np.array([gpu_demand(t) for t in pods], dtype=np.int64).reshape(-1, 2)
    demands = rk[:, 0] * rk[:, 1]
    seq = pod_sequence(len(pods), demands, rk[:, 0], capacity, rng, inflate)
    if max_pods is not None:
        seq = seq[:max_pods]
    if hasattr(policy, "node_rank"):
        policy.node_rank = rng.permutation(state.n_nodes)

    frag_index = FragmentationIndex(TargetWorkload(typical)) if track_fragmentation else None
    if frag_index is not None:
        frag_index.rebuild(state)
        frag_total = frag_index.total
    n = len(seq)
    arrived = np.empty(n, dtype=np.int64)
    allocated = np.empty(n, dtype=np.int64)
    frag = np.full(n, np.nan)
    placed = np.zeros(n, dtype=bool)
    node = np.full(n, -1, dtype=np.int64)
    arr_total = used_total = 0
    it: Iterable = enumerate(seq)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=n, desc=f"{policy_name} seed {seed}", unit="pod", leave=False)
    for j, p in it:
        task = pods[p]
        arr_total += int(demands[p])
        d = policy.select(task, state)
        if d.node >= 0 and not d.queued:
            allocate(state, d.node, task, d.share, device=d.device)
            used_total += int(demands[p])
            placed[j] = True
            node[j] = d.node
            if frag_index is not None:
                old = frag_index.F[d.node]
                frag_index.update([d.node])
                frag_total += frag_index.F[d.node] - old
        if check_every and (j + 1) % check_every == 0:
            check_invariants(state)
        arrived[j] = arr_total
        allocated[j] = used_total
        if frag_index is not None:
            frag[j] = frag_total
    if check_every:
        check_invariants(state)
    return PackingResult(policy_name, seed, capacity, arrived, allocated, frag, placed, node,
                         np.asarray(seq), time.perf_counter() - t0, state)


def parse_seeds(text: str | Iterable[int]) -> list[int]:
    """``"42-51"`` or ``"1,2,5-7"`` (or an iterable of ints) to a list of seeds."""
    if not isinstance(text, str):
        return [int(s) for s in text]
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1) if not part.startswith("-") else part[1:].split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


_WORKER_POLICIES: dict[str, object] = {}


def _replay_one(args: tuple) -> tuple[str, int, float, float]:
    """One (policy, seed) replay; policy objects are reused within a process (their caches)."""
    pods_csv, nodes_csv, name, seed, typical, arrived_pct = args
    pol = _WORKER_POLICIES.get(name)
    if pol is None:
        pol = make_policy(name, target_workload=typical) if name == "fgd" else make_policy(name)
        _WORKER_POLICIES[name] = pol
    res = run_packing(pods_csv, nodes_csv, name, seed, policy=pol, target_workload=typical,
                      track_fragmentation=False)
    return name, seed, res.unallocated_at(arrived_pct), res.seconds


def reproduce(pods_csv: str | Path, nodes_csv: str | Path, policies: Sequence[str] = PAPER_POLICIES,
              seeds: Sequence[int] | str = range(42, 52), progress: bool = True,
              arrived_pct: int = 100, jobs: int = 1) -> pd.DataFrame:
    """Unallocated GPU % at ``arrived_pct``% arrived demand, per policy (rows) and seed (columns).

    Extra columns: ``median`` over the seeds (the paper's figure), ``published``
    (the paper's value for this pod list and policy, NaN when it published none:
    :func:`simulations.published.published_note` says which), ``diff`` (median - published) and
    ``seconds`` (mean wall time of one replay). Rows keep the order of ``policies``.
    ``jobs > 1`` runs the replays in that many processes.
    """
    seeds = parse_seeds(seeds)
    policies = list(policies)
    typical = typical_shapes(load_packing_pods(str(pods_csv)))
    work = [(str(pods_csv), str(nodes_csv), name, seed, typical, arrived_pct)
            for name in policies for seed in seeds]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(work), desc="packing replay", unit="run")
    got: dict[tuple[str, int], tuple[float, float]] = {}

    def record(out: tuple[str, int, float, float]) -> None:
        name, seed, value, secs = out
        got[(name, seed)] = (value, secs)
        if bar is not None:
            bar.set_postfix_str(f"{name} seed {seed}: {value:.2f}%")
            bar.update(1)

    try:
        if jobs > 1:
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=jobs) as ex:
                for fut in as_completed([ex.submit(_replay_one, w) for w in work]):
                    record(fut.result())
        else:
            for w in work:
                record(_replay_one(w))
    finally:
        if bar is not None:
            bar.close()
    published = published_for(pods_csv)
    rows = {}
    for name in policies:
        vals = {seed: got[(name, seed)][0] for seed in seeds}
        med = float(np.median(list(vals.values())))
        pub = published.get(name, float("nan"))
        rows[name] = {**vals, "median": med, "published": pub, "diff": med - pub,
                      "seconds": float(np.mean([got[(name, s)][1] for s in seeds]))}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "policy"
    return df
