"""make_task: every bad field is named; descriptions fill in what the user left out."""
from __future__ import annotations

import pytest

from scheduler.describe import infer_from_description
from scheduler.task import (MAX_CPU_MILLI, MAX_DESCRIPTION, MAX_GPUS, MAX_MEM_MIB, MAX_SLO_MS, MAX_WORK_S, Task,
                            TaskError, make_task, with_arrival, with_id)


def bad(field: str, **kw) -> TaskError:
    with pytest.raises(TaskError) as info:
        make_task({"id": "t", **kw})
    assert info.value.field == field, info.value
    assert str(info.value).startswith(f"{field}: ")
    return info.value


def test_defaults_make_a_small_cpu_task() -> None:
    t = make_task({"id": "t"})
    assert isinstance(t, Task)
    assert (t.priority, t.gpu_need, t.gpu_amount, t.inferred) == (5, "none", 0.0, ())
    assert t.cpu_milli > 0 and t.slo_ms > 0


@pytest.mark.parametrize("field, value", [
    ("priority", 0), ("priority", 11), ("priority", -3),
    ("slo_ms", 0), ("slo_ms", -5.0), ("slo_ms", float("nan")),
    ("cpu_milli", -1), ("mem_mib", -1),
    ("gpu_milli", 1000), ("gpu_milli", -250),
    ("gpu_count", 65), ("gpu_count", -1),
    ("cost_sensitivity", 0), ("cost_sensitivity", 11),
    ("work", -0.1), ("arrival", -1.0),
])
def test_out_of_range_field_is_named(field: str, value) -> None:
    err = bad(field, **{field: value})
    assert str(value) in str(err) or value != value  # the bad value is shown (NaN aside)


#: field -> (lowest accepted, highest accepted, next value below, next above, type held)
_BOUNDS = {
    "priority": (1, 10, 0, 11, int), "cost_sensitivity": (1, 10, 0, 11, int),
    "cpu_milli": (0, MAX_CPU_MILLI, -1, MAX_CPU_MILLI + 1, int), "mem_mib": (0, MAX_MEM_MIB, -1, MAX_MEM_MIB + 1, int),
    "gpu_milli": (0, 999, -1, 1000, int), "gpu_count": (0, MAX_GPUS, -1, MAX_GPUS + 1, int),
    "arrival": (0, 1e12, -1e-9, 1.000001e12, float), "work": (0, MAX_WORK_S, -1e-9, MAX_WORK_S * 1.000001, float),
    "slo_ms": (1e-9, MAX_SLO_MS, 0, MAX_SLO_MS * 1.000001, float),
}


@pytest.mark.parametrize("field", sorted(_BOUNDS))
def test_bounds_are_exact_and_values_keep_their_type(field: str) -> None:
    lo, hi, below, above, kind = _BOUNDS[field]
    base = {"gpu_milli": 250} if field == "cpu_milli" else {}  # cpu 0 needs a GPU
    for v in (lo, hi, float(lo), float(hi)):
        got = getattr(make_task({"id": "t", **base, field: v}), field)
        assert got == v and type(got) is kind
    for v in (below, above, float("inf"), float("-inf")):
        bad(field, **base, **{field: v})


@pytest.mark.parametrize("field, value", [
    ("priority", True), ("gpu_count", False), ("cpu_milli", True), ("slo_ms", True), ("work", False),
])
def test_bool_is_not_a_number(field: str, value: bool) -> None:
    bad(field, **{field: value})


@pytest.mark.parametrize("field, value", [
    ("priority", "high"), ("priority", 7.5), ("slo_ms", "fast"), ("cpu_milli", None), ("mem_mib", [1024]),
    ("gpu_milli", 0.25), ("gpu_models", "A100"), ("gpu_models", [1]), ("gpu_models", None),
    ("id", 5), ("id", ""), ("id", "x" * 129), ("kind", 5), ("kind", ""), ("description", 42),
    ("mig_profile", 5),
])
def test_wrong_type_is_named(field: str, value) -> None:
    bad(field, **{field: value})


def test_whole_float_is_accepted_as_int() -> None:
    assert make_task({"id": "t", "priority": 7.0}).priority == 7


def test_two_gpu_needs_at_once() -> None:
    err = bad("gpu_milli", gpu_milli=250, gpu_count=1)
    assert "only one" in err.reason
    bad("gpu_milli", gpu_count=1, mig_profile="1g.10gb")
    bad("gpu_milli", gpu_milli=250, mig_profile="1g.10gb")


def test_unknown_mig_profile() -> None:
    err = bad("mig_profile", mig_profile="5g.50gb")
    assert "1g.10gb" in err.reason  # lists the known ones


def test_unknown_key() -> None:
    bad("gpus", gpus=1)
    bad("prio", prio=3)


def test_missing_id_and_non_mapping() -> None:
    with pytest.raises(TaskError) as info:
        make_task({"priority": 3})
    assert info.value.field == "id"
    with pytest.raises(TaskError):
        make_task(["id", "t"])  # type: ignore[arg-type]


