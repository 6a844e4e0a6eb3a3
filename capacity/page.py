"""The tables of a capacity run's dated Markdown page (``--markdown docs/capacity.md``).

The page itself (header naming the command and revision, tables, writing) is the one every
``docs/`` page uses, :mod:`orchestrator.docs_page` (re-exported here); every figure on it
comes from the run that wrote it.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from orchestrator.docs_page import header, table, write  # noqa: F401 - the page's parts


def error_table(t: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """MAPE and MASE of each model side by side, per series and horizon, with the best by MASE."""
    wide = t[["mape", "mase"]].unstack("model")
    wide = wide.loc[list(dict.fromkeys(k[:2] for k in t.index))]  # the table's order, not unstack's sort
    out = pd.DataFrame(index=wide.index)
    for m in models:
        if ("mase", m) in wide.columns:
            out[f"{m} MAPE %"] = wide[("mape", m)]
            out[f"{m} MASE"] = wide[("mase", m)]
    mase = wide["mase"]
    out["best"] = mase.apply(lambda r: r.idxmin() if r.notna().any() else None, axis=1)  # flat history: no MASE
    base = mase["snaive"] if "snaive" in mase.columns else None
    out["beats snaive"] = (mase.min(axis=1) < base) if base is not None else False
    return out


def coverage_table(t: pd.DataFrame, levels: Sequence[int]) -> pd.DataFrame:
    """Empirical coverage of each level, and fit-and-forecast seconds, per model and horizon (mean over series)."""
    cols = [f"cov_{lv}" for lv in levels]
    g = t.groupby(level=["horizon", "model"], sort=False)
    out = g[cols].mean().rename(columns={f"cov_{lv}": f"{lv}% coverage" for lv in levels})
    out["windows"] = g["windows"].first()
    out["seconds"] = g["seconds"].first()
    return out
