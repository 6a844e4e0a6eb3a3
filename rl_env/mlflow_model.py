"""A registry version as an MLflow pyfunc model, so ``mlflow.pyfunc.load_model`` gives a placer.

``predict`` takes a DataFrame of tasks (the router's task fields: ``cpu_milli``, ``mem_mib``,
``gpu_milli``, ``slo_ms``, ``work`` ...) and returns, per task in order, the node and share the
policy chooses on the cluster it trained on (its meta's ``env.cluster``), each task booked
before the next is decided: a batch plan from an idle cluster. Imported by MLflow when it loads
the model, so it depends on this package and MLflow only.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class PlacementModel(mlflow.pyfunc.PythonModel):
    """The artifact folder (``policy`` in the logged artifacts) loaded as the placement policy."""

    def load_context(self, context: Any) -> None:
        from cluster.alibaba import load_cluster_any
        from cluster.package_data import data_path
        from scheduler.policy import make_policy

        folder = Path(context.artifacts["policy"])
        meta = json.loads((folder / "meta.json").read_text())
        kind, version = meta["kind"], int(meta["version"])
        # the policies load from a registry: give them a one-version registry holding this folder
        self._root = tempfile.TemporaryDirectory(prefix="orch-mlflow-")  # removed with the model
        (Path(self._root.name) / kind).mkdir()
        (Path(self._root.name) / kind / str(version)).symlink_to(folder.resolve())
        self.policy = make_policy(f"{kind}:{version}", root=self._root.name)
        cluster = (meta.get("env") or {}).get("cluster") or (meta.get("config") or {}).get("cluster") \
            or "configs/cluster/local.yaml"
        self.spec = load_cluster_any(data_path(cluster))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from cluster.booking import book_predicted
        from cluster.state import ClusterState
        from cluster.vocabulary import share_text
        from scheduler.task import make_task

        state = ClusterState.from_spec(self.spec)
        rows = []
        for k, rec in enumerate(model_input.to_dict("records")):
            task = make_task({"id": f"t{k}", **{c: v for c, v in rec.items() if pd.notna(v)}})
            d = self.policy.select(task, state)
            if d.placed:
                book_predicted(state, d.node, task, d.share)
            rows.append({"node": self.spec.nodes[d.node].name if d.placed else None,
                         "share": share_text(d.share) if d.placed else None, "explanation": d.explanation})
        return pd.DataFrame(rows)


mlflow.models.set_model(PlacementModel())
