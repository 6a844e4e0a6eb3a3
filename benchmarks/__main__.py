"""``python -m benchmarks``: run every ``benchmarks/bench_*.py`` (its ``main()``) in turn.

Each benchmark prints its figures next to a baseline measured in the same run, as
a ratio, because this machine is noisy: absolute numbers move, ratios much less.
``python -m benchmarks online`` runs only the benchmarks whose name contains "online";
``--markdown docs/performance.md`` also writes what each printed to a dated page.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import pkgutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy, so a benchmark prints as usual while its page is built."""

    def __init__(self, out: io.TextIOBase) -> None:
        self.out, self.kept = out, io.StringIO()

    def write(self, s: str) -> int:
        self.out.write(s)
        return self.kept.write(s)

    def flush(self) -> None:
        self.out.flush()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="run only benchmarks whose name contains one of these")
    p.add_argument("--markdown", metavar="PATH", help="also write each benchmark's output to this dated page")
    args = p.parse_args(argv[1:])
    every = sorted(m.name for m in pkgutil.iter_modules([str(ROOT)]) if m.name.startswith("bench_"))
    names = [n for n in every if not args.names or any(w in n for w in args.names)]
    sections: list[str] = []
    rc = 0
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        t = time.perf_counter()
        tee = _Tee(sys.stdout)
        with contextlib.redirect_stdout(tee):
            mod = importlib.import_module(f"benchmarks.{name}")
            rc = mod.main([]) if mod.main.__code__.co_argcount else mod.main()
        took = time.perf_counter() - t
        print(f"({name} took {took:.1f} s)")
        doc = (mod.__doc__ or "").strip().splitlines()[0]
        sections += [f"## {name}", "", doc, "", f"Took {took:.0f} s.", "", "```", tee.kept.getvalue().strip("\n"),
                     "```", ""]
        if rc:
            sections += [f"**{name} exited with status {rc}**; the benchmarks after it did not run.", ""]
            break
    if args.markdown:
        _page(args.markdown, argv[1:], sections, [n for n in every if n not in names])
    return int(rc or 0)


def _page(path: str, argv: list[str], sections: list[str], skipped: list[str]) -> None:
    from orchestrator import docs_page

    lines = docs_page.header("Performance", docs_page.command_line("python -m benchmarks", argv))
    lines += ["What each benchmark printed, each figure beside a baseline timed in the same run "
              "(ratios move much less than absolute figures on a shared machine).", ""]
    if skipped:
        lines += ["Not run for this page: " + ", ".join(skipped) + " (`python -m benchmarks "
                  + " ".join(n.removeprefix("bench_") for n in skipped) + "`).", ""]
    docs_page.write(path, lines + sections)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
