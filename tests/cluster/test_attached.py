"""Processes attached to a launched cluster (the router's holder) are stopped by ``down``'s helper."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cluster import launcher
from cluster.procs import cmdline

SLEEPER = "import time; time.sleep(120)  # attached-marker"


def _start() -> subprocess.Popen:
    """The sleeper, once its command line reads back: for a moment after exec it reads empty, which the
    guard counts as a process still exiting (and a CI run once caught it there)."""
    p = subprocess.Popen([sys.executable, "-c", SLEEPER], start_new_session=True)
    deadline = time.monotonic() + 10
    while "attached-marker" not in cmdline(p.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return p


def test_stop_attached_stops_exactly_the_recorded_session(tmp_path: Path) -> None:
    mine, other = _start(), _start()
    try:
        launcher.attach(tmp_path, "holder", mine.pid, "attached-marker")
        assert launcher.stop_attached(tmp_path, grace_s=5) == ["holder"]
        assert mine.wait(timeout=10) is not None
        time.sleep(0.2)
        assert other.poll() is None  # not recorded: left alone
        assert not (tmp_path / launcher.ATTACHED_DIR / "holder").exists()
        assert launcher.stop_attached(tmp_path) == []  # nothing left to stop
    finally:
        for p in (mine, other):
            p.kill()
            p.wait()


def test_a_recycled_session_id_without_the_marker_is_left_alone(tmp_path: Path) -> None:
    p = _start()
    try:
        launcher.attach(tmp_path, "holder", p.pid, "serve_app.cli")  # its command line does not say so
        assert launcher.stop_attached(tmp_path, "holder", grace_s=1) == []
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()
