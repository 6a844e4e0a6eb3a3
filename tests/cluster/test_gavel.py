"""The K80 / P100 / V100 figures in gpu_models.yaml are what the Gavel measurements give."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cluster.gavel import GAVEL_MODELS, gavel_ratios
from cluster.topology import load_gpu_models

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
THROUGHPUTS = TRACES / "gavel_throughputs" / "simulation_throughputs.json"


@pytest.fixture(scope="module")
def ratios() -> dict[str, dict[str, float]]:
    if not THROUGHPUTS.is_file():
        pytest.skip(f"Gavel throughputs not present at {THROUGHPUTS}")
    return gavel_ratios(THROUGHPUTS)


def test_stored_figures_match_the_recomputed_ones(ratios) -> None:
    models = load_gpu_models()
    assert set(ratios) == {m.upper() for m in GAVEL_MODELS}
    for name, fig in ratios.items():
        speed, coloc = models[name]
        assert speed == pytest.approx(fig["speed"], abs=5e-4), name
        assert coloc == pytest.approx(fig["colocation_factor"], abs=5e-4), name


def test_newer_gpus_are_faster(ratios) -> None:
    assert ratios["V100"]["speed"] == 1.0  # the reference
    assert ratios["V100"]["speed"] > ratios["P100"]["speed"] > ratios["K80"]["speed"] > 0


def test_time_slicing_slows_a_job_down(ratios) -> None:
    for name, fig in ratios.items():
        assert 0 < fig["colocation_factor"] < 1, name


def test_speed_order_holds_for_a_single_job_type_too() -> None:
    """Independent of the reduction: one job type's isolated throughput, read straight from the JSON."""
    if not THROUGHPUTS.is_file():
        pytest.skip(f"Gavel throughputs not present at {THROUGHPUTS}")
    data = json.loads(THROUGHPUTS.read_text())
    job = "('ResNet-50 (batch size 64)', 1)"
    k80, p100, v100 = (data[m][job]["null"] for m in ("k80", "p100", "v100"))
    assert v100 > p100 > k80 > 0
    assert all(math.isfinite(x) for x in (k80, p100, v100))
