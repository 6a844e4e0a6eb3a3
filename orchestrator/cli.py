"""The ``orchestrator`` command.

Sub-commands: ``simulate`` (online mode on a cluster config and a workload or a
trace, or ``--mode packing`` to reproduce the FGD paper's packing experiment) and
``policies`` (list the registered policies). Bad input exits with status 2 and a
message that names the file or field; nothing prints a traceback for it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.config import ConfigError, UsageError
from scheduler.task import TaskError

if TYPE_CHECKING:
    import pandas as pd

EXIT_USAGE = 2


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.mode == "packing":
        return _simulate_packing(args)
    if args.markdown:
        raise UsageError("--markdown: only with --mode packing")
    from cluster.alibaba import load_cluster_any
    from scheduler.objective import load_objective
    from simulations.compare import compare_policies, parse_policies, print_table

    policies = parse_policies(args.policies)
    spec = load_cluster_any(args.cluster)
    objective = load_objective(args.objective) if args.objective else load_objective()
    if args.trace:
        from simulations.traces import load_alibaba_pods

        tasks = list(load_alibaba_pods(args.trace, time_compression=args.time_compression, limit=args.limit))
        source = args.trace
        args.seed = 0 if args.seed is None else args.seed
    else:
        from simulations.workloads import generate, load_workload

        wl = load_workload(args.workload)
        if args.seed is None:
            args.seed = wl.seed
        tasks = generate(wl, seed=args.seed, load_factor=args.load_factor)
        source = args.workload
    if not tasks:
        raise UsageError("the workload produced no tasks")
    if args.calibration:
        from simulations.calibration import calibrated

        spec = calibrated(spec, args.calibration)
    print(f"cluster {spec.name} ({len(spec.nodes)} nodes), {len(tasks)} tasks from {source}, seed {args.seed}")
    table, _ = compare_policies(spec, tasks, policies, seed=args.seed, objective=objective, out=args.out,
                                meta={"workload": str(source), "cluster_file": str(args.cluster),
                                      "calibration": str(args.calibration) if args.calibration else None})
    print_table(table)
    print(f"records and summary written to {args.out}/")
    return 0


def _simulate_packing(args: argparse.Namespace) -> int:
    from simulations.compare import parse_policies, print_table
    from simulations.packing import parse_seeds, reproduce
    from simulations.published import published_note

    if args.calibration:
        raise UsageError("--calibration: online mode only (packing has no timing)")
    if not args.trace:
        raise UsageError("--mode packing needs --trace (an Alibaba openb pod list)")
    pods = Path(args.trace)
    nodes = Path(args.nodes) if args.nodes else pods.with_name("openb_node_list_gpu_node.csv")
    for flag, p in (("--trace", pods), ("--nodes", nodes)):
        if not p.is_file():
            raise UsageError(f"{flag}: no such file: {p}")
    try:
        seeds = parse_seeds(args.seeds or str(args.seed))
    except ValueError:
        raise UsageError(f"--seeds: expected e.g. 42-51 or 1,2,5, got {args.seeds!r}") from None
    policies = parse_policies(args.policies)
    df = reproduce(pods, nodes, policies, seeds, progress=True, jobs=args.jobs)
    print(f"Unallocated GPU % when arrived GPU demand = 100% of capacity ({len(seeds)} seeds, median). "
          + published_note(pods))
    print_table(df[["median", "published", "diff", "seconds"]])
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "packing.csv")
        print(f"per-seed table written to {out / 'packing.csv'}")
    if args.markdown:
        _packing_page(args.markdown, df, seeds, args.argv, published_note(pods))
    return 0


def _packing_page(path: str, df: pd.DataFrame, seeds: list[int], argv: list[str], note: str) -> None:
    """The reproduction as a dated page: per-seed values, the median and the paper's figure."""
    from orchestrator import docs_page

    lines = docs_page.header('Reproducing "Beware of Fragmentation" (FGD, ATC 2023)',
                             docs_page.command_line("orchestrator", argv))
    lines += [f"Unallocated GPU % of capacity when the arrived GPU demand reaches 100% of capacity, per "
              f"policy and seed, and the median over the {len(seeds)} seeds (lower is better). {note} "
              "Seconds: mean wall time of one replay.", ""]
    per_seed = df.rename(columns={s: f"seed {s}" for s in seeds})
    lines += docs_page.table(per_seed, "{:.2f}") + [""]
    lines += ["The paper's procedure (`simulations/packing.py`): the 1,213 GPU nodes of the Alibaba "
              "`openb` node list (6,212 GPUs, milli-shared); the pods shuffled by seed and inflated with "
              "clones to 1.3x capacity; each pod placed once or dropped, none leaves.", "",
              "The paper's full run, 6 policies x 10 seeds (`make reproduce`; `make docs` writes this page with it):", "", "```",
              "orchestrator simulate --mode packing --trace ../shared/traces/alibaba_gpu_v2023/"
              "openb_pod_list_default.csv \\",
              "    --policies random,dot-product,gpu-clustering,gpu-packing,best-fit,fgd --seeds 42-51 --jobs 2 "
              "--markdown docs/fgd_reproduction.md", "```", "",
              "Data: Alibaba cluster-trace-gpu-v2023 (alibaba/clusterdata), released for research."]
    docs_page.write(path, lines)


