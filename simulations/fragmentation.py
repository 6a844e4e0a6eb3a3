"""GPU fragmentation of a cluster for a target workload (Weng et al., "Beware of Fragmentation").

The measure and its vectorised kernels live in :mod:`scheduler.policies.fgd`
(the FGD policy needs them and ``scheduler`` must not import ``simulations``);
this module is the simulator-facing entry point:

* :func:`typical_shapes`: the target workload ("typical pods") of a task list;
* :func:`node_fragmentation`: fragmentation (milli GPU) of each node;
* :func:`cluster_fragmentation`: the sum over a :class:`ClusterState`'s nodes;
* :class:`FragmentationIndex`: the same sum kept up to date incrementally.

See the FGD module docstring for the formula.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cluster.state import ClusterState
from scheduler.policies.fgd import (FragmentationIndex, Shape, TargetWorkload, node_fragmentation,
                                    shape_of, typical_from_counts, typical_shapes)

__all__ = ["Shape", "TargetWorkload", "FragmentationIndex", "shape_of", "typical_shapes",
           "typical_from_counts", "node_fragmentation", "cluster_fragmentation",
           "fragmentation_ratio"]


def _workload(shapes: Sequence[tuple[Any, float]] | TargetWorkload) -> TargetWorkload:
    return shapes if isinstance(shapes, TargetWorkload) else TargetWorkload(shapes)


def cluster_fragmentation(state: ClusterState, shapes: Sequence[tuple[Any, float]] | TargetWorkload) -> float:
    """Total fragmentation (milli GPU) of ``state`` for the target workload ``shapes``.

    ``shapes`` is ``[(shape, weight)]`` from :func:`typical_shapes` (or a compiled
    :class:`TargetWorkload`, faster when called often). MIG devices are not counted.
    """
    wl = _workload(shapes)
    return float(node_fragmentation(state.cpu_free, state.gpu_free, wl, wl.type_ok(state)).sum())


def fragmentation_ratio(state: ClusterState, shapes: Sequence[tuple[Any, float]] | TargetWorkload) -> float:
    """Fragmentation as a share of the free GPU milli of shared devices (0 when none is free)."""
    free = float(np.maximum(state.gpu_free, 0).sum())
    return cluster_fragmentation(state, shapes) / free if free > 0 else 0.0
