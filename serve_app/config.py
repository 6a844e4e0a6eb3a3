"""The router's own settings: one frozen dataclass, validated field by field.

These are the ``args`` of the Serve application (``serve_app:build_app`` in
``configs/serve.yaml``, or ``serve run serve_app:build_app policy=...``); Serve's
own settings (``http_options``, ``proxy_location``) stay in Serve's config. Errors
are :class:`cluster.config.ConfigError`, naming the field.

The admin token is never a config value: the config names where it comes from
(an environment variable, a file readable by the router, or only its SHA-256 when
the operator wants no secret on the cluster at all). With none configured, admin
calls are refused.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from cluster.config import Collector, ConfigError, Fields, load_yaml
from cluster.package_data import data_path, work_path
from cluster.serve_config import router_args
from scheduler.task import MAX_WORK_S
from serve_app.entry_points import check_names
from serve_app.guard import is_ip

DEFAULT_HISTORY = "sqlite:///results/serve/history.db"
TOKEN_ENV = "ORCH_ADMIN_TOKEN"
TOKEN_FILE_ENV = "ORCH_ADMIN_TOKEN_FILE"
#: environment variable naming a YAML file of router args (``serve run serve_app:app``)
CONFIG_ENV = "ORCH_SERVE_CONFIG"
MIN_TOKEN_CHARS = 16
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RouterConfig:
    """Settings of one router application.

    Attributes:
        cluster: topology YAML of the cluster the router places on; default
            ``$ORCH_CLUSTER_CONFIG``, which the launcher sets on every node.
        policy: initial policy (``fastest-feasible``, ``rf:latest``, ``rl:3`` ...).
        registry: model registry root for learned policies (default ``$ORCH_REGISTRY``).
        history_url: task history store (``sqlite:///path``; relative paths are
            under the repository root, so every process resolves them the same), or a
            PostgreSQL database (``postgresql://user@host:port/db``; its API keys live there too).
        admin_token_env / admin_token_file / admin_token_sha256: where the admin
            bearer token comes from (first configured wins: sha256, file, env).
        time_compression: workload seconds per wall second for emulated task work.
        kernel: ``sleep`` or ``cpu`` (burn CPU) for the emulated work.
        max_retries: re-placements of a task whose node dies.
        max_batch: most tasks in one ``/v1/route/batch`` call.
        max_body_bytes: larger request bodies get 413.
        max_header_bytes / body_timeout_s / client_max_requests: headers larger than this get
            431, a body not received this long after the request began 408, a client with this
            many requests in progress 429 (:mod:`serve_app.guard`: stalled clients cannot hold
            the router).
        batch_max_size / batch_wait_s: ``@serve.batch`` of concurrent single routes.
        wait_timeout_s: longest ``?wait=true`` on ``POST /v1/tasks``.
        refresh_s: how stale Ray's node view may get (node death shows within this).
        resume_unfinished: on start, re-place tasks a previous router accepted but
            did not finish (at-least-once execution).
        seed: seeds random policies and network-delay draws.
        warm_workers: Ray workers started per node when the router starts (a cold
            worker costs seconds of the first tasks' queue time; each idle one costs memory).
        warm_entry_points: those workers also import the allow-listed entry points' modules
            and call their ``warm()`` (models loaded ahead: seconds and memory per worker).
        pin_to_head: run the router replica on the Ray head (label
            ``orchestrator-role=head``); false lets Serve place it anywhere.
        access_log: Serve's per-request access log in the replica's log file. Off by
            default: every task is in the history, and the log line cost about 6% of the
            router's CPU per ``POST /v1/tasks``.
        open_route: ``/v1/route`` and ``/v1/route/batch`` (decisions, nothing run) answer
            without an API key, charged to one shared anonymous quota. Work always needs a key.
        key_refresh_s: how often the API-key table is re-read (a revoked key works until then).
        rate_per_s / burst / key_max_in_flight: a key's quota when it was created without one.
        anonymous_rate_per_s / anonymous_burst: the shared quota of keyless decisions.
        max_in_flight: accepted, unfinished tasks the router holds at most (fair shares
            between keys start at half of it: :mod:`serve_app.admission`).
        pool_max_queued / pool_max_queued_s: a task is refused (429) when every pool that
            could run it has this many tasks, or seconds of expected work, waiting.
        max_work_s: the largest ``work`` (reference-device seconds) a task may ask for.
        max_deadline_s: the longest ``deadline_s`` a task may give; ``default_deadline_s``
            (None: no deadline) applies to tasks that give none. A task past its deadline
            is cancelled.
        history_max_age_s / history_max_rows: finished tasks older than this, or beyond this
            many, are folded into daily totals and deleted (unfinished ones never are;
            :mod:`serve_app.retention`); None keeps them all.
        history_synchronous: SQLite's ``synchronous``: ``FULL`` (default) keeps an acknowledged
            task through an OS crash or power cut, ``NORMAL`` through a process kill only.
        capacity_dir: where ``orchestrator capacity recommend --out`` writes the recommendation
            ``GET /v1/capacity/recommendation`` serves (relative: under the checkout, or the
            working directory of an installed package).
        capacity_cache_s / capacity_max_rows: how long a ``GET /v1/capacity/forecast`` answer is
            kept, and the most (newest) history rows one reads.
        loop_dir: the folder whose ``calibration/``, ``counterfactual/`` and ``retrain/`` hold what
            ``orchestrator calibrate``, ``counterfactual`` and ``retrain`` wrote (their default ``--out``
            folders are under ``results``), served with the shadow's agreement by ``GET /v1/loop``.
        entry_points: the functions (``package.module:function``) a task sent over HTTP may run
            instead of emulated work (:mod:`serve_app.entry_points`); nothing else runs.
        front_peers: addresses of the nginx front (:mod:`serve_app.front`) whose ``X-Real-IP``
            names the client the guard counts; empty (the default) ignores the header.
            ``serve up --front-port`` sets them.
        shadow_policy: a challenger (``rl``, ``rf:2`` ...) that decides every task too and is never
            acted on: each record keeps its choice, whether it agrees and the model's expected
            outcome of both (``PUT /v1/shadow`` changes it).
        promotion_window / promotion_margin: a promoted challenger is judged on its first
            ``promotion_window`` succeeded tasks and rolled back when its SLO-miss rate exceeds the
            old champion's last ``promotion_window`` by more than ``promotion_margin``
            (:mod:`serve_app.promotion`).
    """

    cluster: str | None = None
    policy: str = "fastest-feasible"
    registry: str | None = None
    history_url: str = DEFAULT_HISTORY
    admin_token_env: str = TOKEN_ENV
    admin_token_file: str | None = None
    admin_token_sha256: str | None = None
    time_compression: float = 1.0
    kernel: str = "sleep"
    max_retries: int = 2
    max_batch: int = 10_000
    max_body_bytes: int = 8 << 20
    max_header_bytes: int = 16 << 10
    body_timeout_s: float = 5.0
    client_max_requests: int = 256
    batch_max_size: int = 64
    batch_wait_s: float = 0.0
    wait_timeout_s: float = 300.0
    refresh_s: float = 0.5
    resume_unfinished: bool = True
    seed: int = 0
    warm_workers: int = 1
    warm_entry_points: bool = True
    pin_to_head: bool = True
    access_log: bool = False
    open_route: bool = True
    key_refresh_s: float = 2.0
    rate_per_s: float = 200.0
    burst: int = 2000
    key_max_in_flight: int = 2000
    anonymous_rate_per_s: float = 100.0
    anonymous_burst: int = 256
    max_in_flight: int = 10_000
    pool_max_queued: int = 2000
    pool_max_queued_s: float = 86_400.0
    max_work_s: float = 86_400.0
    max_deadline_s: float = 30 * 86_400.0
    default_deadline_s: float | None = None
    history_max_age_s: float | None = 30 * 86_400.0
    history_max_rows: int | None = 500_000
    history_synchronous: str = "FULL"
    capacity_dir: str = "results/capacity/recommend"
    capacity_cache_s: float = 300.0
    capacity_max_rows: int = 200_000
    loop_dir: str = "results"
    entry_points: tuple[str, ...] = ()
    front_peers: tuple[str, ...] = ()
    shadow_policy: str | None = None
    promotion_window: int = 200
    promotion_margin: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["entry_points"] = list(self.entry_points)
        out["front_peers"] = list(self.front_peers)
        return out

    def cluster_path(self) -> Path:
        """The topology file: ``cluster`` or ``$ORCH_CLUSTER_CONFIG``."""
        path = self.cluster or os.environ.get("ORCH_CLUSTER_CONFIG")
        if not path:
            raise ConfigError(None, "cluster", "no cluster topology: set `cluster` in the router args or "
                                               "ORCH_CLUSTER_CONFIG (the launcher sets it on its nodes)")
        return data_path(path).absolute()

    def history_path_url(self) -> str:
        """``history_url`` with a relative SQLite path made absolute (under the checkout, or the
        working directory of an installed package)."""
        prefix = "sqlite:///"
        if self.history_url.startswith(prefix):
            return prefix + str(work_path(self.history_url[len(prefix):]))
        return self.history_url


_ALLOWED = {f.name for f in fields(RouterConfig)}


def parse_router_config(data: Mapping[str, Any] | None, source: str | Path | None = None) -> RouterConfig:
    """Validate a mapping of router args; unknown keys and bad values name the field, all at once."""
    errs = Collector()
    f = Fields(dict(data or {}), file=source or "<router args>", path="", collect=errs)
    errs(f.check_keys, _ALLOWED)
    d = RouterConfig()

    def opt_str(key: str) -> str | None:
        return f.str(key) if f.has(key) and f.raw(key) is not None else getattr(d, key)

    before = len(errs.errors)
    sha = opt_str("admin_token_sha256")
    if sha is not None and len(errs.errors) == before and not _SHA256.match(sha):
        sha = f.fail("admin_token_sha256", "must be 64 lower-case hex digits (sha256sum of the token)", None)
    kernel = f.str("kernel", d.kernel, choices={"sleep", "cpu"})
    before = len(errs.errors)
    max_deadline = f.num("max_deadline_s", d.max_deadline_s, min=0.0, strict_min=True)
    bound = max_deadline if len(errs.errors) == before else None  # a bad bound is its own error, not this one's
    default_deadline = None
    if f.has("default_deadline_s") and f.raw("default_deadline_s") is not None:
        default_deadline = f.num("default_deadline_s", None, min=0.0, max=bound, strict_min=True)
    history = f.str("history_url", d.history_url)
    from serve_app.history_sql import parse_url  # SQLAlchemy, loaded only once a config is read

    try:
        parse_url(history)
    except ValueError as exc:  # HistoryError: names the scheme and the forms; never the password
        f.fail("history_url", str(exc), None)
    entry_points = f.raw("entry_points", [])
    if not isinstance(entry_points, list):
        entry_points = f.fail("entry_points", f"must be a list of 'package.module:function', got {entry_points!r}", [])
    front_peers = f.raw("front_peers", [])
    if not isinstance(front_peers, list) or not all(isinstance(a, str) and is_ip(a) for a in front_peers):
        front_peers = f.fail("front_peers", f"must be a list of IP addresses, got {front_peers!r}", [])
    cfg = RouterConfig(
        cluster=opt_str("cluster"),
        policy=f.str("policy", d.policy),
        registry=opt_str("registry"),
        history_url=history,
        admin_token_env=f.str("admin_token_env", d.admin_token_env),
        admin_token_file=opt_str("admin_token_file"),
        admin_token_sha256=sha,
        time_compression=f.num("time_compression", d.time_compression, min=0.0, strict_min=True),
        kernel=kernel,
        max_retries=int(f.num("max_retries", d.max_retries, min=0, max=10)),
        max_batch=int(f.num("max_batch", d.max_batch, min=1, max=1_000_000)),
        max_body_bytes=int(f.num("max_body_bytes", d.max_body_bytes, min=1024, max=1 << 30)),
        max_header_bytes=int(f.num("max_header_bytes", d.max_header_bytes, min=1024, max=1 << 20)),
        body_timeout_s=f.num("body_timeout_s", d.body_timeout_s, min=0.0, max=3600.0, strict_min=True),
        client_max_requests=int(f.num("client_max_requests", d.client_max_requests, min=1, max=100_000)),
        batch_max_size=int(f.num("batch_max_size", d.batch_max_size, min=1, max=10_000)),
        batch_wait_s=f.num("batch_wait_s", d.batch_wait_s, min=0.0, max=1.0),
        wait_timeout_s=f.num("wait_timeout_s", d.wait_timeout_s, min=0.0, max=86_400.0, strict_min=True),
        refresh_s=f.num("refresh_s", d.refresh_s, min=0.05, max=60.0),
        resume_unfinished=_bool(f, "resume_unfinished", d.resume_unfinished),
        seed=int(f.num("seed", d.seed, min=0)),
        warm_workers=int(f.num("warm_workers", d.warm_workers, min=0, max=64)),
        warm_entry_points=_bool(f, "warm_entry_points", d.warm_entry_points),
        pin_to_head=_bool(f, "pin_to_head", d.pin_to_head),
        access_log=_bool(f, "access_log", d.access_log),
        open_route=_bool(f, "open_route", d.open_route),
        key_refresh_s=f.num("key_refresh_s", d.key_refresh_s, min=0.1, max=3600.0),
        rate_per_s=f.num("rate_per_s", d.rate_per_s, min=0.0, max=1e6, strict_min=True),
        burst=int(f.num("burst", d.burst, min=1, max=10_000_000)),
        key_max_in_flight=int(f.num("key_max_in_flight", d.key_max_in_flight, min=1, max=10_000_000)),
        anonymous_rate_per_s=f.num("anonymous_rate_per_s", d.anonymous_rate_per_s, min=0.0, max=1e6,
                                   strict_min=True),
        anonymous_burst=int(f.num("anonymous_burst", d.anonymous_burst, min=1, max=10_000_000)),
        max_in_flight=int(f.num("max_in_flight", d.max_in_flight, min=1, max=10_000_000)),
        pool_max_queued=int(f.num("pool_max_queued", d.pool_max_queued, min=1, max=10_000_000)),
        pool_max_queued_s=f.num("pool_max_queued_s", d.pool_max_queued_s, min=0.0, strict_min=True),
        max_work_s=f.num("max_work_s", d.max_work_s, min=0.0, max=MAX_WORK_S, strict_min=True),
        max_deadline_s=max_deadline,
        default_deadline_s=default_deadline,
        history_max_age_s=(None if f.has("history_max_age_s") and f.raw("history_max_age_s") is None else
                           f.num("history_max_age_s", d.history_max_age_s, min=0.0, strict_min=True)),
        history_max_rows=(None if f.has("history_max_rows") and f.raw("history_max_rows") is None else
                          int(f.num("history_max_rows", d.history_max_rows, min=1, max=1e9))),
        history_synchronous=f.str("history_synchronous", d.history_synchronous, choices={"FULL", "NORMAL"}),
        capacity_dir=f.str("capacity_dir", d.capacity_dir),
        capacity_cache_s=f.num("capacity_cache_s", d.capacity_cache_s, min=0.0, max=86_400.0),
        capacity_max_rows=int(f.num("capacity_max_rows", d.capacity_max_rows, min=1, max=10_000_000)),
        loop_dir=f.str("loop_dir", d.loop_dir),
        entry_points=check_names(entry_points, lambda key, why: f.fail(key, why, None)),
        front_peers=tuple(front_peers),
        shadow_policy=opt_str("shadow_policy"),
        promotion_window=int(f.num("promotion_window", d.promotion_window, min=1, max=1_000_000)),
        promotion_margin=f.num("promotion_margin", d.promotion_margin, min=0.0, max=0.99),
    )
    errs.check()
    return cfg


def _bool(f: Fields, key: str, default: bool) -> bool:
    v = f.raw(key, default)
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "yes", "no"):
        return v.lower() in ("true", "1", "yes")  # `serve run ... key=value` passes strings
    if not isinstance(v, bool):
        return f.fail(key, f"must be true or false, got {v!r}", default)
    return v


def load_router_config(path: str | Path) -> RouterConfig:
    """Router args from a YAML file: either the args mapping itself or a Serve config
    whose first application using ``serve_app`` carries them under ``args``."""
    f = load_yaml(path)
    if "applications" in f.data:
        return parse_router_config(router_args(f), path)
    return parse_router_config(f.data, path)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def resolve_admin_token(cfg: RouterConfig, environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """``(sha256 of the admin token or None, where it came from / how to set one)``.

    Resolution order: ``admin_token_sha256``, ``admin_token_file``, the file named
    by ``$ORCH_ADMIN_TOKEN_FILE``, then the variable ``admin_token_env``. A token
    shorter than 16 characters is refused (ConfigError), not silently accepted.
    """
    env = os.environ if environ is None else environ
    if cfg.admin_token_sha256:
        return cfg.admin_token_sha256, "admin_token_sha256 in the router config"
    for key, path in (("admin_token_file", cfg.admin_token_file), (TOKEN_FILE_ENV, env.get(TOKEN_FILE_ENV))):
        if path:
            p = Path(path).expanduser()
            try:
                token = p.read_text().strip()
            except OSError as exc:
                raise ConfigError(None, key, f"cannot read the admin token file {p}: {exc.strerror}") from None
            return _checked(token, key), f"file {p}"
    token = env.get(cfg.admin_token_env, "").strip()
    if token:
        return _checked(token, cfg.admin_token_env), f"environment variable {cfg.admin_token_env}"
    return None, (f"no admin token is configured: set {cfg.admin_token_env} (at least {MIN_TOKEN_CHARS} "
                  f"characters) or {TOKEN_FILE_ENV} where the router runs, or admin_token_file / "
                  "admin_token_sha256 in the router config, then restart the router")


def _checked(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(None, where, f"the admin token must have at least {MIN_TOKEN_CHARS} characters")
    return token_sha256(token)

