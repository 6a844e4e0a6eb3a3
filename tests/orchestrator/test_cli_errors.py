"""Bad command-line input: exit 2 and a message naming the flag, never a traceback (the checks raise
from other modules than ``orchestrator.cli``, whose ``main`` turns them into the exit status).

One case goes through ``python -m orchestrator.cli`` as the README runs it (the entry point's own
wiring); the others call the same ``main`` in this process: a fresh interpreter per case cost about
2-6 s of imports each, a third of a minute of the suite for what ``main`` alone decides.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.cli import main
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
    (["capacity", "apply", "--keep-layouts", "--pool", "cloud=2"], "--keep-layouts"),
    (["capacity", "apply", "--state-dir", "/tmp/orch-no-such-cluster", "--pool", "cloud=2"], "--state-dir"),
]


@pytest.mark.parametrize("argv,flag", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_flags_exit_2_naming_the_flag(argv: list[str], flag: str, capsys) -> None:
    try:
        code = main(argv)  # an exception escaping here (a traceback for the user) fails the test
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert flag in err and "Traceback" not in err


def test_the_module_entry_point_exits_2_without_a_traceback() -> None:
    argv, flag = CASES[-2]  # a command whose check needs few imports
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert flag in r.stderr and "Traceback" not in r.stderr
