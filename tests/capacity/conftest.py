"""Small workloads with a rate profile, written per test (the shipped weekly file is three weeks long)."""
from __future__ import annotations

from pathlib import Path

import pytest

SCENARIOS = """
scenarios:
  - {kind: scoring, weight: 4, priority: 9, slo_ms: 300, cpus: 0.5, memory_gb: 0.5, work_s: {dist: lognormal, mean: 0.05, sigma: 0.5}}
  - {kind: imaging, weight: 2, priority: 7, slo_ms: 3000, cpus: 2, memory_gb: 8, gpu: {fraction: 0.25}, work_s: {dist: uniform, low: 0.5, high: 1.5}}
  - {kind: llm_mig, weight: 1, priority: 7, slo_ms: 2500, cpus: 1, memory_gb: 4, gpu: {mig: 3g.40gb}, work_s: {dist: constant, mean: 2.0}}
  - {kind: tuning, weight: 0.5, priority: 3, slo_ms: 3600000, cpus: 8, memory_gb: 32, gpu: {count: 2}, work_s: {dist: lognormal, mean: 60, sigma: 0.3}}
"""


def write_workload(tmp_path: Path, *, days: float = 1.0, rate: float = 0.2, profile: str = "", name: str = "w") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\nduration_s: {days * 86400:g}\nrate_per_s: {rate}\nseed: 5\n{profile}{SCENARIOS}")
    return p


DAILY = """rate_profile:
  daily_amplitude: 0.5
  peak_hour: 14
  weekly_amplitude: 0.1
  trend_per_day: 0.02
  bursts: {per_day: 0.5, duration_s: 1800, factor: 2}
  noise: 0.05
"""


@pytest.fixture
def small_workload(tmp_path: Path) -> Path:
    """One day at 0.2 arrivals/s (about 17,000 tasks) with every part of a rate profile."""
    return write_workload(tmp_path, profile=DAILY)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The forecasting libraries' own pandas-3 deprecations (capacity.models silences them outside tests)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings(
                r"ignore::DeprecationWarning:(mlforecast|utilsforecast|statsforecast)"))
