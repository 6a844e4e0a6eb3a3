"""``orchestrator capacity forecast|backtest|recommend|strategies|apply``: demand forecast, planned for, scaled.

``forecast`` fits every model on all the data and writes the next horizon with prediction
intervals; ``backtest`` scores the models from rolling origins (MAE, MAPE, MASE, interval
coverage) beside the seasonal-naive baseline. Several sources may be given at once; each keeps
its own interval and horizons unless ``--interval`` / ``--horizons`` say otherwise. ``recommend``
searches node counts and MIG layouts by simulation (:mod:`capacity.recommend`); ``strategies``
compares scaling strategies over days (:mod:`capacity.strategies`); ``apply`` starts and drains
the local cluster's raylets to a recommendation's node counts (:mod:`capacity.apply`). Bad flags
raise :class:`UsageError` (exit 2, naming the flag); a bad file a :class:`ConfigError` (exit 2).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from capacity.models import require_forecasters
from capacity.series import GROUPINGS, DemandSeries, parse_interval
from cluster.config import ConfigError, UsageError

EXIT_USAGE = 2


@dataclass(frozen=True)
class Defaults:
    """A source kind's resolution, horizons and test span when the flags leave them out."""

    interval: str
    horizons: str
    test_span: str


SOURCES = {"workload": Defaults("1h", "1h,1D", "7D"), "trace": Defaults("1D", "1D,7D", "28D"),
           "azure": Defaults("10s", "1min,5min", "20min"), "records": Defaults("1h", "1h,1D", "7D")}


