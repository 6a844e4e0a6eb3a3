"""``orchestrator cluster up|status|down|join|env|k8s``: the real Ray cluster from a topology YAML.

Config errors exit 2 (through the main command) before any process starts;
runtime failures (a port in use, ``ray start`` failing, no cluster to talk to)
exit 1 with the reason.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

DEFAULT_CONFIG = "configs/cluster/local.yaml"


def _fmt(x: float) -> str:
    return f"{x:g}" if x < 1e6 else f"{x / (1 << 30):.0f}Gi"


def cmd_up(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cluster import launcher
    from cluster.network import is_loopback
    from cluster.procs import interruptible_once
    from cluster.topology import load_cluster

    spec = load_cluster(args.config)  # ConfigError -> exit 2, before anything starts
    n_nodes = len(spec.nodes) if args.nodes is None else len([n for n in args.nodes.split(",") if n.strip()])
    bar = tqdm(total=n_nodes + 1, unit="node", desc="cluster up", file=sys.stderr)

    def progress(name: str, seconds: float) -> None:
        bar.set_postfix_str(f"{name} {seconds:.1f}s")
        if not name.endswith("(retrying)"):
            bar.update(1)

    try:
        nodes = None if args.nodes is None else [n for n in args.nodes.split(",") if n.strip()]
        with interruptible_once():
            res = launcher.up(args.config, state_dir=args.state_dir, port=args.port,
                              dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port,
                              token_file=args.token_file, object_store_mb=args.object_store_mb,
                              parallel=args.parallel, nodes=nodes, listen=args.listen, progress=progress)
    except launcher.LauncherError as exc:
        bar.close()
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit) as exc:  # launcher.up stopped every node it had started
        bar.close()
        print("orchestrator: cluster up interrupted: the nodes it had started are stopped", file=sys.stderr)
        return exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130
    bar.close()
    sys.stderr.flush()
    st = res.state
    workers = [n for n in st.nodes if n != launcher.HEAD_NAME]
    if res.already_running:
        what = f"restarted {', '.join(res.started)}" if res.started else "nothing to start"
        print(f"cluster {spec.name} is already running ({what}); state in {st.state_dir}")
    else:
        print(f"cluster {spec.name} up in {res.seconds:.1f} s: head + {len(workers)} nodes ({', '.join(workers)})")
    print(f"  GCS address   {st.head_ip}:{st.gcs_port}  (on this machine: {st.gcs_address})")
    where = "loopback only (--listen lets other hosts join)" if is_loopback(st.listen) else st.listen
    print(f"  listening on  {where}")
    print(f"  dashboard     {st.dashboard_url}")
    print(f"  token auth    on, token file {st.token_file}")
    sd = f" --state-dir {args.state_dir}" if args.state_dir else ""
    print("Submit a job from this folder:")
    print(f'  eval "$(orchestrator cluster env{sd})"')
    print(f"  ray job submit --address {st.dashboard_url} --working-dir . -- python -m replays.live "
          f"--workload configs/workloads/cluster_smoke.yaml --policy cheapest-feasible --out $PWD/results/replay")
    if not is_loopback(st.listen):
        print("Add a raylet on another host (copy the token file there first):")
        print(f"  orchestrator cluster join --address {st.head_ip}:{st.gcs_port} --node <name> --config {args.config}")
    print(f"Stop everything it started:  orchestrator cluster down{sd}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from cluster import launcher
    from cluster.ray_resources import LABEL_CLASS, LABEL_TIER

    try:
        st, rows = launcher.status(args.state_dir, args.address)
    except launcher.LauncherError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return 1
    if st is not None:
        print(f"cluster from {st.config}; GCS {st.gcs_address}; dashboard {st.dashboard_url}")
    header = f"{'node':12s} {'alive':5s} {'tier':6s} {'class':10s} {'resource':14s} {'free':>8s} {'total':>8s}  labels"
    print(header)
    print("-" * len(header))
    for r in rows:
        keys = [k for k in sorted(r.total) if not k.startswith("node:") and k != "object_store_memory"]
        labels = ",".join(f"{k}={v}" for k, v in sorted(r.labels.items()) if not k.startswith("ray.io/"))
        first = True
        for k in keys or ["-"]:
            lead = (f"{r.name:12s} {'yes' if r.alive else 'NO':5s} {r.labels.get(LABEL_TIER, '-'):6s} "
                    f"{r.labels.get(LABEL_CLASS, '-'):10s}") if first else " " * 36
            free = _fmt(r.available.get(k, 0.0)) if r.alive else "-"
            total = _fmt(r.total.get(k, 0.0)) if k != "-" else "-"
            print(f"{lead} {k:14s} {free:>8s} {total:>8s}  {labels if first else ''}")
            first = False
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from cluster import launcher

    stopped = launcher.down(args.state_dir, keep_logs=args.keep_logs)
    if stopped:
        print(f"stopped {', '.join(stopped)}")
    else:
        print(f"no cluster recorded in {args.state_dir or launcher.default_state_dir()}: nothing to stop")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from cluster import launcher

    try:
        rec = launcher.join(args.address, args.node, args.config, state_dir=args.state_dir,
                            token_file=args.token_file, object_store_mb=args.object_store_mb, listen=args.listen)
    except launcher.LauncherError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return 1
    print(f"node {rec.name} joined {args.address} in {rec.started_s:.1f} s "
          f"(labels {','.join(f'{k}={v}' for k, v in rec.labels.items())}); `orchestrator cluster down` stops it")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from cluster import launcher
    from cluster.ray_compat import LOCAL_ONLY_ENV

    st = launcher.LaunchState.load(args.state_dir or launcher.default_state_dir())
    if st is None:
        print(f"orchestrator: error: no cluster recorded in {args.state_dir or launcher.default_state_dir()}",
              file=sys.stderr)
        return 1
    env = launcher.client_env(st)
    for k, v in env.items():
        print(f"export {k}={shlex.quote(v)}")
    if LOCAL_ONLY_ENV[0] not in env:  # a shell set up for a loopback cluster before
        print(f"unset {LOCAL_ONLY_ENV[0]}")
    return 0


def _k8s_kinds(kind: str) -> list[str]:
    from cluster.k8s_apps import KINDS

    return list(KINDS) if kind == "all" else [kind]


def cmd_k8s(args: argparse.Namespace) -> int:
    """Render the chosen objects: to stdout (YAML as one multi-document stream), to one
    ``--out FILE.yaml`` for a single manifest, else one file per object in the ``--out`` folder."""
    from cluster.alibaba import load_cluster_any
    from cluster.config import UsageError
    from cluster.k8s_apps import FILE_NAMES, K8sOptions, is_trace_topology, render_text
    from cluster.package_data import data_path

    kinds = _k8s_kinds(args.kind)
    out = Path(args.out) if args.out else None
    single_file = out is not None and out.suffix in (".yaml", ".yml")
    if single_file and (len(kinds) > 1 or kinds == ["dockerfile"]):
        raise UsageError(f"--out {args.out}: a .yaml file holds one manifest; give a folder for --kind {args.kind}")
    if out is not None and not single_file and out.is_file():
        raise UsageError(f"--out {args.out}: is a file; give a folder (one file per object) or a .yaml file")
    if "rayjob" in kinds and not data_path(args.workload).is_file():
        raise UsageError(f"--workload {args.workload}: no such file")
    spec = load_cluster_any(args.config)  # ConfigError -> exit 2
    opts = K8sOptions(config=args.config, name=args.name, namespace=args.namespace, image=args.image,
                      token_secret=args.token_secret, serve_config=args.serve_config,
                      admin_secret=args.admin_secret, workload=args.workload, policy=args.policy)
    texts = {k: render_text(k, spec, opts) for k in kinds}
    if {"rayservice", "rayjob"} & set(kinds) and is_trace_topology(args.config):
        print(f"orchestrator: note: {args.config} is a `from_trace:` node list: the RayService and RayJob pods "
              "need its node list CSV (not in the image: mount it at the path the config names)", file=sys.stderr)
    if out is None:
        yaml_kinds = [k for k in kinds if k != "dockerfile"]
        if not yaml_kinds:
            sys.stdout.write(texts["dockerfile"])
            return 0
        sys.stdout.write("---\n".join(texts[k] for k in yaml_kinds))
        if "dockerfile" in kinds:
            print("(the Dockerfile is not YAML: --kind dockerfile or --out DIR writes it)", file=sys.stderr)
        return 0
    if single_file:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(texts[kinds[0]])
        print(f"{kinds[0]} written to {out}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for k in kinds:
        (out / FILE_NAMES[k]).write_text(texts[k])
    print(f"wrote {', '.join(FILE_NAMES[k] for k in kinds)} to {out}")
    return 0


def add_cluster(sub: argparse._SubParsersAction) -> None:
    """Add ``orchestrator cluster ...`` to the main command's sub-parsers."""
    c = sub.add_parser("cluster", help="start, inspect and stop the real Ray cluster; render it for KubeRay")
    csub = c.add_subparsers(dest="cluster_command", required=True)

    def state(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", default=None,
                       help="where the launcher keeps its state and Ray's temp dir "
                            "(default $ORCH_RAY_DIR or /tmp/orch-ray-<uid>)")

    up = csub.add_parser("up", help="start a head and one raylet per node of the config on this machine")
    up.add_argument("--config", default=DEFAULT_CONFIG, help="topology YAML of the nodes to start")
    up.add_argument("--port", type=int, default=6380, help="GCS port of the head")
    up.add_argument("--dashboard-host", default="127.0.0.1",
                    help="address the dashboard (and the job API) listens on")
    up.add_argument("--dashboard-port", type=int, default=8265, help="dashboard and job API port")
    up.add_argument("--token-file", default=None, help="token file (default ~/.ray/auth_token, created if missing)")
    up.add_argument("--object-store-mb", type=int, default=100, help="object store per node (MiB)")
    up.add_argument("--parallel", type=int, default=2, help="raylets started at once")
    up.add_argument("--nodes", default=None,
                    help="comma-separated nodes to start on this machine (default: all; '' for the head only, "
                         "the rest joining from other hosts, which needs --listen)")
    up.add_argument("--listen", default=None, metavar="ADDRESS",
                    help="127.0.0.1 (default for a new cluster; a running one keeps its own): every Ray port on "
                         "loopback, one host only; this host's address "
                         "(or 0.0.0.0: Ray picks it) for other hosts to join: Ray then listens on every interface")
    state(up)
    up.set_defaults(func=cmd_up)

    st = csub.add_parser("status", help="each node's tier, labels, total and free resources")
    st.add_argument("--address", default=None, help="GCS address of a cluster this machine did not start")
    state(st)
    st.set_defaults(func=cmd_status)

    dn = csub.add_parser("down", help="stop exactly the processes `up`/`join` started here")
    dn.add_argument("--keep-logs", action="store_true",
                    help="keep the logs folder in the state dir (Ray's temp dir is removed anyway)")
    state(dn)
    dn.set_defaults(func=cmd_down)

    jn = csub.add_parser("join", help="start this host's raylet for one node of the config")
    jn.add_argument("--address", required=True, help="the head's GCS address HOST:PORT")
    jn.add_argument("--node", required=True, help="node name in the config")
    jn.add_argument("--config", default=DEFAULT_CONFIG, help="topology YAML the node is in")
    jn.add_argument("--token-file", default=None, help="the head's token (default ~/.ray/auth_token)")
    jn.add_argument("--object-store-mb", type=int, default=100, help="object store of this node (MiB)")
    jn.add_argument("--listen", default=None, metavar="ADDRESS",
                    help="this host's address the others reach (default: Ray picks it; loopback when the head "
                         "is on this host's loopback)")
    state(jn)
    jn.set_defaults(func=cmd_join)

    env = csub.add_parser("env", help="print the exports a shell needs to use the cluster (eval \"$(...)\")")
    state(env)
    env.set_defaults(func=cmd_env)

    k = csub.add_parser("k8s", help="render KubeRay manifests (RayCluster, RayService, RayJob), a PodMonitor "
                                     "and the image's Dockerfile for the config")
    k.add_argument("--config", default=DEFAULT_CONFIG, help="topology YAML (a `from_trace:` node list too)")
    k.add_argument("--kind", default="raycluster",
                   choices=["raycluster", "rayservice", "rayjob", "podmonitor", "dockerfile", "all"],
                   help="what to render")
    k.add_argument("--out", default=None, metavar="PATH",
                   help="a folder: one file per object (raycluster.yaml, rayservice.yaml, rayjob.yaml, "
                        "podmonitor.yaml, Dockerfile); a .yaml file: that one manifest; default stdout")
    k.add_argument("--name", default=None, help="name stem of the objects (default orchestrator-<cluster name>)")
    k.add_argument("--namespace", default=None, help="namespace of the objects (default: kubectl's current one)")
    k.add_argument("--image", default=None,
                   help="image with this package (default ai-workload-orchestrator:<version>, from the Dockerfile)")
    k.add_argument("--token-secret", default=None, help="existing Secret with the auth token (else KubeRay makes one)")
    k.add_argument("--serve-config", default="configs/serve.yaml", help="RayService: the router's Serve config")
    k.add_argument("--admin-secret", default=None,
                   help="RayService: Secret whose key `token` is the admin token (default <name>-router-admin)")
    k.add_argument("--workload", default="configs/workloads/cluster_smoke.yaml", help="RayJob: workload to replay")
    k.add_argument("--policy", default="cheapest-feasible", help="RayJob: the replay's policy")
    k.set_defaults(func=cmd_k8s)
