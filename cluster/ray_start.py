"""``python -m cluster.ray_start start ...``: how the launcher runs ``ray start`` (see
:func:`cluster.ray_compat.ray_cli_main`: Ray's own command, which can also add a node to a
cluster kept on loopback)."""
from __future__ import annotations

import sys

from cluster.ray_compat import ray_cli_main

if __name__ == "__main__":
    sys.exit(ray_cli_main())
