"""The package as a user installs it: a wheel that carries its configs and shipped models and
works from any directory, a command whose every option explains itself, and the shipped list
that git, Ray job uploads and the wheel share.

The wheel is installed into a fresh virtual environment whose dependencies come from this
checkout's environment (a ``.pth`` line to its site-packages, whose own ``.pth`` files, the
editable install among them, are not processed), so the package itself is only the wheel's copy.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from cluster.package_data import shipped_refs
from orchestrator.cli import build_parser
from tests.conftest import REPO_ROOT


def _options(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def test_every_option_of_every_command_has_help_and_shows_its_default():
    undocumented = [f"{path} {a.option_strings or a.dest}" for path, a in _options(build_parser(), "orchestrator")
                    if not a.help]
    assert undocumented == []
    text = subprocess.run([sys.executable, "-m", "orchestrator.cli", "simulate", "--help"], capture_output=True,
                          text=True, cwd=REPO_ROOT, check=True).stdout
    assert re.search(r"--cluster CLUSTER.*\(default:\s+configs/cluster/local\.yaml\)", text, re.S)
    assert "(default: None)" not in text


def test_version_flag_prints_the_distribution_version():
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--version"], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True).stdout
    assert re.fullmatch(r"orchestrator \d+\.\d+\.\d+\S*\n", out)


def _shipped_refs() -> list[str]:
    return shipped_refs(REPO_ROOT)


def test_the_shipped_models_are_the_ones_git_tracks():
    """One list (.gitignore's re-include lines) decides what git tracks, what Ray uploads and what
    the wheel carries: a tracked model left off it would vanish from jobs and wheels."""
    tracked = subprocess.run(["git", "ls-files", "artifacts/policies"], capture_output=True, text=True,
                             cwd=REPO_ROOT)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    refs = {"/".join(Path(p).parts[2:4]) for p in tracked.stdout.split()}
    assert refs and refs == set(_shipped_refs())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(out),
                    str(REPO_ROOT)], check=True, timeout=600)
    (whl,) = out.glob("*.whl")
    return whl


def test_the_wheel_carries_configs_shipped_models_and_licence_and_nothing_trained_locally(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "cluster/_data/"
    for cfg in ("configs/cluster/local.yaml", "configs/cluster/alibaba_openb.yaml", "configs/serve.yaml",
                "configs/objective.yaml", "configs/workloads/high_load.yaml",
                "configs/experiments/ppo_nodes.yaml", "configs/experiments/ppo_nodes_mix.yaml",
                "configs/monitoring/prometheus.yml"):
        assert data + cfg in names, cfg
    metas = {n[len(data + "artifacts/policies/"):-len("/meta.json")] for n in names
             if n.startswith(data + "artifacts/policies/") and n.endswith("/meta.json")}
    assert metas == set(_shipped_refs())
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel installed (dependencies read from this environment)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=300)
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ORCH_REGISTRY")}
    return subprocess.run([str(venv / "bin" / "orchestrator"), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_installed_package_runs_from_any_directory_with_its_own_configs_and_models(installed, tmp_path):
    where = _run(installed, "--version", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    probe = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import cluster.package_data as p; print(p.INSTALLED, p.DATA_ROOT)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert probe.startswith("True ") and str(installed) in probe  # the wheel's copy, not this checkout

    sim = _run(installed, "simulate", "--workload", "configs/workloads/cluster_smoke.yaml",
               "--policies", "fastest-feasible,rf,rl", "--out", "out", cwd=tmp_path)
    assert sim.returncode == 0, sim.stderr
    assert re.search(r"^rl\s+\d", sim.stdout, re.M) and re.search(r"^rf\s+\d", sim.stdout, re.M)
    assert (tmp_path / "out" / "comparison.csv").is_file()

    ev = _run(installed, "evaluate", "--policies", "rl,rf,fastest-feasible", "--workload",
              "configs/workloads/cluster_smoke.yaml", "--seeds", "101", "--out", "ev", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert "rl:11" in ev.stdout and (tmp_path / "ev" / "evaluation.md").is_file()

    # serve up reads the shipped Serve config and gets as far as looking for the cluster
    serve = _run(installed, "serve", "up", "--state-dir", str(tmp_path / "none"), "--timeout", "5", cwd=tmp_path)
    assert serve.returncode == 1 and "no cluster state" in serve.stderr


def test_installed_package_names_a_missing_config_as_the_user_gave_it(installed, tmp_path):
    bad = _run(installed, "simulate", "--cluster", "configs/cluster/nope.yaml", cwd=tmp_path)
    assert bad.returncode == 2
    assert "configs/cluster/nope.yaml: <file>: no such file" in bad.stderr and "Traceback" not in bad.stderr