def test_description_length() -> None:
    assert make_task({"id": "t", "description": "x" * MAX_DESCRIPTION}).description == "x" * MAX_DESCRIPTION
    bad("description", description="x" * (MAX_DESCRIPTION + 1))


def test_task_needs_some_resource() -> None:
    bad("cpu_milli", cpu_milli=0)
    assert make_task({"id": "t", "cpu_milli": 0, "gpu_milli": 250}).gpu_need == "fraction"


def test_gpu_need_and_amount() -> None:
    assert make_task({"id": "t", "gpu_milli": 250}).gpu_amount == 0.25
    assert make_task({"id": "t", "gpu_count": 2}).gpu_need == "whole"
    mig = make_task({"id": "t", "mig_profile": "3g.40gb"})
    assert (mig.gpu_need, mig.gpu_amount) == ("mig", pytest.approx(3 / 7))
    assert make_task({"id": "t", "gpu_models": ["V100", "A100"]}).gpu_models == ("V100", "A100")


# ---------------------------------------------------------------- description inference


def test_real_time_fraud_detection_is_urgent_cpu_work() -> None:
    t = make_task({"id": "t", "description": "real-time fraud detection"})
    assert t.priority >= 8 and t.slo_ms <= 500
    assert t.gpu_need == "none"
    assert {"priority", "slo_ms"} <= set(t.inferred)


def test_medical_image_segmentation_needs_a_gpu() -> None:
    t = make_task({"id": "t", "description": "medical image segmentation"})
    assert t.gpu_need != "none" and t.gpu_amount > 0
    assert "gpu_milli" in t.inferred or "gpu_count" in t.inferred or "mig_profile" in t.inferred


def test_nightly_batch_etl_is_patient_and_low_priority() -> None:
    t = make_task({"id": "t", "description": "nightly batch ETL"})
    assert t.slo_ms >= 3_600_000 and t.priority <= 3
    assert t.gpu_need == "none"


@pytest.mark.parametrize("text", ["Real-Time FRAUD detection", "realtime fraud detection"])
def test_inference_ignores_case_and_hyphens(text: str) -> None:
    assert make_task({"id": "t", "description": text}).priority >= 8


def test_explicit_fields_win_over_inferred_ones() -> None:
    t = make_task({"id": "t", "description": "real-time fraud detection", "priority": 3, "slo_ms": 2000})
    assert (t.priority, t.slo_ms) == (3, 2000.0)
    assert "priority" not in t.inferred and "slo_ms" not in t.inferred
    # an explicit GPU need (even a different kind) suppresses the inferred one
    t = make_task({"id": "t", "description": "medical image segmentation", "mig_profile": "1g.10gb"})
    assert (t.gpu_need, t.gpu_milli) == ("mig", 0)
    assert "gpu_milli" not in t.inferred


def test_inferred_lists_exactly_what_was_inferred() -> None:
    t = make_task({"id": "t", "description": "nightly batch ETL", "cost_sensitivity": 1})
    assert t.cost_sensitivity == 1
    assert set(t.inferred) == {"priority", "slo_ms"}
    for name in t.inferred:
        assert getattr(t, name) != getattr(Task(id="_"), name)


def test_no_inference_when_switched_off_or_nothing_matches() -> None:
    t = make_task({"id": "t", "description": "real-time fraud detection"}, infer=False)
    assert (t.priority, t.inferred) == (5, ())
    t = make_task({"id": "t", "description": "hello world"})
    assert t.inferred == () and t.priority == 5


def test_to_dict_round_trips() -> None:
    t = make_task({"id": "t", "description": "medical image segmentation", "gpu_models": ["V100"]})
    d = t.to_dict()
    assert d["inferred"] == list(t.inferred)
    d.pop("inferred")
    assert make_task(d, infer=False).to_dict() == {**t.to_dict(), "inferred": []}
    assert with_arrival(t, 5.0).arrival == 5.0 and t.arrival == 0.0


# ---------------------------------------------------------------- bugs


@pytest.mark.parametrize("field", ["priority", "cpu_milli", "gpu_count"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_integer_field_is_named(field: str, value: float) -> None:
    bad(field, **{field: value})


def test_list_mig_profile_is_named() -> None:
    bad("mig_profile", mig_profile=["1g.10gb"])


def test_with_id_copies_every_field_but_the_id() -> None:
    t = make_task({"id": "a", "description": "medical image segmentation", "gpu_models": ["A100"], "work": 2.5})
    c = with_id(t, "b")
    assert c.id == "b" and c is not t
    assert {**c.to_dict(), "id": "a"} == t.to_dict()


def test_inference_is_cached_but_callers_cannot_change_it() -> None:
    first = infer_from_description("Real-time fraud detection")
    with pytest.raises(TypeError):
        first["priority"] = 1  # shared by every caller: read-only
    assert infer_from_description("Real-time fraud detection")["priority"] == 9
    assert make_task({"id": "x", "description": "Real-time fraud detection"}).priority == 9
