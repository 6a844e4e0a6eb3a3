"""The router's application in a Ray Serve config file (``configs/serve.yaml``), found one way.

The demo, the KubeRay RayService and the MLflow export each read the router's args from a
Serve config without importing ``serve_app`` (nothing may): the router is the application
whose ``import_path`` is in ``serve_app``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.config import ConfigError, Fields, load_yaml


def is_router(app: Any) -> bool:
    return isinstance(app, dict) and str(app.get("import_path", "")).startswith("serve_app")


def router_apps(f: Fields) -> list[dict[str, Any]]:
    """The router application(s) of a loaded Serve config; a ConfigError naming the file when none."""
    apps = f.data.get("applications")
    found = [a for a in apps if is_router(a)] if isinstance(apps, list) else []
    if not found:
        raise ConfigError(f.file, "applications", "no application with import_path serve_app:...")
    return found


def router_args(source: str | Path | Fields) -> dict[str, Any]:
    """The first router application's ``args`` (a copy), from a Serve config file or one already loaded."""
    f = source if isinstance(source, Fields) else load_yaml(source)
    args = router_apps(f)[0].get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f.file, "applications.args", f"must be a mapping, got {type(args).__name__}")
    return dict(args)
