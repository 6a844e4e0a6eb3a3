"""A node-level rl network's training range: taken from its warm start's rows, saved with the artifact."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rl_env.feature_range import derive, main, rows_range
from scheduler import model_registry
from scheduler.features import N_CANDIDATE_FEATURES
from scheduler.policy import make_policy
from scheduler.policy_net import NetSpec
from tests.scheduler.test_rl_policy import publish

ENV = {"level": "node", "workloads": ["configs/workloads/high_load.yaml"], "episode_s": 10, "max_candidates": 8,
       "cluster_variants": ["x1"]}


def test_padded_rows_do_not_widen_the_range() -> None:
    obs = np.zeros((2, 3, N_CANDIDATE_FEATURES), np.float32)
    obs[0, 0, 5], obs[1, 1, 5] = -1.0, 2.0
    obs[:, 2] = 1e6  # padding, masked out
    mask = np.array([[1, 1, 0], [1, 1, 0]], np.float32)
    r = rows_range(obs, mask)
    assert r["rows"] == 4 and r["lo"][5] == -1.0 and r["hi"][5] == 2.0 and max(r["hi"]) == 2.0
    with pytest.raises(ValueError, match="no candidate rows"):
        rows_range(obs, np.zeros_like(mask))


def test_an_artifact_is_saved_again_with_its_range_and_the_same_weights(tmp_path) -> None:
    spec = NetSpec(N_CANDIDATE_FEATURES, 8, (16,), level="node")
    publish(tmp_path, spec, env=ENV, init={"teacher": "fastest-feasible", "steps": 40}, command="train it",
            registry_note="about rl:1", validation={"objective": 1.0})
    path = derive("rl:1", tmp_path, steps=60, prefilter="mixed")
    assert path.name == "2"
    meta = json.loads((path / "meta.json").read_text())
    rng = meta["feature_range"]
    assert len(rng["lo"]) == len(rng["hi"]) == N_CANDIDATE_FEATURES and rng["rows"] > 120
    assert all(a <= b for a, b in zip(rng["lo"], rng["hi"]))
    assert "60 decisions of fastest-feasible" in rng["source"] and "the network itself" in rng["source"]
    assert meta["derived_from"]["policy"] == "rl:1" and meta["command"] == "train it"
    assert meta["env"]["prefilter"] == "mixed" and meta["env"]["max_candidates"] == 8
    assert "registry_note" not in meta and meta["validation"] == {"objective": 1.0}  # its note goes, its figures stay
    assert "measured without the range and with the spread prefilter" in meta["derived_from"]["note"]
    assert meta["derived_from"]["command"].endswith(f"--policy rl:1 --steps 60 --registry {tmp_path} --prefilter mixed")
    assert (path / "policy.pt").read_bytes() == (tmp_path / "rl" / "1" / "policy.pt").read_bytes()
    policy = make_policy("rl:2", root=tmp_path)
    assert policy.bounds is not None and make_policy("rl:1", root=tmp_path).bounds is None


def test_the_command_refuses_what_has_no_rows_to_range(tmp_path, capsys) -> None:
    publish(tmp_path)  # a class-level network
    publish(tmp_path, NetSpec(N_CANDIDATE_FEATURES, 8, (16,), level="node"), env=ENV)  # not warm-started
    reg = ["--registry", str(tmp_path)]
    for argv, why in ((["--policy", "rf:5"], "not an rl artifact"),
                      (["--policy", "rl:1", *reg], "not a node-level network"),
                      (["--policy", "rl:2", *reg], "was not warm-started"),
                      (["--policy", "rl:7", *reg], "no rl model version 7"),
                      (["--policy", "rl:2", "--steps", "0", *reg], "--steps: must be at least 1")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and why in capsys.readouterr().err, argv
    assert model_registry.versions("rl", tmp_path) == [1, 2]