def _load_records(path: str) -> list[dict]:
    """History rows as JSON lines or one JSON array (what a ``--history URL`` will fetch)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, "<file>", "no such file")
    text = p.read_text().strip()
    try:
        rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError as exc:
        raise ConfigError(p, "<file>", f"not JSON lines or a JSON array: {exc}") from None
    return rows


def load_source(kind: str, path: str, args: argparse.Namespace, interval: pd.Timedelta) -> DemandSeries:
    from capacity import sources

    if kind == "workload":
        duration = parse_interval(args.duration, "--duration").total_seconds() if args.duration else None
        return sources.from_workload(path, interval=interval, seed=args.seed, load_factor=args.load_factor,
                                     duration_s=duration)
    if kind == "trace":
        return sources.from_alibaba(path, interval=interval)
    if kind == "azure":
        return sources.from_azure(path, interval=interval)
    try:
        return sources.from_history(_load_records(path), interval=interval, source=path)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(path, "<records>", f"not task records as the history stores them: {exc!r}") from None


def _steps(text: str, interval: pd.Timedelta, flag: str) -> int:
    td = parse_interval(text, flag)
    if td % interval != pd.Timedelta(0):
        raise UsageError(f"{flag}: {text} is not a whole number of intervals of {interval}")
    return int(td // interval)


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise UsageError(f"--levels: expected integers such as 80,95, got {text!r}") from None
    if not levels or not all(0 < lv < 100 for lv in levels):
        raise UsageError(f"--levels: each level is a percentage in (0, 100), got {text!r}")
    return levels


@dataclass(frozen=True)
class Job:
    """One source, resolved: its label, demand, series to forecast, interval and horizons (steps)."""

    label: str
    demand: DemandSeries
    series: pd.DataFrame
    horizons: tuple[int, ...]
    test_span: int


def jobs(args: argparse.Namespace) -> list[Job]:
    """Check every flag before any data is read; then load each source."""
    given = [(k, getattr(args, k)) for k in SOURCES if getattr(args, k)]
    if not given:
        raise UsageError("give a source: --workload FILE, --trace FILE, --azure PATH or --records FILE")
    groupings = [g.strip() for g in args.series.split(",") if g.strip()]
    bad = [g for g in groupings if g not in GROUPINGS]
    if bad or not groupings:
        raise UsageError(f"--series: unknown grouping {bad[0] if bad else args.series!r} (known: {', '.join(GROUPINGS)})")
    if args.load_factor is not None and not args.load_factor > 0:
        raise UsageError(f"--load-factor: must be > 0, got {args.load_factor}")
    if getattr(args, "max_windows", 1) < 1:
        raise UsageError(f"--max-windows: must be >= 1, got {args.max_windows}")
    plans = []
    for kind, path in given:
        d = SOURCES[kind]
        interval = parse_interval(args.interval or d.interval)
        horizons = tuple(_steps(h, interval, "--horizons") for h in (args.horizons or d.horizons).split(",") if h.strip())
        if not horizons or min(horizons) < 1:
            raise UsageError(f"--horizons: at least one horizon of one interval or more, got {args.horizons!r}")
        span = _steps(args.test_span or d.test_span, interval, "--test-span") if hasattr(args, "test_span") else 0
        if hasattr(args, "test_span") and span < max(horizons):
            raise UsageError(f"--test-span: shorter than the longest horizon ({span} < {max(horizons)} intervals)")
        plans.append((kind, path, interval, horizons, span))
    out = []
    for kind, path, interval, horizons, span in plans:
        demand = load_source(kind, path, args, interval)
        label = f"{kind}:{Path(path).stem}"
        out.append(Job(label, demand, demand.series(groupings), horizons, span))
    return out


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def cmd_backtest(args: argparse.Namespace) -> int:
    require_forecasters()
    from tqdm import tqdm

    from capacity import page
    from capacity.backtest import backtest
    from capacity.forecast import parse_models

    models, levels = parse_models(args.models), _levels(args.levels)
    t_start = time.perf_counter()
    work = jobs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=sum(len(j.horizons) for j in work) * len(models), desc="backtest", unit="fit", file=sys.stderr)
    results = []
    try:
        for job in work:
            bar.set_postfix_str(job.label)
            bt = backtest(job.series, job.demand.interval, job.horizons, test_span=job.test_span, models=models,
                          levels=levels, max_windows=args.max_windows, progress=lambda _: bar.update(1))
            job.demand.frame.to_csv(out / f"demand_{_slug(job.label)}.csv", index=False)
            results.append((job, bt))
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    pd.concat([bt.table.assign(source=j.label) for j, bt in results]).to_csv(out / "backtest.csv")
    pd.concat([bt.cv.assign(source=j.label) for j, bt in results]).to_csv(out / "backtest_forecasts.csv", index=False)
    pd.concat([bt.best().assign(source=j.label) for j, bt in results]).to_csv(out / "backtest_best.csv")
    for job, bt in results:
        print(f"\n{job.label}: {job.demand.n_intervals} intervals of {job.demand.interval}, "
              f"{job.series['unique_id'].nunique()} series")
        print(page.error_table(bt.table, models).round(3).to_string())
    print(f"\nbacktest tables written to {out}/ ({seconds:.0f} s)")
    if args.markdown:
        from capacity.report import backtest_page

        page.write(args.markdown, backtest_page(results, models, levels, _command(args), seconds))
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    require_forecasters()
    from tqdm import tqdm

    from capacity import page
    from capacity.forecast import forecast, parse_models

    models, levels = parse_models(args.models), _levels(args.levels)
    work = jobs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for job in tqdm(work, desc="forecast", unit="source", file=sys.stderr):
        fc = forecast(job.series, job.demand.interval, max(job.horizons), models, levels)
        frames.append(fc.frame.assign(source=job.label))
        job.demand.frame.to_csv(out / f"demand_{_slug(job.label)}.csv", index=False)
    allfc = pd.concat(frames, ignore_index=True)
    allfc.to_csv(out / "forecast.csv", index=False)
    hi = f"hi_{max(levels)}"
    summary = allfc.groupby(["source", "unique_id", "model"]).agg(start=("ds", "min"), end=("ds", "max"),
                                                                  mean_total=("mean", "sum"), peak_mean=("mean", "max"),
                                                                  **{f"peak_{hi}": (hi, "max")})
    print(summary.round({c: 1 for c in summary.columns if c not in ("start", "end")}).to_string())
    print(f"forecasts written to {out / 'forecast.csv'}")
    if args.markdown:
        lines = page.header("Capacity: demand forecast", _command(args))
        lines += [f"Forecasts of each series over its horizon, with the {max(levels)}% upper bound "
                  f"(rows of `{out / 'forecast.csv'}`).", ""] + page.table(summary, "{:,.1f}")
        page.write(args.markdown, lines)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from capacity import recommend as rec

    spec, wl, policy, seeds = _recommend_inputs(args)
    trough = None
    if args.forecast:
        try:
            fc = pd.read_csv(args.forecast)
            peak, trough = rec.plan_rates(fc, args.level, args.model, args.forecast_source)
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"--forecast: {args.forecast}: {exc}") from None
        where = f"the {args.level}% upper bound of {args.model}'s forecast at its peak ({args.forecast})"
    else:
        peak = args.rate or wl.effective_rate
        where = "--rate" if args.rate else f"the workload's rate ({wl.name})"
    print(f"planning for {peak:.2f} arrivals/s ({where}), {wl.name}'s mix, policy {policy}, SLO misses <= "
          f"{args.slo_miss:g}%, seeds {','.join(map(str, seeds))}, {args.window:g} s windows", file=sys.stderr)
    window = args.window
    if not peak > 0:
        raise UsageError(f"--forecast: the rate to plan for is {peak:g} arrivals/s: nothing to plan for")
    high = rec.recommend(spec, rec.demand_streams(wl, peak, window, seeds), policy, args.slo_miss / 100.0,
                         args.max_nodes, not args.no_layouts, seeds=seeds)
    low = None
    if trough is not None and 0 < trough < peak:
        low = rec.recommend(spec, rec.demand_streams(wl, trough, window, seeds), policy, args.slo_miss / 100.0,
                            args.max_nodes, not args.no_layouts, seeds=seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster.yaml").write_text(rec.cluster_yaml(high.spec))
    (out / "cluster.diff").write_text(rec.cluster_diff(spec, high.spec))
    groups = rec.replica_bounds(low.spec if low else high.spec, high.spec)
    (out / "worker_groups.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    (out / "request_resources.json").write_text(json.dumps({"bundles": rec.autoscaler_bundles(high.spec)}, indent=1))
    from capacity.live import RECOMMENDATION_FILE, recommendation_document

    doc = recommendation_document(high, low, peak, trough, cluster=str(args.cluster), workload=str(args.workload),
                                  policy=policy, slo_miss_pct=args.slo_miss, seeds=seeds, window_s=window,
                                  diff=rec.cluster_diff(spec, high.spec), worker_groups=groups,
                                  bundles=rec.autoscaler_bundles(high.spec), command=_command(args))
    tmp = out / f".{RECOMMENDATION_FILE}.tmp"  # a router reading it never sees half a file
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / RECOMMENDATION_FILE)
    tried = pd.DataFrame([rec.what_if_row(w) for w in high.tried])
    tried.to_csv(out / "whatifs.csv", index=False)
    table = rec.summary_table(high, low, peak, trough)
    print(table.to_string())
    if not high.feasible:
        print(f"the search found no cluster within --max-nodes {args.max_nodes} per pool that met {args.slo_miss:g}% "
              f"misses: the one with the fewest misses is written", file=sys.stderr)
    print(f"{len(high.tried)} what-if clusters in {high.search_s:.1f} s; written to {out}: cluster.yaml, "
          f"cluster.diff, worker_groups.yaml, request_resources.json, recommendation.json, whatifs.csv")
    if args.markdown:
        from capacity import page

        lines = page.header("Capacity: recommendation by simulation", _command(args))
        lines += [f"Planning for {peak:.2f} arrivals/s ({where}) with {wl.name}'s mix on {spec.name}; policy "
                  f"{policy}; target: SLO misses at most {args.slo_miss:g}%; seeds {','.join(map(str, seeds))}, "
                  f"{window:g} s windows. {len(high.tried)} what-if clusters in {high.search_s:.1f} s.", ""]
        lines += page.table(table, "{:,.3f}") + ["", "```diff", rec.cluster_diff(spec, high.spec).rstrip(), "```"]
        page.write(args.markdown, lines)
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    from capacity import strategies as st

    from capacity.forecast import parse_models

    args.rate, args.forecast = None, None
    spec, wl, policy, seeds = _recommend_inputs(args)
    step = parse_interval(args.step, "--step")
    if pd.Timedelta("1h") % step != pd.Timedelta(0):
        raise UsageError(f"--step: must divide an hour (e.g. 5min, 10min, 1h), got {args.step}")
    if args.days < 1:
        raise UsageError(f"--days: must be >= 1, got {args.days}")
    if args.history_days < 2:
        raise UsageError(f"--history-days: at least 2 days of history to forecast from, got {args.history_days}")
    if args.load_factor is not None and not args.load_factor > 0:
        raise UsageError(f"--load-factor: must be > 0, got {args.load_factor}")
    # each target once; one equal to --slo-miss is the plain rows already
    fmiss = [m for m in dict.fromkeys(_percentages(args.forecast_slo_miss, "--forecast-slo-miss")) if m != args.slo_miss]
    try:
        known = parse_models(args.model)
    except UsageError:
        known = ()
    if args.model not in known:
        raise UsageError(f"--model: one of snaive, ets, mstl, lgbm, got {args.model!r}")
    require_forecasters()
    print(f"{', '.join(st.STRATEGIES)} over the last {args.days} of {args.history_days + args.days} days of "
          f"{wl.name}; policy {policy}; SLO misses <= {args.slo_miss:g}%"
          f"{''.join(f', forecast plans also <= {m:g}%' for m in fmiss)}; {args.step} steps; node start delays "
          f"{st.Delays().cpu_s:g} s (CPU), {st.Delays().gpu_s:g} s (GPU)", file=sys.stderr)
    res = st.compare(spec, wl, policy, args.slo_miss / 100.0, days=args.days, history_days=args.history_days, step=step,
                     model=args.model, level=args.level, seed=seeds[0], load_factor=args.load_factor,
                     window_s=args.window, max_nodes=args.max_nodes, layouts=not args.no_layouts,
                     forecast_miss=[m / 100.0 for m in fmiss],
                     progress=lambda m: print(m, file=sys.stderr) if args.verbose else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"strategy": n, "start": s.start, "rate": s.rate, **{f"nodes_{p}": c for p, c in s.counts},
             "cost_$": s.cost, "tasks": s.tasks, "missed": s.missed, "idle_$": s.idle_cost}
            for n, steps in res.steps.items() for s in steps]
    pd.DataFrame(rows).to_csv(out / "strategy_steps.csv", index=False)
    table = res.summary
    table.to_csv(out / "strategies.csv")
    checks = st.target_lines(table)
    print(table.round(2).to_string())
    print("\n".join(checks))
    took = ", ".join(f"{k} {v:.0f} s" for k, v in res.seconds.items())
    lays = st.layouts_text(res.layouts, spec, res.layouts_note)
    print(f"MIG layouts: {lays}; {len(res.plans)} plans; sub-hour peak factor {res.peak_factor:.3f}; took {took}; "
          f"written to {out}")
    if args.markdown:
        from capacity import page

        lines = page.header("Capacity: scaling strategies compared", _command(args))
        plans_for = "".join(f"; rows '@{m:g}%': the forecast strategies and hindsight with plans keeping misses at "
                            f"most {m:g}% (and forecast+reactive reacting above {m:g}%)" for m in fmiss)
        lines += [f"The last {args.days} days of {args.history_days + args.days} days of {wl.name} on {spec.name}, "
                  f"in {args.step} steps; policy {policy}; every plan keeps SLO misses at most {args.slo_miss:g}% in its "
                  f"what-if runs{plans_for}; node start delays {st.Delays().cpu_s:g} s for CPU nodes and {st.Delays().gpu_s:g} s "
                  f"for GPU nodes (billed while they boot), each plan held on {st.PLAN_STREAMS} what-if streams of its "
                  f"rate; the forecast strategy plans each hour for the {args.level}% bound of {args.model}'s forecast "
                  f"times "
                  f"{res.peak_factor:.3f}, the {args.level}% quantile of a step's rate over its hour's mean in the "
                  f"history (`capacity.strategies.sub_hour_peak`); forecast+reactive keeps that plan and adds a node "
                  f"where tasks queued longest when a step's SLO misses exceeded the target (one boot at a time per "
                  f"pool), removed once a step would have met the target without it; {st.HINDSIGHT}. MIG layouts, "
                  f"the same for every strategy: {lays}. {st.CAVEAT} Took {took}.", ""]
        lines += page.table(table, "{:,.2f}") + [""] + [f"- {c}" for c in checks]
        page.write(args.markdown, lines)
    return 0


def _percentages(text: str | None, flag: str) -> list[float]:
    """``2,1.5`` as [2.0, 1.5]: each a percentage in [0, 100)."""
    out = []
    for item in text.split(",") if text else []:
        try:
            v = float(item)
        except ValueError:
            raise UsageError(f"{flag}: {item!r} is not a number (e.g. 2,1.5)") from None
        if not 0 <= v < 100:
            raise UsageError(f"{flag}: a percentage in [0, 100), got {item.strip()}")
        out.append(v)
    return out


def _pool_counts(items: list[str] | None) -> dict[str, int]:
    out = {}
    for item in items or []:
        pool, sep, n = item.partition("=")
        if not sep or not pool or not n.strip().isdigit():
            raise UsageError(f"--pool {item!r}: expected POOL=N, e.g. cloud=2")
        if pool.strip() in out:
            raise UsageError(f"--pool {item!r}: pool {pool.strip()} given twice")
        out[pool.strip()] = int(n)
    return out


def cmd_apply(args: argparse.Namespace) -> int:
    from capacity import apply as ap
    from cluster import launcher
    from cluster.topology import load_cluster
    from serve_app.client import RouterClient, RouterError, admin_token

    counts = _pool_counts(args.pool)
    if args.keep_layouts and not args.recommendation:
        raise UsageError("--keep-layouts: only with --recommendation (a `capacity recommend` folder)")
    if not args.drain_timeout > 0:
        raise UsageError(f"--drain-timeout: must be > 0 seconds, got {args.drain_timeout:g}")
    try:
        st, slots = launcher.running_cluster(args.state_dir)
    except launcher.LauncherError as exc:
        raise UsageError(f"--state-dir: {exc}") from None
    target = {}
    if args.recommendation:
        from capacity.live import RECOMMENDATION_FILE

        path = Path(args.recommendation)
        folder, path = (path, path / "cluster.yaml") if path.is_dir() else (path.parent, path)
        try:
            as_now = ap.counts_with_layouts_as_now(folder / RECOMMENDATION_FILE) if args.keep_layouts else None
            target = as_now if as_now is not None else ap.target_counts(load_cluster(path), slots)
        except ap.LayoutChange as exc:
            hint = ("" if args.keep_layouts else "; --keep-layouts applies the cheapest cluster the search found "
                    "with the layouts as they are")
            raise UsageError(f"--recommendation {path}: {exc}{hint}") from None
        except ap.ApplyError as exc:
            raise UsageError(f"--recommendation {path}: {exc}") from None
    target.update(counts)
    if not target:
        raise UsageError("nothing to apply: give --recommendation (a `capacity recommend` folder or its cluster.yaml) "
                         "or --pool POOL=N")
    try:
        plan = ap.plan(slots, launcher.running_nodes(st), target)
    except ap.ApplyError as exc:
        raise UsageError(str(exc)) from None
    rows = [{"pool": p, "nodes now": plan.before[p], "nodes after": plan.after[p]} for p in plan.after]
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"start: {', '.join(plan.start) or '-'}; drain and stop: {', '.join(plan.drain) or '-'}; "
          f"${plan.cost_before:.2f}/h -> ${plan.cost_after:.2f}/h")
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    router = None
    try:
        token = admin_token(args.token_file)
    except ValueError as exc:
        if plan.drain:
            raise UsageError(str(exc)) from None
        token = None  # starting needs none; a drain an earlier run left does (below)
    client = RouterClient(args.router, token=token, retries=2)
    try:
        client.health()
        router = client
    except RouterError as exc:
        if plan.drain:
            raise UsageError(f"--router {args.router}: {exc}; nodes leave only through its drain") from None
        print(f"the router at {args.router} does not answer: starting without waiting for it to place there",
              file=sys.stderr)
    try:
        stale = ap.stale_drains(router, plan) if router is not None else []
        if plan.empty and not stale:
            print("nothing to do")
            return 0
        if stale and token is None:
            raise UsageError(f"the router still drains {', '.join(stale)} (an earlier apply did not finish): the admin "
                             "token is needed to end it; set ORCH_ADMIN_TOKEN or give --token-file")
        out = ap.apply(plan, router=router, drain_timeout_s=args.drain_timeout, force=args.force,
                       start_nodes=lambda names: launcher.start_nodes(names, args.state_dir),
                       stop_node=lambda name: launcher.stop_node(name, args.state_dir),
                       progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ap.ApplyError as exc:
        raise UsageError(str(exc)) from None
    except (TimeoutError, RouterError, launcher.LauncherError) as exc:
        print(f"orchestrator: capacity apply: {exc}", file=sys.stderr)
        return 1
    if stale:
        print(f"ended the drain an earlier run left on {', '.join(stale)}", file=sys.stderr)
    print(json.dumps({"started": out.started, "stopped": out.stopped, "after": plan.after,
                      "cost_per_hour": round(plan.cost_after, 4),
                      "seconds": {k: round(v, 1) for k, v in out.seconds.items()}}, indent=1))
    return 0


def _recommend_inputs(args: argparse.Namespace):
    from cluster.alibaba import load_cluster_any
    from cluster.package_data import data_path
    from simulations.packing import parse_seeds
    from simulations.workloads import load_workload

    if args.rate is not None and not args.rate > 0:
        raise UsageError(f"--rate: must be > 0 arrivals/s, got {args.rate}")
    if args.rate is not None and args.forecast:
        raise UsageError("--rate and --forecast: give one")
    if not 0 <= args.slo_miss < 100:
        raise UsageError(f"--slo-miss: a percentage in [0, 100), got {args.slo_miss}")
    if not args.window > 0:
        raise UsageError(f"--window: must be > 0 seconds, got {args.window}")
    if args.max_nodes < 1:
        raise UsageError(f"--max-nodes: must be >= 1, got {args.max_nodes}")
    if not 0 < args.level < 100:
        raise UsageError(f"--level: a percentage in (0, 100), got {args.level}")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        raise UsageError(f"--seeds: {exc}") from None
    from scheduler.policy import available_policies

    from scheduler.policy import make_policy

    policy = args.policy or _router_policy()
    if policy.partition(":")[0] not in set(available_policies()):
        raise UsageError(f"--policy: unknown policy {policy!r} (orchestrator policies lists them)")
    try:
        make_policy(policy)  # a learned one's registry version, or a name the factory refuses
    except Exception as exc:  # noqa: BLE001 - whatever the factory raises, the flag is what the user fixes
        raise UsageError(f"--policy: {policy}: {exc}") from None
    spec = load_cluster_any(data_path(args.cluster))
    wl = load_workload(data_path(args.workload))
    from capacity.recommend import current_shape

    over = [p for p, n in current_shape(spec).counts if n > args.max_nodes]
    if over:
        raise UsageError(f"--max-nodes: pools {', '.join(over)} of {spec.name} already hold more than {args.max_nodes}")
    return spec, wl, policy, seeds


def _router_policy() -> str:
    """The policy the router places with by default (``configs/serve.yaml``): what the plan must hold under."""
    from cluster.package_data import data_path
    from cluster.serve_config import router_args

    return str(router_args(data_path("configs/serve.yaml")).get("policy", "fastest-feasible"))


def _command(args: argparse.Namespace) -> str:
    return " ".join(["orchestrator", *(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))])


def _common(p: argparse.ArgumentParser, backtest: bool) -> None:
    src = p.add_argument_group("sources (one or more)")
    src.add_argument("--workload", metavar="FILE", help="workload YAML (e.g. configs/workloads/weekly_mixed.yaml)")
    src.add_argument("--trace", metavar="FILE", help="Alibaba openb pod list CSV (series by creation_time)")
    src.add_argument("--azure", metavar="PATH", help="Azure LLM inference 2023 CSV, or its folder for both services")
    src.add_argument("--records", metavar="FILE", help="history task records: JSON lines or a JSON array of rows")
    p.add_argument("--interval", help="series resolution such as 1h, 1D, 10s (default per source: workload and "
                                      "records 1h, trace 1D, azure 10s)")
    p.add_argument("--horizons", help="comma-separated horizons, whole numbers of intervals (default per source: "
                                      "1h,1D; 1D,7D; 1min,5min)" + ("" if backtest else "; the longest is forecast"))
    if backtest:
        p.add_argument("--test-span", help="backtest origins fill this last span of the data (default per source: "
                                           "7D; 28D; 20min)")
        p.add_argument("--max-windows", type=int, default=72, help="most origins per horizon")
    p.add_argument("--models", default="snaive,ets,mstl,lgbm",
                   help="comma-separated: snaive, ets, mstl, lgbm (the seasonal-naive baseline always runs)")
    p.add_argument("--levels", default="80,95", help="prediction interval levels, percent")
    p.add_argument("--series", default="totals,kinds,shares",
                   help="which series: totals (each metric), kinds (arrivals per kind), pools (arrivals per "
                        "pool), shares (GPU-seconds per share)")
    p.add_argument("--seed", type=int, help="workload seed (default: the file's)")
    p.add_argument("--load-factor", type=float, help="workload rate multiplier (default: the file's)")
    p.add_argument("--duration", help="workload span to draw, e.g. 7D (default: the file's duration_s)")
    p.add_argument("--out", default="results/capacity", help="folder for the CSVs")
    p.add_argument("--markdown", metavar="PATH", help="also write a dated page (e.g. docs/capacity.md)")


def _plan_flags(p: argparse.ArgumentParser, seeds: str, seeds_help: str, window: float) -> None:
    """The what-if flags that recommend and strategies share."""
    p.add_argument("--slo-miss", type=float, default=5.0, help="most SLO misses a plan allows, percent of tasks")
    p.add_argument("--policy", help="placement policy of the what-if runs (default: the router's, configs/serve.yaml)")
    p.add_argument("--seeds", default=seeds, help=seeds_help)
    p.add_argument("--window", type=float, default=window, help="seconds of arrivals per what-if run")
    p.add_argument("--max-nodes", type=int, default=8, help="most nodes per pool")


def _recommend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", default="configs/cluster/local.yaml", help="cluster topology YAML to start from")
    p.add_argument("--workload", default="configs/workloads/gpu_heavy.yaml", help="workload YAML whose task mix is planned for")
    p.add_argument("--rate", type=float, help="arrivals per second to plan for (default: the workload's own rate)")
    p.add_argument("--forecast", metavar="CSV", help="plan for the peak of a `capacity forecast` table (forecast.csv): "
                                                    "its total-arrivals upper bound; the trough sets minReplicas")
    p.add_argument("--forecast-source", help="which source of the forecast table, when it holds several")
    p.add_argument("--level", type=int, default=95, help="upper-bound level of --forecast, percent")
    p.add_argument("--model", default="mstl", help="forecast model whose bound is planned for")
    _plan_flags(p, "1,2", "what-if seeds, e.g. 1,2 or 1-3 (misses are averaged)", 300.0)
    p.add_argument("--no-layouts", action="store_true", help="keep the MIG layouts as they are")
    p.add_argument("--out", default="results/capacity/recommend", help="folder for the recommended cluster and tables")
    p.add_argument("--markdown", metavar="PATH", help="also write a dated page")


def _strategy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", default="configs/cluster/local.yaml", help="cluster topology YAML whose pools scale")
    p.add_argument("--workload", default="configs/workloads/weekly_mixed.yaml",
                   help="workload YAML with a rate profile: its multi-day stream is the demand")
    p.add_argument("--load-factor", type=float, help="workload rate multiplier (default: the file's)")
    p.add_argument("--days", type=int, default=3, help="days backtested (the last ones)")
    p.add_argument("--history-days", type=int, default=14, help="days before them: the history plans and forecasts read")
    p.add_argument("--step", default="10min", help="scaling step; must divide an hour")
    p.add_argument("--model", default="mstl", help="forecast model of the forecast strategies: snaive, ets, mstl or lgbm")
    p.add_argument("--level", type=int, default=95, help="upper-bound level the forecast strategies plan for, percent")
    _plan_flags(p, "1", "workload and what-if seed (the first is used)", 120.0)
    p.add_argument("--out", default="results/capacity/strategies", help="folder for the per-step and summary CSVs")
    p.add_argument("--markdown", metavar="PATH", help="also write a dated page")
    p.add_argument("--forecast-slo-miss", metavar="PCT[,PCT...]",
                   help="more SLO-miss targets, percent, for the forecast strategies (their plans and the reactive "
                        "net's trigger) and hindsight: rows 'forecast @2%%' ... beside those at --slo-miss (static "
                        "peak provisioning meets --slo-miss at the peak, so it misses far less off-peak)")
    p.add_argument("--no-layouts", action="store_true",
                   help="keep the cluster's MIG layouts (default: every strategy runs on the layouts recommended "
                        "for the history's peak hour)")
    p.add_argument("--verbose", action="store_true", help="print each plan as it is searched")


def _apply_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recommendation", metavar="PATH",
                   help="a `capacity recommend` folder (its cluster.yaml) or a cluster YAML: its node count per pool")
    p.add_argument("--pool", action="append", metavar="POOL=N", help="a pool's node count (repeatable; wins over "
                                                                      "--recommendation)")
    p.add_argument("--keep-layouts", action="store_true",
                   help="apply the cheapest cluster the recommendation's search found with the MIG layouts as they "
                        "are (its `recommended, MIG layouts as now` row), not one that changes a layout")
    p.add_argument("--router", default="http://127.0.0.1:8000", help="the router that drains leaving nodes")
    p.add_argument("--token-file", default=None,
                   help="file holding the admin token (default: $ORCH_ADMIN_TOKEN, else $ORCH_ADMIN_TOKEN_FILE)")
    p.add_argument("--state-dir", default=None, help="the local cluster's state folder (default: $ORCH_RAY_DIR)")
    p.add_argument("--drain-timeout", type=float, default=600.0, metavar="S",
                   help="seconds a leaving node may take to finish its tasks")
    p.add_argument("--force", action="store_true",
                   help="stop nodes still busy after --drain-timeout (the router re-runs their tasks elsewhere, as a "
                        "retry: a task at its retry limit fails)")
    p.add_argument("--no-wait", action="store_true", help="when only starting nodes, do not wait for the router")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")


def add_capacity(sub: argparse._SubParsersAction) -> None:
    cap = sub.add_parser("capacity", help="demand series, forecasts with intervals and their backtests")
    csub = cap.add_subparsers(dest="capacity_command", required=True)
    f = csub.add_parser("forecast", help="forecast each demand series with prediction intervals")
    _common(f, backtest=False)
    f.set_defaults(func=cmd_forecast)
    b = csub.add_parser("backtest", help="rolling-origin backtest: MAE, MAPE, MASE and interval coverage per model")
    _common(b, backtest=True)
    b.set_defaults(func=cmd_backtest)
    r = csub.add_parser("recommend", help="the cheapest cluster (node counts, MIG layouts) meeting an SLO-miss target, "
                                          "by simulation")
    _recommend_flags(r)
    r.set_defaults(func=cmd_recommend)
    s = csub.add_parser("strategies", help="static peak, reactive, forecast-driven and forecast-plus-reactive scaling "
                                           "compared over days: cost, SLO misses, slack")
    _strategy_flags(s)
    s.set_defaults(func=cmd_strategies)
    a = csub.add_parser("apply", help="start and drain the local cluster's raylets to a recommendation's node counts "
                                      "(admin: drains through the router)")
    _apply_flags(a)
    a.set_defaults(func=cmd_apply)


def main(argv: list[str] | None = None) -> int:
    """``python -m capacity.cli capacity backtest ...``: the same parser and exit codes as ``orchestrator``."""
    parser = argparse.ArgumentParser(prog="orchestrator")
    add_capacity(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (UsageError, ConfigError) as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
