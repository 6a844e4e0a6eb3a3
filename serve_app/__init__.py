"""Ray Serve router: the HTTP placement API, task execution, history and metrics.

``serve run serve_app:app`` starts it with the router args of ``$ORCH_SERVE_CONFIG``
(a YAML file; defaults otherwise); ``serve run serve_app:build_app policy=rf`` or
``serve deploy configs/serve.yaml`` pass them explicitly; ``orchestrator serve up``
does it for the local cluster. The attributes are built on first access, so
importing the package (the CLI plugin) does not import Ray Serve.
"""
from __future__ import annotations

import os
from typing import Any


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from serve_app.deployment import build_app

        return build_app
    if name == "app":
        from serve_app.deployment import build_app
        from serve_app.config import CONFIG_ENV, load_router_config

        path = os.environ.get(CONFIG_ENV)
        return build_app(load_router_config(path).to_dict() if path else None)
    raise AttributeError(f"module 'serve_app' has no attribute {name!r}")
