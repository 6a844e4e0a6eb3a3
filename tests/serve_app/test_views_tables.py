"""The view's tables and charts as specs (no browser): named columns, short figures, every
task in the cost table, a distinct colour per run, steps, a panel per pool; and two pages run
through Streamlit's script runner: Metrics without Prometheus, Admin naming its secret's source."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serve_app.charts import PALETTE, cost_chart, latency_cdf_chart, run_colours, step_chart, utilisation_long
from serve_app.dashboard_tables import (cost_by_pool_policy, cost_window, fetch_all, node_view, number,
                                        packing_view, styled, summary_view)
from tests.conftest import REPO_ROOT

DASHBOARD = str(REPO_ROOT / "serve_app" / "dashboard.py")


def test_numbers_are_short_and_missing_ones_a_dash() -> None:
    assert [number(x) for x in (260.0, 1234.6, 0.0123456, 35.7712, np.nan, None, True, "x")] == \
        ["260", "1,235", "0.01235", "35.77", "–", "–", "yes", "x"]
    html = styled(pd.DataFrame({"policy": ["fgd"], "p99 (ms)": [44135.2]})).to_html()
    assert "44,135" in html and "<th" in html


def test_summary_and_packing_columns_are_all_named() -> None:
    one = pd.DataFrame({"result set": ["a", "a"], "policy": ["fgd", "random"], "p99 ms": [1.0, 2.0],
                        "cost per task $": [0.1, 0.2]})
    assert list(summary_view(one).columns) == ["policy", "p99 (ms)", "cost per task ($)"]
    two = one.assign(**{"result set": ["a", "b"]})
    assert list(summary_view(two).columns)[0] == "result set"
    packing = pd.read_csv(pd.io.common.StringIO("policy,42,43,median,published,diff,seconds\n"
                                                "fgd,4.6,4.9,4.7,4.77,-0.04,2.5\n"), index_col=0)
    view = packing_view(packing)
    assert list(view.columns) == ["policy", "seed 42", "seed 43", "median %", "published %",
                                  "median - published", "seconds per replay"]


def test_node_view_keeps_what_fits_and_shortens_maps() -> None:
    node = {"name": "gpu-mig-1", "tier": "gpu", "pool": "gpu-mig", "node_class": "gpu-mig", "alive": True,
            "usable": True, "node_id": "ab" * 28, "problem": "", "load": 0.25, "running": 1, "queued": 0,
            "cpu_free_milli": 4000, "gpu_free_milli": 0, "mig_free": {"1g.10gb": 2, "3g.40gb": 1},
            "labels": {"tier": "gpu"}, "ray_total": {"CPU": 4.0}, "ray_available": {"CPU": 4.0},
            "network_ms": [300.0, 600.0]}
    view = node_view([node])
    assert "labels" not in view and "node_id" not in view and "ray_total" not in view
    row = view.iloc[0]
    assert row["node"] == "gpu-mig-1" and row["MIG free"] == "1g.10gb ×2, 3g.40gb ×1"
    assert row["network (ms)"] == "300–600"


def test_fetch_all_pages_through_the_history_and_names_its_window() -> None:
    rows = [{"task_id": f"t{i}", "accepted_at": 1_800_000_000 - i, "pool": ["edge", None][i % 2],
             "policy": "fgd", "cost": 0.5 if i % 2 == 0 else None} for i in range(2500)]
    calls: list[tuple[int, int]] = []

    def page(offset: int, limit: int) -> dict:
        calls.append((offset, limit))
        nxt = offset + limit
        return {"items": rows[offset:nxt], "total": len(rows), "next_offset": nxt if nxt < len(rows) else None}

    got, total = fetch_all(page)
    assert (len(got), total) == (2500, 2500) and calls == [(0, 1000), (1000, 1000), (2000, 1000)]
    assert cost_window(got, total).startswith("Covers all 2,500 tasks in the router's history, accepted ")
    part, total = fetch_all(page, cap=1500)
    assert len(part) == 1500 and "the newest 1,500 of 2,500 tasks" in cost_window(part, total)
    assert cost_window([], 0) == "No tasks in the router's history yet."
    cost = cost_by_pool_policy(pd.DataFrame(got))
    assert list(cost.columns) == ["pool", "policy", "tasks", "cost total ($)", "cost per task ($)"]
    edge = cost[cost["pool"] == "edge"].iloc[0]
    assert edge["tasks"] == 1250 and edge["cost total ($)"] == pytest.approx(625.0)
    assert cost[cost["pool"] == "(none)"].iloc[0]["tasks"] == 1250  # never placed: no pool, no cost


def test_fetch_all_counts_a_row_once_when_new_tasks_shift_the_pages() -> None:
    rows = [{"task_id": f"t{i}"} for i in range(2000)]

    def page(offset: int, limit: int) -> dict:
        if offset:  # a task accepted after the first page: every older row moves one place down
            rows.insert(0, {"task_id": f"new{offset}"})
        nxt = offset + limit
        return {"items": rows[offset:nxt], "total": len(rows), "next_offset": nxt if nxt < len(rows) else None}

    got, _ = fetch_all(page)
    assert len({r["task_id"] for r in got}) == len(got)


def test_a_colour_per_run_the_same_in_every_chart() -> None:
    runs = [f"policy-{i}" for i in range(30)]
    scale = run_colours(runs)
    assert scale.domain == runs and len(set(scale.range)) == 30 and len(set(PALETTE)) == len(PALETTE)
    assert run_colours(runs[:13]).range == scale.range[:13]  # deterministic: by position
    assert run_colours(runs + ["again"]).range[30] == PALETTE[0]  # cycles past the palette
    cdf = pd.DataFrame({"latency_ms": [1.0, 2.0], "fraction": [0.5, 1.0], "run": runs[:2]})
    cost = pd.DataFrame({"run": runs[:2], "cost per task $": [0.1, 0.2]})
    for chart in (latency_cdf_chart(cdf, scale), cost_chart(cost, scale)):
        spec = chart.to_dict()
        colour = spec["encoding"]["color"]["scale"]
        assert colour["domain"] == runs and colour["range"] == scale.range
        assert spec["usermeta"]["embedOptions"]["renderer"] == "svg"


def test_time_series_are_steps_with_a_panel_per_pool() -> None:
    tl = pd.DataFrame({"time": [0.0, 1.0, 0.0, 1.0], "run": ["a", "a", "b", "b"], "util_edge": [0.1, 0.2, 0.3, 0.4],
                       "util_gpu-mig": [0.5, 0.6, 0.7, 0.8], "gpu_alloc_ratio": [0.1, 0.2, 0.3, 0.4]})
    long = utilisation_long(tl)
    assert set(long["pool"]) == {"edge", "gpu-mig"} and len(long) == 8
    scale = run_colours(["a", "b"])
    spec = step_chart(long, "utilisation", "utilisation", scale, by_pool=True).to_dict()
    assert [p["title"]["text"] for p in spec["vconcat"]] == ["edge", "gpu-mig"]
    for p in spec["vconcat"]:
        assert p["mark"]["interpolate"] == "step-after" and p["width"] == "container"
    assert len(spec["params"]) == 1 and spec["params"][0]["bind"] == "legend"
    one = step_chart(tl, "gpu_alloc_ratio", "GPU allocated", scale).to_dict()
    assert one["mark"]["interpolate"] == "step-after" and one["height"] >= 19 * 2


# ---------------------------------------------------------------- pages through Streamlit's script runner


def _app(monkeypatch, tmp_path: Path, **env: str):
    from streamlit.testing.v1 import AppTest

    for k in ("ORCH_ADMIN_TOKEN", "ORCH_ADMIN_TOKEN_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ORCH_RESULTS", str(tmp_path / "no-results"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.run()
    return at


def _texts(at) -> str:
    parts = [e.value for kind in ("info", "warning", "caption", "markdown", "success", "error")
             for e in getattr(at, kind)]
    return json.dumps(parts)


def test_metrics_without_prometheus_is_one_line(monkeypatch, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    at = _app(monkeypatch, tmp_path, ORCH_PROMETHEUS_URL=url)
    at.radio[0].set_value("Metrics").run()
    assert not at.exception
    assert [i.value for i in at.info] == [f"No Prometheus answers at {url} (set `ORCH_PROMETHEUS_URL`), "
                                          "so there are no router series to show."]
    assert not at.get("vega_lite_chart") and not at.selectbox and not at.subheader


def test_admin_names_the_secrets_source_never_the_secret(monkeypatch, tmp_path: Path) -> None:
    secret = "s3cret-from-a-file-91c2"
    path = tmp_path / "admin_token"
    path.write_text(secret + "\n")
    at = _app(monkeypatch, tmp_path, ORCH_ADMIN_TOKEN_FILE=str(path))
    at.radio[0].set_value("Admin").run()
    text = _texts(at)
    assert f"the file `{path}` (named by `ORCH_ADMIN_TOKEN_FILE`)" in text and secret not in text
    missing = tmp_path / "missing"
    at = _app(monkeypatch, tmp_path, ORCH_ADMIN_TOKEN_FILE=str(missing))
    at.radio[0].set_value("Admin").run()
    assert f"`ORCH_ADMIN_TOKEN_FILE` names `{missing}`, which this view cannot read" in _texts(at)
