"""``orchestrator calibrate``: the timing model fitted to a history whose true factors are known.

The history is written through the router's own store (SQLite), with what the model expected
at decision time beside a "measured" outcome drawn from known factors per node class and task
kind, log-normal noise and a few gross outliers (a cold worker, a busy host). Calibration must
find the factors, cut the held-out error, and feed the simulator and the RL env.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from cluster.config import ConfigError
from cluster.performance import exec_seconds
from cluster.state import CPU_SHARE
from cluster.topology import load_cluster
from orchestrator.cli import main
from rl_env.config import EnvConfig
from scheduler.task import make_task
from serve_app.history import open_store
from simulations import calibration as cal
from tests.conftest import CONFIGS

LOCAL = CONFIGS / "cluster" / "local.yaml"
NODE = {"edge-1": 1.6, "cloud-1": 0.8, "cloud-2": 0.8, "gpu-mig-1": 1.25}  # by class: the two cloud nodes alike
KIND = {"fraud_scoring": 2.0, "sales_etl": 0.5, "iot_alerts": 1.0}
TIER = {"edge-1": "edge", "cloud-1": "cloud", "cloud-2": "cloud", "gpu-mig-1": "gpu"}
CLASS = {"edge-1": "edge", "cloud-1": "cloud", "cloud-2": "cloud", "gpu-mig-1": "gpu-mig"}
NET = {"edge": (5.0, 15.0), "cloud": (30.0, 50.0), "gpu": (20.0, 40.0)}


def records(n: int = 400, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    nodes, kinds = list(NODE), list(KIND)
    out = []
    for i in range(n):
        node, kind = nodes[i % len(nodes)], kinds[(i // len(nodes)) % len(kinds)]
        exp_exec = float(rng.uniform(50, 500))
        exp_queue = float(rng.choice([0.0, rng.uniform(0, 200)]))
        noise = math.exp(rng.normal(0, 0.05)) * (6.0 if rng.random() < 0.03 else 1.0)
        lo, hi = NET[TIER[node]]
        out.append({"task_id": f"t{i:04d}", "status": "succeeded", "node": node, "tier": TIER[node], "kind": kind,
                    "accepted_at": 1_000.0 + i,
                    "decision": {"node": node, "node_class": CLASS[node],
                                 "expected": {"queue_ms": exp_queue, "network_ms": 25.0, "exec_ms": exp_exec,
                                              "latency_ms": exp_queue + 25.0 + exp_exec, "cost": 0.0}},
                    "queue_ms": exp_queue * NODE[node], "network_ms": float(rng.uniform(lo, hi)),
                    "exec_ms": exp_exec * NODE[node] * KIND[kind] * noise})
    return out


def write_history(path, rows: list[dict]) -> str:
    url = f"sqlite:///{path}"
    h = open_store(url)
    for r in rows:
        h.accept(r["task_id"], {"id": r["task_id"], "kind": r["kind"]}, accepted_at=r["accepted_at"], kind=r["kind"])
        h.update(r["task_id"], "succeeded", node=r["node"], tier=r["tier"], decision=r["decision"],
                 queue_ms=r["queue_ms"], network_ms=r["network_ms"], exec_ms=r["exec_ms"])
    h.update("t0000", "failed", reason="not a measured outcome")  # skipped, as unfinished ones are
    h.flush()
    h.close()
    return url


def test_the_fit_finds_the_true_factors_despite_outliers() -> None:
    data, skipped = cal.samples(records())
    fit, held = cal.split(data)
    assert (len(fit), len(held), skipped) == (280, 120, 0) and fit[-1].accepted_at < held[0].accepted_at
    profile = cal.fit(fit)
    for n in NODE:
        for k in KIND:
            assert profile.factor(CLASS[n], k) == pytest.approx(NODE[n] * KIND[k], rel=0.05), (n, k)
    assert profile.factor("gpu-shared", "sales_etl") == profile.kind_work["sales_etl"]  # no such task: the kind's
    assert profile.factor("edge", "llm_inference") == 1.0  # an unknown kind: the model as is
    for tier, (lo, hi) in NET.items():
        assert profile.network_ms[tier][0] == pytest.approx(lo + 0.1 * (hi - lo), abs=2.0)
    before, after = cal.errors(held, None), cal.errors(held, profile)
    # the robust fit models the typical task: the 3% outliers (6x) stay in the measured mean only
    assert before["mean_pct"] > 20 and after["mean_pct"] < 8 and after["p95_pct"] < 10
    assert after["median_task_pct"] < 5 < before["median_task_pct"]
    outliers = [s for s in fit if s.exec_ms > 3 * s.expected["exec_ms"] * NODE[s.node] * KIND[s.kind]]
    assert outliers and cal.fit([s for s in fit if s not in outliers]).factor("edge", "fraud_scoring") == \
        pytest.approx(profile.factor("edge", "fraud_scoring"), rel=0.03)  # they barely move the fit
    assert cal.fit(fit) == profile  # deterministic


def test_the_calibrated_cluster_runs_each_kind_as_measured() -> None:
    spec = load_cluster(LOCAL)
    profile = cal.Profile({"cloud": {"sales_etl": 2.0}}, {"sales_etl": 3.0, "iot_alerts": 0.5}, {"edge": (1.0, 2.0)}, {})
    calibrated = cal.apply_cluster(spec, profile)
    etl = make_task({"id": "t", "kind": "sales_etl", "cpu_milli": 1000, "work": 1.0}, infer=False)
    other = make_task({"id": "u", "kind": "fraud_scoring", "cpu_milli": 1000, "work": 1.0}, infer=False)
    names = [n.name for n in spec.nodes]
    cloud, edge = names.index("cloud-1"), names.index("edge-1")
    for i, factor in ((cloud, 2.0), (edge, 3.0)):  # the class's own factor, else the kind's over every class
        assert exec_seconds(calibrated.nodes[i], etl, CPU_SHARE) == pytest.approx(
            factor * exec_seconds(spec.nodes[i], etl, CPU_SHARE))
        assert exec_seconds(calibrated.nodes[i], other, CPU_SHARE) == exec_seconds(spec.nodes[i], other, CPU_SHARE)
    assert calibrated.tiers["edge"].network_ms == (1.0, 2.0) and calibrated.tiers["cloud"] == spec.tiers["cloud"]
    assert not spec.nodes[cloud].work_factors  # the input is unchanged


def test_calibrate_command_end_to_end(tmp_path, capsys) -> None:
    url = write_history(tmp_path / "history.db", records())
    out = tmp_path / "cal"
    assert main(["calibrate", "--history", url, "--cluster", str(LOCAL), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fitted on the 279 oldest succeeded tasks (t0001 .. t0279" in text and "judged on the 120 newest" in text
    profile = cal.load(out / "profile.yaml")
    assert profile.factor("edge", "fraud_scoring") == pytest.approx(3.2, rel=0.05)
    report = (out / "report.md").read_text()
    assert "| held out | before |" in report and "| held out | after |" in report
    # the simulator loads it, online only
    sim = tmp_path / "sim"
    assert main(["simulate", "--workload", str(CONFIGS / "workloads" / "mixed.yaml"), "--policies", "least-loaded",
                 "--calibration", str(out / "profile.yaml"), "--out", str(sim)]) == 0
    assert "local-calibrated" in capsys.readouterr().out
    assert main(["simulate", "--mode", "packing", "--calibration", str(out / "profile.yaml")]) == 2
    assert "--calibration: online mode only" in capsys.readouterr().err


def test_bad_input_exits_2_naming_it(tmp_path, capsys) -> None:
    url = write_history(tmp_path / "history.db", records(12))
    assert main(["calibrate", "--history", url, "--holdout", "1.5"]) == 2
    assert "--holdout" in capsys.readouterr().err
    assert main(["calibrate", "--history", url, "--min-tasks", "50", "--out", str(tmp_path / "o")]) == 2
    assert "calibration needs at least 100" in capsys.readouterr().err
    assert main(["calibrate", "--history", "mysql://x/y"]) == 2
    assert "--history mysql://x/y" in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    other.write_text("format: 1\nnetwork_ms: {no-such-tier: [1, 2]}\n")
    assert main(["simulate", "--calibration", str(other), "--policies", "least-loaded",
                 "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "network_ms" in err and "no-such-tier" in err
    other.write_text("format: 1\nwork: {gpu-huge: {etl: 2}}\n")
    with pytest.raises(ConfigError, match="work.gpu-huge.*unknown node class"):
        cal.load(other)
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: 1\nkind_work: {etl: -2}\n")
    with pytest.raises(ConfigError, match="kind_work.etl"):
        cal.load(bad)


def test_the_rl_env_trains_on_the_calibrated_cluster(tmp_path) -> None:
    path = tmp_path / "profile.yaml"
    cal.save(cal.Profile({"cloud": {"fraud_scoring": 2.0}}, {"fraud_scoring": 3.0}, {}, {}), path)
    cfg = EnvConfig.from_mapping({"calibration": str(path)})
    spec, _, _ = cfg.load()
    i = [n.name for n in spec.nodes].index("cloud-1")
    assert dict(spec.nodes[i].work_factors) == {"fraud_scoring": 2.0}
    assert all(dict(n.work_factors) for c, _ in cfg.clusters() for n in c.nodes)  # every variant's copies too
    assert EnvConfig.from_mapping(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="calibration"):
        EnvConfig.from_mapping({"calibration": str(tmp_path / "missing.yaml")})


def test_estimates_and_features_see_each_kinds_factor() -> None:
    """Two tasks of one shape and different kinds on a calibrated cluster: the batch estimate, the single
    one and the forest's candidate rows (cached per task shape) each see the kind's own factor."""
    from cluster.state import ClusterState
    from scheduler.candidates import candidates
    from scheduler.estimate import expected_lists, expected_many
    from scheduler.features import CANDIDATE_FEATURE_NAMES, candidate_features
    from scheduler.policy import FeasibilityCache

    spec = cal.apply_cluster(load_cluster(LOCAL), cal.Profile({}, {"slow": 4.0}, {}, {}))
    state = ClusterState.from_spec(spec)
    slow, plain = (make_task({"id": k, "kind": k, "cpu_milli": 1000, "work": 1.0}, infer=False) for k in ("slow", "plain"))
    nodes, shares, fits = candidates(FeasibilityCache(), slow, state)
    lat_many, _ = expected_many([slow, plain], state, nodes, shares, fits)
    for row, task in zip(lat_many, (slow, plain)):
        assert row.tolist() == pytest.approx(expected_lists(task, state, nodes, shares, fits)[0])
    col = CANDIDATE_FEATURE_NAMES.index("exec_slo")
    x_slow = candidate_features(slow, state, nodes, shares, fits)[:, col]
    x_plain = candidate_features(plain, state, nodes, shares, fits)[:, col]
    assert x_slow == pytest.approx(x_plain + math.log10(4.0), abs=1e-5)


def test_a_re_placed_task_is_not_a_sample() -> None:
    """Its decision (and the model's expectation) is of its first node, its measured times of the last."""
    rows = records(20)
    rows[3] = {**rows[3], "attempts": 2}
    rows[5] = {**rows[5], "decision": {**rows[5]["decision"], "node": "some-other-node"}}
    data, skipped = cal.samples(rows)
    assert skipped == 2 and [s.task_id for s in data if s.task_id in ("t0003", "t0005", "t0007")] == ["t0007"]
