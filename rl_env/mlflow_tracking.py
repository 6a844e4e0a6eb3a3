"""MLflow, for teams that track experiments and models there: Tune runs logged, versions registered.

The built-in registry (:mod:`scheduler.model_registry`) stays the source of truth and needs no
server; MLflow is a view onto it that people already use. ``orchestrator train rl`` logs each
Tune trial to MLflow when it is installed (``pip install 'ai-workload-orchestrator[mlflow]'``),
to a local store by default (:func:`default_uri`) or to ``--mlflow-uri``. ``orchestrator policy
export --mlflow`` registers rf and rl versions as MLflow models (``orchestrator-rf``,
``orchestrator-rl``): each version's artifact folder under a pyfunc model that places tasks,
with its registry metadata as tags, and aliases: ``r<N>`` for registry version N and
``champion`` for the version the router's config serves.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cluster.config import UsageError
from cluster.package_data import work_path

#: MLflow's name of each kind's registered model
MODEL_NAMES = {"rf": "orchestrator-rf", "rl": "orchestrator-rl"}
EXPERIMENT = "orchestrator-train-rl"
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
#: the input a registered model is checked on as it is logged (and its signature's source)
EXAMPLE = pd.DataFrame([{"cpu_milli": 2000, "mem_mib": 2048, "gpu_count": 0, "slo_ms": 500.0, "work": 0.2,
                         "priority": 5},
                        {"cpu_milli": 4000, "mem_mib": 8192, "gpu_count": 1, "slo_ms": 2000.0, "work": 1.0,
                         "priority": 3}])
INSTALL_HINT = "pip install 'ai-workload-orchestrator[mlflow]'"


def available() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def default_uri() -> str:
    """The local store: an SQLite file under ``results/mlflow`` (MLflow's default backend kind)."""
    path = work_path("results/mlflow/mlflow.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def require() -> None:
    if not available():
        raise UsageError(f"--mlflow: MLflow is not installed ({INSTALL_HINT})")


def ensure_experiment(client: Any, name: str, uri: str) -> str:
    """The experiment's id, created with its artifacts beside a local store's database (MLflow's
    default would be ``./mlruns`` in whatever directory the command ran from)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "artifacts").absolute().as_uri()
    return client.create_experiment(name, artifact_location=location)


def tune_callbacks(uri: str | None, enabled: bool, tags: dict[str, str]) -> list[Any]:
    """The Tune callback that logs every trial's parameters and metrics, or none (disabled, or
    MLflow not installed: then one line says so and training goes on)."""
    if not enabled:
        return []
    if not available():
        print(f"MLflow not installed: Tune runs are not logged there ({INSTALL_HINT})", flush=True)
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from mlflow import MlflowClient

    uri = uri or default_uri()
    ensure_experiment(MlflowClient(tracking_uri=uri), EXPERIMENT, uri)
    print(f"logging the Tune trials to MLflow at {uri} (experiment {EXPERIMENT})", flush=True)
    return [MLflowLoggerCallback(tracking_uri=uri, registry_uri=uri, experiment_name=EXPERIMENT, tags=tags,
                                 save_artifact=False)]


@dataclass(frozen=True)
class Registered:
    """One registry version as MLflow registered it."""

    ref: str
    name: str
    version: str
    aliases: tuple[str, ...]


def register(refs: list[str], uri: str | None = None, *, champion: str | None = None,
             root: str | Path | None = None) -> list[Registered]:
    """Register each ``kind:version`` (``rf:latest`` ...) of the built-in registry in MLflow.

    Registering the same registry version again makes a new MLflow version and moves its
    aliases there, so ``models:/orchestrator-rl@r2`` always names registry ``rl:2``.
    """
    require()
    from scheduler import model_registry

    arts = []
    for ref in refs:  # every version resolved before the store is touched: a refusal creates no database
        kind, _, version = ref.partition(":")
        if kind not in MODEL_NAMES:
            raise UsageError(f"--models: {ref!r}: only {', '.join(MODEL_NAMES)} versions are exported")
        try:
            arts.append((kind, model_registry.load(kind, version or "latest", root)))
        except model_registry.RegistryError as exc:
            raise UsageError(f"--models: {ref!r}: {exc}") from None

    import mlflow
    from mlflow import MlflowClient

    uri = uri or default_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_experiment(experiment_id=ensure_experiment(client, "orchestrator-policies", uri))
    out = []
    for kind, art in arts:
        name = MODEL_NAMES[kind]
        with mlflow.start_run(run_name=f"export {art.ref}"):
            mlflow.log_params(_params(art.meta))
            mlflow.set_tags({"orchestrator.ref": art.ref, "orchestrator.command": str(art.meta.get("command", ""))})
            # models from code: MLflow imports rl_env/mlflow_model.py on load (no pickled object)
            info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE),
                                           artifacts={"policy": str(art.path)}, input_example=EXAMPLE,
                                           pip_requirements=[_requirement()])
        mv = mlflow.register_model(info.model_uri, name, tags={"orchestrator.ref": art.ref})
        aliases = [f"r{art.version}"] + (["champion"] if champion == art.ref else [])
        for alias in aliases:
            client.set_registered_model_alias(name, alias, mv.version)
        out.append(Registered(art.ref, name, str(mv.version), tuple(aliases)))
    return out


def _params(meta: dict) -> dict[str, str]:
    """A few flat facts of the artifact as MLflow params (values cut to MLflow's length limit)."""
    keys = ("kind", "version", "feature_schema", "seed", "created")
    return {k: str(meta.get(k))[:500] for k in keys if meta.get(k) is not None}


def _requirement() -> str:
    from importlib import metadata

    try:
        return f"ai-workload-orchestrator=={metadata.version('ai-workload-orchestrator')}"
    except metadata.PackageNotFoundError:
        return "ai-workload-orchestrator"


def champion_ref(serve_config: str | Path) -> str | None:
    """The ``kind:version`` the router's config serves (``policy: rl`` is the latest rl), if learned; for
    ``auto``, the learned member it delegates to where that member wins (its first: the forest)."""
    from cluster.serve_config import router_args
    from scheduler import model_registry
    from scheduler.policies.auto import learned_members

    args = router_args(serve_config)
    policy, root = str(args.get("policy", "")), args.get("registry")  # the registry the router reads
    if policy == "auto":
        try:
            policy = next(iter(learned_members(root=root)), "")
        except model_registry.RegistryError:
            return None
    kind, _, version = policy.partition(":")
    if kind not in MODEL_NAMES:
        return None
    try:
        return model_registry.load(kind, version or "latest", root, check=False).ref
    except model_registry.RegistryError:
        return None
