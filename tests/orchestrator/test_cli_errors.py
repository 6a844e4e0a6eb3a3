"""Bad command-line input through ``python -m orchestrator.cli`` (as the README runs it): exit 2 and a
message naming the flag, never a traceback (the checks raise from other modules than ``__main__``)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

CASES = [
    (["evaluate", "--scale-cluster", "0"], "--scale-cluster"),
    (["evaluate", "--drop-pool", "nope"], "--drop-pool"),
    (["evaluate", "--policies", "rollout:3"], "--policies"),
    (["evaluate", "--jobs", "0", "--policies", "fastest-feasible"], "--jobs"),
    (["train", "rf", "--teacher", "nope"], "--teacher"),
    (["train", "rf", "--duration-s", "0"], "--duration-s"),
    (["train", "rf", "--baselines", "nope"], "--baselines"),
    (["train", "rf", "--variants", "no:nope", "--duration-s", "1"], "--variants"),
    (["capacity", "apply", "--pool", "cloud"], "--pool"),
    (["capacity", "apply", "--state-dir", "/tmp/orch-no-such-cluster", "--pool", "cloud=2"], "--state-dir"),
]


@pytest.mark.parametrize("argv,flag", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_flags_exit_2_naming_the_flag(argv: list[str], flag: str) -> None:
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert flag in r.stderr and "Traceback" not in r.stderr
