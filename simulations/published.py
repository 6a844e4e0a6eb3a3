"""The FGD paper's published packing figures, keyed by the pod list they were measured on.

Why keyed by trace: a "published" column is a claim that the paper measured this
experiment; comparing a ``gpushare20`` run with the ``default`` trace's figures
claimed a match that nobody measured. Only figures present in this repository are
shipped (Weng et al., "Beware of Fragmentation", USENIX ATC 2023: unallocated GPU %
of capacity at 100% arrived GPU demand, median over seeds 42-51). The paper also
evaluates other pod lists (``gpushare*``, ``multigpu*``, ``gpuspec*``, ``cpu*``), but
their figures are not transcribed here, so those traces get no published column.
"""
from __future__ import annotations

from pathlib import Path

PAPER = ('Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation '
         'Gradient Descent", USENIX ATC 2023')

#: Pod list file stem -> policy -> unallocated GPU % (median of seeds 42-51).
PUBLISHED_BY_TRACE: dict[str, dict[str, float]] = {
    "openb_pod_list_default": {"random": 13.75, "dot-product": 9.45, "gpu-clustering": 8.42,
                               "gpu-packing": 8.20, "best-fit": 7.09, "fgd": 4.77},
}


def trace_key(pods_csv: str | Path) -> str:
    """The key of a pod list: its file name without ``.csv`` (``openb_pod_list_default``)."""
    return Path(pods_csv).name.removesuffix(".csv")


def published_for(pods_csv: str | Path) -> dict[str, float]:
    """The paper's figures for this pod list by policy; empty when none were published (or shipped)."""
    return dict(PUBLISHED_BY_TRACE.get(trace_key(pods_csv), {}))


def published_note(pods_csv: str | Path) -> str:
    """One sentence for a table's caption: where its published column comes from, or why it is empty."""
    key = trace_key(pods_csv)
    if key in PUBLISHED_BY_TRACE:
        return f"Published: {PAPER}, median over seeds 42-51 on {key}; diff = median - published."
    known = ", ".join(sorted(PUBLISHED_BY_TRACE))
    return (f"Published and diff are empty: no published figures for {key} are shipped "
            f"(only for {known}, from {PAPER}); compare policies with each other.")
