"""The model registry: round trip, "latest", root override, schema mismatch refused."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from scheduler import model_registry as reg
from scheduler.features import CANDIDATE_FEATURE_NAMES, CANDIDATE_SCHEMA_VERSION, FEATURE_NAMES, SCHEMA_VERSION


def _save(root, kind="rf", payload=b"model", **meta):
    return reg.save(kind, {"model.bin": payload, "notes.txt": "hello",
                           "custom.dat": lambda p: p.write_bytes(b"\x00\x01")},
                    {"config": {"trees": 3}, "metrics": {"accuracy": 0.97}, "seed": 5, **meta}, root=root)


def test_round_trip(tmp_path):
    path = _save(tmp_path)
    assert path == tmp_path / "rf" / "1"
    art = reg.load("rf", "latest", root=tmp_path)
    assert (art.kind, art.version, art.ref) == ("rf", 1, "rf:1")
    assert art.file("model.bin").read_bytes() == b"model"
    assert art.file("notes.txt").read_text() == "hello"
    assert art.file("custom.dat").read_bytes() == b"\x00\x01"
    m = art.meta
    assert m["kind"] == "rf" and m["version"] == 1 and m["seed"] == 5
    # each kind records the schema its models read: the rf scores candidates, the rl a class-level vector
    assert m["feature_schema"] == CANDIDATE_SCHEMA_VERSION and m["feature_names"] == list(CANDIDATE_FEATURE_NAMES)
    rl = reg.load("rl", root=tmp_path).meta if _save(tmp_path, kind="rl") else None
    assert rl["feature_schema"] == SCHEMA_VERSION and rl["feature_names"] == list(FEATURE_NAMES)
    assert m["config"] == {"trees": 3} and m["metrics"] == {"accuracy": 0.97}
    assert m["command"] and m["files"] == ["custom.dat", "model.bin", "notes.txt"]
    assert dt.datetime.fromisoformat(m["created"]).tzinfo is not None
    assert reg.load_meta("rf", 1, root=tmp_path) == m
    with pytest.raises(reg.RegistryError, match="no 'absent.bin'"):
        art.file("absent.bin")


def test_latest_is_highest_and_kinds_are_separate(tmp_path):
    for i in range(3):
        _save(tmp_path, payload=f"v{i + 1}".encode())
    _save(tmp_path, kind="rl")
    assert reg.versions("rf", root=tmp_path) == [1, 2, 3]
    assert reg.resolve("rf", root=tmp_path) == tmp_path / "rf" / "3"
    assert reg.resolve("rf", "2", root=tmp_path) == reg.resolve("rf", "v2", root=tmp_path) \
        == reg.resolve("rf", 2, root=tmp_path)
    assert (reg.resolve("rf", 1, root=tmp_path) / "model.bin").read_bytes() == b"v1"
    assert reg.load("rl", root=tmp_path).version == 1
    # a half-written folder (no meta.json) is not a version
    (tmp_path / "rf" / "9").mkdir()
    assert reg.resolve("rf", root=tmp_path).name == "3"
    assert _save(tmp_path).name == "10"  # never reuses a number that is taken on disk


def test_missing_model_errors_name_the_fix(tmp_path):
    with pytest.raises(reg.ModelNotFoundError, match="no rf model in .*: run orchestrator train rf"):
        reg.resolve("rf", root=tmp_path)
    _save(tmp_path)
    with pytest.raises(reg.ModelNotFoundError, match=r"version 4 .*\(have 1\)"):
        reg.load("rf", 4, root=tmp_path)
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError for generic callers
        reg.load("rl", root=tmp_path)
    for bad in ("0", "-1", "abc", 0, 1.5, True):
        with pytest.raises(reg.RegistryError, match="bad model version"):
            reg.resolve("rf", bad, root=tmp_path)
    with pytest.raises(reg.RegistryError, match="bad model kind"):
        reg.resolve("../x", root=tmp_path)


def test_schema_mismatch_rejected(tmp_path):
    path = _save(tmp_path, feature_schema="0")
    assert json.loads((path / "meta.json").read_text())["feature_schema"] == "0"
    with pytest.raises(reg.SchemaMismatchError,
                       match=f"model rf:1 was trained on feature schema 0, this build uses {CANDIDATE_SCHEMA_VERSION}: "
                             "retrain with orchestrator train rf"):
        reg.load("rf", root=tmp_path)
    assert reg.load("rf", root=tmp_path, check=False).meta["feature_schema"] == "0"
    # same version string but a different layout (a forgotten bump) is caught too
    _save(tmp_path, feature_names=list(CANDIDATE_FEATURE_NAMES[:-1]) + ["something_new"])
    with pytest.raises(reg.SchemaMismatchError, match="something_new"):
        reg.load("rf", 2, root=tmp_path)
    with pytest.raises(reg.SchemaMismatchError, match="records no feature schema"):
        reg.check_schema({"kind": "rl", "version": 1})


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(reg.REGISTRY_ENV, str(tmp_path / "env"))
    assert reg.registry_root() == tmp_path / "env"
    assert reg.registry_root(tmp_path / "arg") == tmp_path / "arg"  # the argument wins
    path = _save(None)
    assert path == tmp_path / "env" / "rf" / "1"
    monkeypatch.delenv(reg.REGISTRY_ENV)
    assert reg.registry_root() == reg.DEFAULT_ROOT


def test_failed_writer_leaves_nothing(tmp_path):
    def boom(p):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        reg.save("rf", {"model.bin": boom}, root=tmp_path)
    assert list((tmp_path / "rf").iterdir()) == []
    for bad in ("meta.json", "../x", ""):
        with pytest.raises(reg.RegistryError, match="bad artifact file name"):
            reg.save("rf", {bad: b""}, root=tmp_path)


def test_installed_package_reads_shipped_models_and_numbers_new_ones_above_them(tmp_path, monkeypatch):
    """An installed package's default registry (``artifacts/policies`` in the working directory) also
    sees the models the wheel ships; a model trained there never reuses a shipped number."""
    shipped, work = tmp_path / "shipped", tmp_path / "work"
    _save(shipped, payload=b"shipped rf")
    _save(shipped, kind="rl")
    monkeypatch.delenv(reg.REGISTRY_ENV, raising=False)
    monkeypatch.setattr(reg, "SHIPPED_MODELS", shipped)
    monkeypatch.setattr(reg, "work_path", lambda p: work / p)
    assert reg.load("rf").file("model.bin").read_bytes() == b"shipped rf"
    assert reg.versions("rf") == [1]
    new = _save(None, payload=b"trained here")
    assert new == work / "artifacts" / "policies" / "rf" / "2"
    assert reg.load("rf").ref == "rf:2" and reg.load("rf", 1).file("model.bin").read_bytes() == b"shipped rf"
    with pytest.raises(reg.ModelNotFoundError, match=r"version 3 \(have 1, 2\)"):
        reg.resolve("rf", 3)
    # naming the default folder (`--registry artifacts/policies`) is the default: shipped ones seen, numbered above
    assert reg.versions("rf", root=work / "artifacts" / "policies") == [1, 2]
    assert _save(work / "artifacts" / "policies") == work / "artifacts" / "policies" / "rf" / "3"
    # a registry named by argument (another folder) or environment is exactly that folder
    assert reg.versions("rf", root=tmp_path / "other") == []
    monkeypatch.setenv(reg.REGISTRY_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(reg.ModelNotFoundError):
        reg.load("rl")