def cmd_policies(args: argparse.Namespace) -> int:
    from scheduler.policy import available_policies

    print("\n".join(available_policies()))
    return 0


#: Sub-commands that live with the package they drive, by the command(s) each adds: ``module:function``
#: where the function takes the sub-parsers object and adds its parser(s). A command line that names
#: one imports only its module, so ``orchestrator cluster up`` never loads pandas, SQLAlchemy or
#: RLlib for the other commands' sake; ``--help`` (no command) imports them all to list them.
PLUGINS: dict[str, tuple[str, ...]] = {
    "orchestrator.cli_train:add_train": ("train", "policy", "evaluate"),
    "cluster.cli:add_cluster": ("cluster",),
    "replays.sim_vs_real:add_compare": ("compare-sim-real",),
    "serve_app.cli:add_serve": ("serve",),
    "serve_app.keys_cli:add_keys": ("keys",),
    "capacity.cli:add_capacity": ("capacity",),
    "simulations.calibration_cli:add_calibrate": ("calibrate",),
    "simulations.history_replay:add_counterfactual": ("counterfactual",),
    "rl_env.retrain:add_retrain": ("retrain",),
}


def add_simulate(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("simulate", help="compare placement policies in the simulator")
    s.add_argument("--mode", choices=["online", "packing"], default="online",
                   help="online: tasks arrive and finish on a cluster (latency, cost, SLO); packing: the FGD "
                        "paper's experiment (pods placed until the GPUs are full, unallocated GPU %%)")
    s.add_argument("--cluster", default="configs/cluster/local.yaml",
                   help="cluster topology YAML (a shipped name such as this one works from any directory)")
    s.add_argument("--workload", default="configs/workloads/mixed.yaml", help="workload YAML")
    s.add_argument("--trace", help="Alibaba v2023 pod list CSV (replaces --workload)")
    s.add_argument("--nodes", help="packing mode: node list CSV (default: beside the trace)")
    s.add_argument("--time-compression", type=float, default=1.0,
                   help="trace replay: divide the trace's times by this (higher = more load)")
    s.add_argument("--limit", type=int, help="use only the first N trace tasks")
    s.add_argument("--load-factor", type=float,
                   help="multiply the workload's arrival rate (default: the workload file's load_factor)")
    s.add_argument("--objective", help="objective weights YAML (default configs/objective.yaml)")
    s.add_argument("--calibration", metavar="PROFILE",
                   help="online mode: a profile from `orchestrator calibrate` (node speeds, work per kind, network)")
    s.add_argument("--policies", default="round-robin,least-loaded,cheapest-feasible,fastest-feasible,oracle",
                   help="comma-separated policy names (`orchestrator policies` lists them; rf, rl, "
                        "rf:1, rl:2 name learned ones)")
    s.add_argument("--seed", type=int, default=None,
                   help="simulation seed (default: the workload file's seed; 0 for traces)")
    s.add_argument("--seeds", help="packing mode: e.g. 42-51")
    s.add_argument("--jobs", type=int, default=1, help="packing mode: parallel processes")
    s.add_argument("--out", default="results/latest", help="folder for the records and the summary")
    s.add_argument("--markdown", metavar="PATH",
                   help="packing mode: also write the table to this dated page (e.g. docs/fgd_reproduction.md)")
    s.set_defaults(func=cmd_simulate)
    pl = sub.add_parser("policies", help="list the registered policies")
    pl.set_defaults(func=cmd_policies)


class _ShowDefaults(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when it has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        shown = not (d is None or d is False or d is argparse.SUPPRESS or d == [])
        if shown and "%(default)" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """Every (sub-)command's help shows each option's default; the plugins' parsers are this class too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _ShowDefaults)
        super().__init__(*args, **kwargs)


def version() -> str:
    """The installed distribution's version (``pyproject.toml``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("ai-workload-orchestrator")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _command(argv: list[str]) -> str | None:
    """The sub-command a command line names, or None. Only its first word counts: the top-level options
    (-h, --version) end the parse, so a line that starts with one needs no plugin or all of them."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given a command line, only what it needs: the plugin of the command it names,
    none for ``simulate``, ``policies`` or ``--version``, and every plugin otherwise (``--help`` and an
    unknown command list every choice)."""
    import importlib

    p = Parser(prog="orchestrator", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    add_simulate(sub)
    named = _command(argv) if argv is not None else None
    if named in sub.choices or (argv and argv[0] == "--version"):  # a command of this module's own
        wanted: list[str] = []
    else:
        wanted = [m for m, commands in PLUGINS.items() if named in commands] or list(PLUGINS)
    for plugin in wanted:
        module, func = plugin.split(":")
        getattr(importlib.import_module(module), func)(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except Exception as exc:
        # a RegistryError comes only from a loaded model registry: looked up, not imported (numpy and
        # the feature module), so commands that never touch a model start without them
        registry = sys.modules.get("scheduler.model_registry")
        usage = (UsageError, ConfigError, TaskError) + ((registry.RegistryError,) if registry else ())
        if not isinstance(exc, usage):
            raise
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
