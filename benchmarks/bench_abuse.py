"""Benchmark: the router under the attacks of issue 17, each beside the same probe unloaded.

On a ``test_small`` cluster with the router deployed (proxy and direct ingress), a
probe measures ``GET /healthz`` (both ports) and a legitimate client's ``POST
/v1/route`` with its own key (direct ingress), 20 requests/s each, first unloaded,
then during each attack:

* **stalled connections** - N connections (1,000, then 10,000) each send a ``POST
  /v1/route``'s headers and a few bytes of its 100-byte body, then stall: first at Serve's
  proxy (``serve_app.guard``: 429 past a client's requests in progress, 408 past the body
  deadline), then at the nginx front (``serve_app.front``: it reads requests whole before
  the router sees them, caps requests per address, closes a stalled one at its timeout).
  Target: ``/healthz`` p99 under 100 ms;
* **planned batches** - anonymous ``plan=true`` batches of 256 distinct tasks (the anonymous
  burst; a larger one is 422), two per second;
* **a flooding key** - one key (quota 50 tasks/s) offers 400 requests/s while the probe
  runs. Target: the flooder gets 429 and the probe's p99 stays within 2x unloaded;
* **unauthenticated work** - 200 ``POST /v1/tasks`` without a key: none may run;
* **a month-long task** - ``work`` of a day on the whole edge node, a short task queued
  behind it, then ``DELETE``: the seconds until the short one has run.

The front's probes (``/healthz`` and the legitimate client's ``/v1/route``) come from
another loopback address than any attacker's, as a client of another host would: the
front counts requests per address, so a client sharing the attacker's address shares its
cap.

``python -m benchmarks abuse`` (``--state-dir DIR`` reuses a running test_small cluster).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster import launcher  # noqa: E402
from cluster.procs import free_fixed_port  # noqa: E402
from serve_app import deploy, front  # noqa: E402
from serve_app.loadgen import LoadResult, open_loop  # noqa: E402

CLUSTER = ROOT / "configs" / "cluster" / "test_small.yaml"
PROBE_RATE = 20.0
TASK = {"description": "real-time fraud detection", "cpu_milli": 100, "mem_mib": 64}
BODY_TIMEOUT_S = 5.0  # the router's default


#: the front's probes: an address no attacker uses (they take 127.0.0.1-127.0.0.101)
PROBE_SOURCE = "127.0.3.1"


#: distinct tasks per planned batch: the most an anonymous caller may send at once (its burst)
PLAN_BATCH = 256


def _plan_batch(i: int) -> dict:
    """Distinct tasks to plan together (the CPU-heavy call of issue 17: 10,000 there, refused here)."""
    return {"plan": True, "tasks": [{"cpu_milli": 100 + (i * PLAN_BATCH + k) % 3000, "mem_mib": 64 + k % 500,
                                     "work": 0.5 + k % 7} for k in range(PLAN_BATCH)]}


def call(url: str, method: str = "GET", body=None, auth: str | None = None) -> tuple[int, dict]:
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {auth}"} if auth else {})}
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def create_key(url: str, token: str, name: str, **quota) -> str:
    status, out = call(f"{url}/v1/keys", "POST", {"name": name, **quota}, token)
    assert status == 201, out
    return out["key"]


def _row(name: str, r: LoadResult) -> dict:
    return {"name": name, "n": r.answered, "p50": r.median_ms, "p99": r.pct(99),
            "codes": dict(sorted(r.statuses.items())), "errors": len(r.errors)}


async def probe(ep: deploy.Endpoint, fr: front.Front, key: str, label: str, seconds: float, rows: list) -> None:
    """The five probes at once for ``seconds``."""
    hz_p, hz_d, route, hz_f, route_f = await asyncio.gather(
        open_loop(f"{ep.url}/healthz", lambda i: None, rate=PROBE_RATE, seconds=seconds, method="GET"),
        open_loop(f"{ep.direct_url}/healthz", lambda i: None, rate=PROBE_RATE, seconds=seconds, method="GET"),
        open_loop(f"{ep.direct_url}/v1/route", lambda i: TASK, rate=PROBE_RATE, seconds=seconds, key=key),
        open_loop(f"{fr.url}/healthz", lambda i: None, rate=PROBE_RATE, seconds=seconds, method="GET",
                  source=PROBE_SOURCE),
        open_loop(f"{fr.url}/v1/route", lambda i: TASK, rate=PROBE_RATE, seconds=seconds, key=key,
                  source=PROBE_SOURCE))
    rows += [_row(f"{label}: GET /healthz via proxy", hz_p), _row(f"{label}: GET /healthz direct", hz_d),
             _row(f"{label}: POST /v1/route, probe key, direct", route),
             _row(f"{label}: GET /healthz via front", hz_f), _row(f"{label}: POST /v1/route, probe key, via front", route_f)]


async def stall(host: str, port: int, n: int, sources: int = 1) -> tuple[list, dict]:
    """``n`` connections that each send a POST's headers and 10 of its 100 body bytes, then stall;
    from ``sources`` loopback addresses (127.0.0.2, .3, ...) in turn, as clients of many hosts would."""
    head = (f"POST /v1/route HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
            "content-length: 100\r\n\r\n").encode() + b'{"cpu_mill'
    conns, failed = [], 0
    for start in range(0, n, 500):
        async def one(k: int):
            src = None if sources == 1 else (f"127.0.{(k % sources) // 250}.{(k % sources) % 250 + 2}", 0)
            r, w = await asyncio.open_connection(host, port, local_addr=src)
            w.write(head)
            await w.drain()
            return r, w
        got = await asyncio.gather(*(one(start + k) for k in range(min(500, n - start))), return_exceptions=True)
        conns += [g for g in got if not isinstance(g, BaseException)]
        failed += sum(isinstance(g, BaseException) for g in got)
    return conns, {"opened": len(conns), "failed to open": failed}


async def answers(conns: list) -> dict[str, int]:
    """What the stalled connections were answered (status line), reading without waiting."""
    out: dict[str, int] = {}
    for r, _ in conns:
        try:
            line: bytes | None = await asyncio.wait_for(r.readline(), 0.001)
        except asyncio.TimeoutError:
            line = None
        except ConnectionError:
            line = b""
        code = line.split(b" ")[1].decode() if line and line.startswith(b"HTTP/") else \
            "closed unanswered" if line == b"" else "none yet"
        out[code] = out.get(code, 0) + 1
    return dict(sorted(out.items()))


def cancel_frees(ep: deploy.Endpoint, key: str) -> dict:
    """Seconds from DELETE of a day-long task holding the edge node to the end of the task queued behind it."""
    long = {"id": f"day-{secrets.token_hex(3)}", "pool": "edge", "cpu_milli": 2000, "work": 86_400.0}
    nxt = {"id": f"after-{secrets.token_hex(3)}", "pool": "edge", "cpu_milli": 2000, "work": 0.05}
    assert call(f"{ep.url}/v1/tasks", "POST", long, key)[0] == 202
    status, queued = call(f"{ep.url}/v1/tasks", "POST", nxt, key)
    t0 = time.perf_counter()
    code, rec = call(f"{ep.url}/v1/tasks/{long['id']}", "DELETE", auth=key)
    while True:
        _, after = call(f"{ep.url}/v1/tasks/{nxt['id']}", auth=key)
        if after.get("status") in ("succeeded", "failed") or time.perf_counter() - t0 > 60:
            break
        time.sleep(0.05)
    return {"queued behind it": queued.get("status"), "DELETE": code, "cancelled": rec.get("status"),
            "next task": after.get("status"), "seconds to its end": round(time.perf_counter() - t0, 2)}


def run(state_dir: Path, stalls: tuple[int, ...], seconds: float) -> int:
    from ray import serve

    token = secrets.token_hex(16)
    os.environ["ORCH_ADMIN_TOKEN"] = token
    hist = Path(tempfile.mkdtemp(prefix="bench-abuse-")) / "history.db"
    ep = deploy.Endpoint("127.0.0.1", free_fixed_port(), free_fixed_port())
    os.environ.pop("ORCH_API_KEY", None)  # each load below sends the key it names, or none
    os.environ.pop("ORCH_API_KEY_FILE", None)
    deploy.start({"policy": "fastest-feasible", "history_url": f"sqlite:///{hist}", "warm_workers": 2,
                  "time_compression": 100.0, "body_timeout_s": BODY_TIMEOUT_S}, ep, state_dir=state_dir)
    deploy.wait_healthy(ep.url)
    fr = front.start(front.FrontConfig(port=free_fixed_port(), body_timeout_s=BODY_TIMEOUT_S,
                                       header_timeout_s=BODY_TIMEOUT_S),
                     front.upstreams(ep.host, ep.port, ep.direct_port), hist.parent / "front")
    probe_key = create_key(ep.url, token, "probe")
    flood_key = create_key(ep.url, token, "flood", rate_per_s=50, burst=100)
    rows: list[dict] = []
    notes: dict[str, object] = {}

    async def go() -> None:
        await probe(ep, fr, probe_key, "warm-up", seconds, [])  # the first seconds after a deploy are slower
        await probe(ep, fr, probe_key, "unloaded", seconds, rows)
        for at, port, n, sources in [(at, port, n, src) for at, port in (("proxy", ep.port), ("front", fr.cfg.port))
                                     for n in stalls for src in (1, 100)]:
            what = f"{n} stalled at the {at} from {sources} address{'es' if sources > 1 else ''}"
            conns, opened = await stall("127.0.0.1", port, n, sources)
            t0 = time.monotonic()
            await asyncio.sleep(1.0)
            await probe(ep, fr, probe_key, f"{what}, at once", seconds, rows)
            notes[f"{what}: connections"] = opened
            notes[f"{what}: answered within {seconds + 1:.0f} s"] = await answers(conns)
            await asyncio.sleep(max(0.0, BODY_TIMEOUT_S + 1.0 - (time.monotonic() - t0)))
            await probe(ep, fr, probe_key, f"{what}, past the body deadline", seconds, rows)
            for _, w in conns:
                w.close()
            await asyncio.sleep(2.0)
        batches = asyncio.create_task(open_loop(f"{ep.direct_url}/v1/route/batch", _plan_batch, rate=2,
                                                seconds=seconds + 1, max_in_flight=8))
        await asyncio.sleep(0.5)
        await probe(ep, fr, probe_key, f"anonymous plan=true batches of {PLAN_BATCH}, 2/s", seconds, rows)
        b = await batches
        notes["anonymous plan=true batches (quota 100 tasks/s, burst 256): answers"] = dict(
            sorted(b.statuses.items()))
        flood = asyncio.create_task(open_loop(f"{ep.direct_url}/v1/route", lambda i: TASK, rate=400,
                                              seconds=seconds + 1, key=flood_key, max_in_flight=512))
        await asyncio.sleep(0.5)
        await probe(ep, fr, probe_key, "a key flooding at 400/s", seconds, rows)
        f = await flood
        notes["flooding key (quota 50/s): answers"] = dict(sorted(f.statuses.items()))
        anon = await open_loop(f"{ep.url}/v1/tasks", lambda i: {**TASK, "work": 0.01}, rate=100, seconds=2.0)
        notes["unauthenticated POST /v1/tasks: answers"] = dict(sorted(anon.statuses.items()))

    try:
        asyncio.run(go())
        notes["tasks in the history after them"] = call(f"{ep.url}/v1/tasks?limit=1", auth=probe_key)[1]["total"]
        notes["cancel of a day-long task"] = cancel_frees(ep, probe_key)
    finally:
        fr.stop()
        serve.shutdown()
    print(f"\n{'probe':62} {'answered':>8} {'p50 ms':>8} {'p99 ms':>8}  codes")
    for r in rows:
        print(f"{r['name']:62} {r['n']:>8} {r['p50']:>8.1f} {r['p99']:>8.1f}  {r['codes']} errors {r['errors']}")
    for k, v in notes.items():
        print(f"{k}: {v}")
    base = {r["name"].split(": ", 1)[1]: r["p99"] for r in rows if r["name"].startswith("unloaded")}
    print()
    for r in rows:
        what = r["name"].split(": ", 1)[1]
        if not r["name"].startswith("unloaded"):
            verdict = ("p99 under 100 ms: " + ("yes" if r["p99"] < 100 else "NO")) if "healthz" in what else \
                      (f"p99 {r['p99'] / base[what]:.2f}x unloaded (target <= 2x): "
                       + ("yes" if r["p99"] <= 2 * base[what] else "NO"))
            print(f"{r['name']}: {verdict}")
    print(f"\nload average (1/5/15 min) at the end: {os.getloadavg()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", help="reuse the test_small cluster of this launcher state dir")
    p.add_argument("--stalls", default="1000,10000", help="stalled-connection counts to try")
    p.add_argument("--seconds", type=float, default=6.0, help="seconds of each probe")
    args = p.parse_args(argv or [])
    stalls = tuple(int(x) for x in args.stalls.split(","))
    if args.state_dir:
        return run(Path(args.state_dir), stalls, args.seconds)
    sdir = Path(tempfile.mkdtemp(prefix="orch-ba-", dir="/tmp"))  # short: Unix socket paths
    print("starting a test_small cluster ...", flush=True)
    try:
        # below the ephemeral range: the stalled connections' local ports linger there in TIME_WAIT
        launcher.up(CLUSTER, state_dir=sdir, port=free_fixed_port(), dashboard_port=free_fixed_port())
        return run(sdir, stalls, args.seconds)
    finally:
        import ray

        ray.shutdown()
        launcher.down(sdir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
