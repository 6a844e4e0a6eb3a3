"""The container image the KubeRay manifests run: its name, its Dockerfile, and paths inside it.

The RayService's router and the RayJob's replay import this package on the Ray
nodes, so the pods need an image with it installed: ``rayproject/ray`` at the Ray
version this package pins (a mismatch between the image's Ray and the driver's is
refused by Ray) plus ``pip install .`` of this checkout. The checkout is copied to
:data:`APP_DIR`, so configs, the shipped policies and outputs have one absolute
place in every pod: the manifests name files there, never relative paths (which an
installed package would resolve against its working directory, not the checkout).
"""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path, PurePosixPath

from cluster.config import UsageError
from cluster.package_data import DATA_ROOT, shipped_refs

PACKAGE = "ai-workload-orchestrator"
#: where the Dockerfile puts the checkout (``rayproject/ray`` runs as user ``ray``, home /home/ray)
APP_DIR = PurePosixPath("/home/ray/orchestrator")
#: ``rayproject/ray``'s user and group (ray:users)
IMAGE_OWNER = "1000:100"
#: top-level files the build needs, copied when the checkout has them (setup.py reads
#: .gitignore for the list of shipped models)
BUILD_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE", ".gitignore")


def ray_version() -> str:
    """The installed Ray (``pyproject.toml`` pins it), which the image and ``rayVersion`` must match."""
    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:  # pragma: no cover - ray is a dependency
        return "2.60.0"


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "latest"


def default_image() -> str:
    """The image the Dockerfile builds: ``ai-workload-orchestrator:<package version>``."""
    return f"{PACKAGE}:{package_version()}"


def base_image() -> str:
    """``rayproject/ray:<Ray version>-py3XX`` for the Python this package was rendered with."""
    return f"rayproject/ray:{ray_version()}-py{sys.version_info.major}{sys.version_info.minor}"


def image_path(path: str | Path) -> str:
    """Where ``path`` (a config or workload of this checkout) is inside the image.

    A file of the checkout (or a relative name without ``..``, as the shipped
    ``configs/...`` are given) maps under :data:`APP_DIR`; anything else is kept as
    given: it must be mounted into the pods at that path.
    """
    p = Path(path).expanduser()
    full = (p if p.is_absolute() else Path.cwd() / p).resolve()
    try:
        return str(APP_DIR / full.relative_to(DATA_ROOT.resolve()).as_posix())
    except ValueError:
        pass
    if not p.is_absolute() and ".." not in p.parts:
        return str(APP_DIR / p.as_posix())
    return str(p)


def _packages(root: Path) -> list[str]:
    """Top-level package folders ``pyproject.toml`` includes (``include = ["cluster*", ...]``)."""
    text = (root / "pyproject.toml").read_text()
    m = re.search(r"^include\s*=\s*\[(.*?)\]", text, re.M | re.S)
    names = re.findall(r'"([A-Za-z0-9_]+)\*?"', m.group(1)) if m else []
    return [n for n in names if (root / n / "__init__.py").is_file()]


def dockerfile(root: Path = DATA_ROOT) -> str:
    """The image's Dockerfile, to build from the checkout's root.

    It copies the build files, the packages, ``configs/`` and the shipped models one by one
    rather than ``COPY . .``: the context's ``.venv``, ``results``, ``.git`` (gigabytes) and
    locally trained models stay out without a ``.dockerignore``. The wheel ``pip install .``
    builds carries the configs and shipped models, so the image needs no registry setting.
    """
    if not (root / "pyproject.toml").is_file():
        raise UsageError("--kind dockerfile: render it from a checkout (the image is built from the checkout's "
                         "files; an installed package has none)")
    files = [f for f in BUILD_FILES if (root / f).is_file()]
    dirs = _packages(root) + ["configs"] + [f"artifacts/policies/{ref}" for ref in shipped_refs(root)]
    lines = [
        "# The orchestrator's image for KubeRay, rendered by `orchestrator cluster k8s --kind dockerfile`.",
        f"# Ray {ray_version()} (the version pyproject.toml pins) and this package; the RayCluster, RayService",
        f"# and RayJob run it (--image, default {default_image()}). Build from the checkout's root:",
        f"#   docker build -f <this file> -t {default_image()} .",
        "# torch comes from PyPI (its CUDA build); for CPU-only nodes add",
        "#   --extra-index-url https://download.pytorch.org/whl/cpu to the pip line.",
        f"FROM {base_image()}",
        f"WORKDIR {APP_DIR}",
        f"COPY --chown={IMAGE_OWNER} {' '.join(files)} ./",
        *[f"COPY --chown={IMAGE_OWNER} {d} {d}/" for d in dirs],
        "RUN pip install --no-cache-dir . && mkdir -p results",
    ]
    return "\n".join(lines) + "\n"
