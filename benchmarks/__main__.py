"""``python -m benchmarks``: run every ``benchmarks/bench_*.py`` (its ``main()``) in turn.

Each benchmark prints its figures next to a baseline measured in the same run, as
a ratio, because this machine is noisy: absolute numbers move, ratios much less.
``python -m benchmarks online`` runs only the benchmarks whose name contains "online".
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    wanted = argv[1:]
    names = sorted(m.name for m in pkgutil.iter_modules([str(ROOT)]) if m.name.startswith("bench_"))
    names = [n for n in names if not wanted or any(w in n for w in wanted)]
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        t = time.perf_counter()
        mod = importlib.import_module(f"benchmarks.{name}")
        rc = mod.main([]) if mod.main.__code__.co_argcount else mod.main()
        print(f"({name} took {time.perf_counter() - t:.1f} s)")
        if rc:
            return int(rc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
