"""Runs spread over processes (evaluate --jobs, train rf --jobs): a killed command leaves no worker behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO_ROOT
from tests.pids import alive


def test_workers_exit_when_the_command_that_started_them_is_killed(tmp_path) -> None:
    # an evaluation stopped with kill had left its two workers running their cells out (minutes of both cores)
    script = tmp_path / "command.py"
    script.write_text("import os, sys, time\n"
                      f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
                      "from simulations.processes import run_all\n"
                      "def work(k):\n"
                      # one write(2) below PIPE_BUF is atomic; print() under PYTHONUNBUFFERED writes the pid and
                      # its newline apart, and two workers' lines interleaved ('12341235\n\n')
                      "    os.write(1, f'{os.getpid()}\\n'.encode())\n"
                      "    time.sleep(120)\n"
                      "if __name__ == '__main__':\n"
                      "    list(run_all(work, [(0,), (1,)], jobs=2))\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            workers.append(int(parent.stdout.readline()))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(map(alive, workers)):
            time.sleep(0.2)
        assert not any(map(alive, workers))
    finally:
        parent.kill()
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)

