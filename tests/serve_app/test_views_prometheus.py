"""The view's Prometheus reader: the exact queries, the parsing, the failures as sentences
(against a stand-in of the HTTP API), and the PromQL against the real binary scraping the
router's series names."""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serve_app.prom_queries import PromClient, PromError, router_panels, step_and_window
from tests.browser.fake_prometheus import FakePrometheus

PANELS = {p.title: p for p in router_panels()}


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_steps_and_windows_cover_the_scrapes() -> None:
    assert step_and_window(900) == (8, 20)  # 120 points; a window of four 5 s scrapes at least
    assert step_and_window(86_400) == (720, 1440)  # never a window shorter than two steps
    assert step_and_window(10) == (1, 20)


def test_queries_sent_and_answers_parsed() -> None:
    now = 1_800_000_000.0
    with FakePrometheus() as prom:
        cl = PromClient(prom.url)
        assert cl.probe()
        lat = cl.panel(PANELS["Decision latency"], 900, now=now)
        q = prom.queries[-2:]
        assert [x["query"] for x in q] == [
            "histogram_quantile(0.5, sum by (le) (rate(ray_orch_decision_latency_seconds_bucket[20s])))",
            "histogram_quantile(0.99, sum by (le) (rate(ray_orch_decision_latency_seconds_bucket[20s])))"]
        assert q[0]["start"] == f"{now - 900:.3f}" and q[0]["end"] == f"{now:.3f}" and q[0]["step"] == "8"
        assert list(lat.columns) == ["time", "value", "series"]
        assert set(lat["series"]) == {"p50", "p99"}
        points = int(900 // 8) + 1
        assert len(lat) == 2 * (points - 2)  # the NaN (no observations) and +Inf points are dropped
        assert lat["value"].min() == pytest.approx(0.2) and lat["value"].max() == pytest.approx(1.0)  # ms
        assert str(lat["time"].dt.tz) == "UTC"
        dec = cl.panel(PANELS["Decisions per second"], 300, now=now)
        assert prom.queries[-1]["query"] == "sum by (policy) (rate(ray_orch_decisions_total[20s]))"
        assert set(dec["series"]) == {"fgd", "least-loaded"}
        pools = cl.panel(PANELS["Placements per pool"], 300, now=now)
        assert prom.queries[-1]["query"] == 'sum by (pool) (rate(ray_orch_decisions_total{pool!="none"}[20s]))'
        assert set(pools["series"]) == {"edge", "cloud", "gpu-mig"}
        slo = cl.panel(PANELS["SLO misses"], 300, now=now)
        assert prom.queries[-1]["query"] == "sum by (priority) (rate(ray_orch_slo_misses_total[20s]))"
        assert slo.loc[slo["series"] == "5", "value"].iloc[0] == pytest.approx(0.5 * 60)  # per minute
        with pytest.raises(PromError, match="refused the query .*parse error"):
            cl.query_range("bad(", now - 60, now, 1)


def test_a_series_with_no_samples_is_an_empty_panel_not_an_error() -> None:
    with FakePrometheus(empty=("slo_misses",)) as prom:
        slo = PromClient(prom.url).panel(PANELS["SLO misses"], 300, now=1_800_000_000.0)
    assert slo.empty and list(slo.columns) == ["time", "value", "series"]


def test_nothing_listening_is_a_sentence() -> None:
    cl = PromClient(_closed_port_url())
    assert cl.probe() is False
    with pytest.raises(PromError, match="is not answering"):
        cl.panel(PANELS["Decisions per second"], 300)


# ---------------------------------------------------------------- the real Prometheus


class _Exporter:
    """The router's series as Ray exports them, growing by a fixed amount at every scrape."""

    BUCKETS = ("0.0001", "0.001", "0.01", "+Inf")

    def __init__(self) -> None:
        self.scrapes = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                owner.scrapes += 1
                body = owner.text(owner.scrapes).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.target = f"127.0.0.1:{self.server.server_address[1]}"

    @classmethod
    def text(cls, n: int) -> str:
        """Per scrape: 10 decisions on edge and 2 not placed, 12 latencies (6 under 0.1 ms, all
        under 1 ms), one SLO miss at priority 8."""
        cum = {"0.0001": 6 * n, "0.001": 12 * n, "0.01": 12 * n, "+Inf": 12 * n}
        lines = ["# TYPE ray_orch_decisions_total counter",
                 f'ray_orch_decisions_total{{policy="fgd",pool="edge",endpoint="route"}} {10 * n}',
                 f'ray_orch_decisions_total{{policy="fgd",pool="none",endpoint="route"}} {2 * n}',
                 "# TYPE ray_orch_decision_latency_seconds histogram",
                 *[f'ray_orch_decision_latency_seconds_bucket{{policy="fgd",le="{le}"}} {cum[le]}'
                   for le in cls.BUCKETS],
                 f'ray_orch_decision_latency_seconds_sum{{policy="fgd"}} {0.0003 * 12 * n}',
                 f'ray_orch_decision_latency_seconds_count{{policy="fgd"}} {12 * n}',
                 "# TYPE ray_orch_slo_misses_total counter",
                 f'ray_orch_slo_misses_total{{priority="8"}} {n}']
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_panels_against_a_real_prometheus(tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install prometheus; .ci/run does)")
    exporter = _Exporter()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ray\n    static_configs:\n"
                   f"      - targets: ['{exporter.target}']\n")
    url = _closed_port_url()
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address={url.removeprefix('http://')}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        cl = PromClient(url, timeout=10)
        got: dict[str, object] = {}
        deadline = time.monotonic() + 90  # a loaded 2-core box starts it slowly
        while time.monotonic() < deadline:
            if cl.probe(timeout=1) and exporter.scrapes >= 4:
                now = time.time()  # one instant for every panel: their ratios are then exact
                got = {t: cl.panel(p, 120, now=now) for t, p in PANELS.items()}
                if all(not df.empty for df in got.values()):
                    break
            time.sleep(1)
        assert got and all(not df.empty for df in got.values()), {t: len(df) for t, df in got.items()}
        last = {t: df.groupby("series")["value"].last() for t, df in got.items()}
        # per scrape: 12 decisions, 10 of them placed on edge, one SLO miss (the rates' size depends on
        # how much of the window the young series covers; their ratios do not)
        dec = last["Decisions per second"]
        assert set(dec.index) == {"fgd"} and dec["fgd"] > 0
        assert set(last["Placements per pool"].index) == {"edge"}  # "none" is not a pool
        assert last["Placements per pool"]["edge"] == pytest.approx(dec["fgd"] * 10 / 12, rel=0.05)
        assert set(last["SLO misses"].index) == {"8"}
        assert last["SLO misses"]["8"] == pytest.approx(dec["fgd"] / 12 * 60, rel=0.05)  # per minute
        assert last["Decision latency"]["p50"] <= 0.1 < last["Decision latency"]["p99"] <= 1.0  # ms
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        exporter.close()
