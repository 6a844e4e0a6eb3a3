"""The sim-vs-real page: a summary row per policy (agreement and verdict), then each policy's metrics."""
from __future__ import annotations

import pandas as pd

from replays.results import ReplayResult
from replays.sim_vs_real import Comparison, markdown


def _comparison(sim_ms: float, real_ms: float, pools_real: dict[str, int], same: float) -> Comparison:
    table = pd.DataFrame({"simulator": [sim_ms], "cluster": [real_ms], "rel_error": [abs(real_ms - sim_ms) / sim_ms]},
                         index=pd.Index(["latency mean (ms)"], name="metric"))
    empty = ReplayResult(pd.DataFrame(), pd.DataFrame(), wall_s=41.5, warm_s=3.0, device_mismatches=1)
    cmp = Comparison(empty, empty, table, {"edge": 10, "gpu-mig": 5}, pools_real, same,
                     abs(real_ms - sim_ms) / sim_ms, 0.15)
    if not cmp.placement_match:
        cmp.reasons.append("placement mix differs")
    return cmp


def test_page_has_one_summary_row_per_policy_and_their_metric_tables() -> None:
    ok = _comparison(100.0, 102.0, {"edge": 10, "gpu-mig": 5}, 1.0)
    bad = _comparison(100.0, 130.0, {"edge": 9, "gpu-mig": 6}, 0.933)
    lines = markdown([("least-loaded", ok), ("gpu-packing", bad)], ["# Simulator against the live cluster", ""])
    text = "\n".join(lines)
    assert "| least-loaded | 100.0% | 2.0% | identical | pass |" in text
    assert "| gpu-packing | 93.3% | 30.0% | different | FAIL: placement mix differs |" in text
    assert text.index("## least-loaded") < text.index("## gpu-packing")
    assert "| latency mean (ms) | 100 | 130 | 0.3 |" in text
    assert "Replay: 41.5 s wall, 3.0 s worker warm-up, 1 GPU device mismatches." in text
