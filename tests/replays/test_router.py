"""``python -m replays.live --router URL`` against a small fake router (no Ray, about a second).

The fake speaks the router's HTTP API as far as the replay uses it (``/healthz``,
``/v1/policy``, ``POST /v1/tasks``, ``GET /v1/tasks`` paged, ``GET /v1/tasks/{id}``,
``/v1/cluster``) and ends each task at once with a fixed measured latency. The real
router is covered by ``test_demo.py``.
"""
from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from scheduler.record import RECORD_COLUMNS
from replays.live import load_tasks, main
from tests.conftest import CONFIGS

WORKLOAD = CONFIGS / "workloads" / "mixed.yaml"
KEY = "ork_replay-test-key"


class FakeRouter(BaseHTTPRequestHandler):
    tasks: dict[str, dict] = {}
    bodies: dict[str, dict] = {}  # what each POST /v1/tasks sent
    refuse: set[str] = set()  # kinds answered 409

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        u = urllib.parse.urlparse(self.path)
        if u.path == "/healthz":
            return self._send(200, {"status": "ok"})
        if u.path == "/v1/policy":
            return self._send(200, {"policy": "fastest-feasible", "version": None})
        if u.path == "/v1/cluster":
            return self._send(200, {"nodes": [{"name": "edge-1", "pool": "edge", "load": 0.5, "queued": 0,
                                               "running": 1}]})
        if u.path == "/v1/tasks":
            q = urllib.parse.parse_qs(u.query)
            limit, offset = int(q["limit"][0]), int(q.get("offset", ["0"])[0])
            items = list(self.tasks.values())[offset:offset + limit]
            nxt = offset + limit if offset + limit < len(self.tasks) else None
            return self._send(200, {"items": items, "total": len(self.tasks), "limit": limit, "offset": offset,
                                    "next_offset": nxt})
        tid = urllib.parse.unquote(u.path.rsplit("/", 1)[-1])
        return self._send(200, self.tasks[tid]) if tid in self.tasks else self._send(404, {"detail": "no task"})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.headers.get("authorization") != f"Bearer {KEY}":
            return self._send(401, {"detail": "POST /v1/tasks needs an API key"})
        if body["kind"] in self.refuse:
            return self._send(409, {"detail": "no node can ever host it"})
        self.bodies[body["id"]] = body
        gpu = body["gpu_milli"] or body["gpu_count"] or body.get("mig_profile")
        self.tasks[body["id"]] = {
            "task_id": body["id"], "status": "succeeded", "node": "gpu-ts-1" if gpu else "edge-1",
            "pool": "gpu-ts" if gpu else "edge", "tier": "gpu" if gpu else "edge",
            "share": "slice:250" if gpu else "cpu", "queue_ms": 5.0, "network_ms": 100.0, "exec_ms": 20.0,
            "latency_ms": 125.0, "cost": 0.01, "decision": {"queued": False}}
        self._send(202, {"task_id": body["id"], "status": "running"})


@pytest.fixture
def fake_router():
    FakeRouter.tasks = {}
    FakeRouter.bodies = {}
    FakeRouter.refuse = set()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeRouter)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _args(url: str, out: Path, *extra: str) -> list[str]:
    key = out.with_name(out.name + "-api_key")  # beside the output folder, which must stay empty on errors
    key.write_text(KEY + "\n")
    return ["--workload", str(WORKLOAD), "--router", url, "--duration", "4", "--time-compression", "50",
            "--cluster", str(CONFIGS / "cluster" / "local.yaml"), "--out", str(out), "--api-key-file", str(key),
            *extra]


def test_router_mode_needs_an_api_key(fake_router, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("ORCH_API_KEY", raising=False)
    monkeypatch.delenv("ORCH_API_KEY_FILE", raising=False)
    args = _args(fake_router, tmp_path)
    assert main(args[:args.index("--api-key-file")]) == 2
    assert "--api-key-file" in capsys.readouterr().err and not FakeRouter.tasks
    monkeypatch.setenv("ORCH_API_KEY_FILE", str(tmp_path / "missing"))
    assert main(args[:args.index("--api-key-file")]) == 2
    assert "ORCH_API_KEY_FILE" in capsys.readouterr().err


def test_router_mode_writes_a_record_per_task_in_the_simulators_schema(fake_router, tmp_path: Path) -> None:
    FakeRouter.refuse = {"fraud_scoring"}
    assert main(_args(fake_router, tmp_path)) == 0
    tasks = load_tasks(WORKLOAD, seed=None, duration_s=4, load_factor=None)
    recs = pd.read_csv(tmp_path / "records_fastest-feasible.csv")
    assert tuple(recs.columns) == RECORD_COLUMNS
    assert list(recs["task_id"]) == [t.id for t in tasks]  # the workload's ids, as the simulator's
    refused = recs["kind"] == "fraud_scoring"
    assert refused.any()
    assert (recs.loc[refused, "status"] == "rejected").all()
    assert recs.loc[refused, "reason"].str.contains("409").all()
    done = recs[~refused]
    assert (done["status"] == "succeeded").all() and (done["latency_ms"] == 125.0).all()
    assert (done["finish"] - done["arrival"]).round(6).eq(0.125).all()  # workload time
    # each task reached the router once, under the run's id prefix, after the warm-up's (not recorded)
    meta = json.loads((tmp_path / "summary_fastest-feasible.json").read_text())["meta"]
    run = sorted(k for k in FakeRouter.tasks if "-warmup-" not in k)
    assert run == sorted(f"{meta['run_tag']}-{t.id}" for t in tasks if t.kind != "fraud_scoring")
    warm = sorted(k for k in FakeRouter.tasks if "-warmup-" in k)
    assert warm == sorted(f"{meta['run_tag']}-warmup-{t.id}" for t in tasks[:24] if t.kind != "fraud_scoring")
    index = json.loads((tmp_path / "summary.json").read_text())
    assert index["meta"]["kind"] == "replay"
    assert index["policies"]["fastest-feasible"]["tasks"] == len(tasks)


def test_router_down_exits_2_naming_the_flag(tmp_path: Path, capsys) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(_args(f"http://127.0.0.1:{port}", tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"--router http://127.0.0.1:{port}" in err and "not answering" in err
    assert not any(tmp_path.iterdir())


def test_a_policy_other_than_the_routers_is_refused(fake_router, tmp_path: Path, capsys) -> None:
    assert main(_args(fake_router, tmp_path, "--policy", "rf:latest")) == 2
    assert "runs 'fastest-feasible'" in capsys.readouterr().err
    assert not FakeRouter.tasks


def test_real_work_kinds_are_sent_with_their_entry_point(fake_router, tmp_path: Path, capsys) -> None:
    args = _args(fake_router, tmp_path)
    args[args.index("--workload") + 1] = str(CONFIGS / "workloads" / "real_mix.yaml")
    assert main(args) == 0
    assert "real work (the router must list these in its entry_points)" in capsys.readouterr().out
    by_kind: dict[str, set] = {}
    for body in FakeRouter.bodies.values():
        by_kind.setdefault(body["kind"], set()).add((body.get("entry_point"), str(body.get("args"))))
    assert by_kind["sales_etl"] == {("orchestrator.examples.real_work:aggregate_etl", "{'rows': 500000, 'days': 7}")}
    assert by_kind["iot_alerts"] == {(None, "None")}  # emulated kinds carry no entry point
