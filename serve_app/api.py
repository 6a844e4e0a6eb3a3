"""The versioned HTTP API (FastAPI): routes that parse, call the service, answer.

``create_api(get_service)`` builds the app around a function returning the
process's :class:`~serve_app.service.RouterService`, so the same app runs inside
the Serve replica (:mod:`serve_app.deployment`) and under a plain ASGI test client.

Concurrent ``POST /v1/route`` calls are batched with ``@serve.batch``: the batch
takes the live-state lock once and decides in order, each task against the same
state a lone request would see, so batching changes throughput, not answers.

Valid bodies of the three hot ``POST`` routes reach their handlers through
:class:`FastPath`, past FastAPI's routing and dependency machinery; every other
request, and every body that fails validation, is FastAPI's as before.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Awaitable, Callable, Literal, Optional

from fastapi import Depends, FastAPI, Path, Query, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from capacity.forecast import parse_models
from capacity.live import DEFAULT_MODELS, INTERVALS, MAX_HORIZON
from cluster.config import UsageError
from scheduler.task import Task
from serve_app import errors
from serve_app.auth import ANONYMOUS, AdminAuth, ClientAuth, Principal
from serve_app.errors import ApiError, JSONResponse
from serve_app.guard import Guard
from serve_app.keys import KeyStoreError, Quota
from serve_app.models import (AggregateOut, BatchIn, BatchOut, ClusterOut, DecisionOut, DrainIn, ErrorOut,
                              ForecastOut, HealthOut, KeyIn, KeyOut, LoopOut, PolicyIn, PolicyOut, RecommendationOut,
                              ShadowIn, TaskIn, TaskOut, TaskPage, TaskStatus)
from serve_app.policies import PolicyChoiceError
from serve_app.promotion import PromotionRefused
from serve_app.service import RouterService

API_VERSION = "1.0.0"
log = logging.getLogger("serve_app")
#: batches larger than this are decided in a worker thread so the event loop keeps serving
INLINE_BATCH = 64
#: the longest a waited answer waits for its task's final record to commit (milliseconds, normally):
#: past it the answer goes out all the same and the log says so
RECORD_WAIT_S = 5.0

_ERRORS = {400: {"model": ErrorOut, "description": "malformed JSON"},
           408: {"model": ErrorOut, "description": "the body did not arrive within body_timeout_s"},
           413: {"model": ErrorOut, "description": "request body too large"},
           431: {"model": ErrorOut, "description": "request headers too large"},
           422: {"model": ErrorOut, "description": "a field is invalid (loc names it)"}}
_INFEASIBLE = {409: {"model": ErrorOut, "description": "no node of the cluster can ever host the task (why)"},
               503: {"model": ErrorOut, "description": "every node that could host it is down now (retry)"}}
_ADMIN = {401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
          403: {"model": ErrorOut, "description": "no admin token configured on the router"}}
_KEYED = {401: {"model": ErrorOut, "description": "no API key, or an unknown or revoked one"},
          429: {"model": ErrorOut, "description": "over the client's rate, in-flight limit or fair share, or every "
                                                  "pool that could run it has a full queue (see Retry-After)"}}
#: the two bearer schemes the OpenAPI document declares (both are ``Authorization: Bearer ...``)
API_KEY = HTTPBearer(scheme_name="apiKey", auto_error=False,
                     description="a client's API key (`orchestrator keys create NAME`); the admin token also works")
ADMIN_TOKEN = HTTPBearer(scheme_name="adminToken", auto_error=False, description="the router's admin token")


def _header(cred: HTTPAuthorizationCredentials | None) -> str | None:
    return None if cred is None else f"{cred.scheme} {cred.credentials}"


Handler = Callable[[Any, Optional[str]], Awaitable[Response]]


class FastPath:
    """The hot ``POST`` routes without FastAPI's machinery, for bodies that are valid.

    Routing, dependency solving, the exception middleware and the body parse cost
    FastAPI about 200-300 us a request here, several times a decision. A ``POST`` to one
    of ``routes`` with a JSON body and no query string is validated with the route's
    model straight from the bytes and handed to the route's handler (the same function
    the FastAPI route calls). Anything else, and every body the model refuses, goes to
    FastAPI with the body it had, so errors keep their one code path and shape (an
    error the handler raises is answered through :func:`serve_app.errors.answer`, as
    FastAPI's handlers answer it; anything unexpected is a logged 500).
    """

    def __init__(self, app: ASGIApp, routes: dict[str, tuple[type[BaseModel], Handler]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        model, handler = route
        try:
            body = await _read_body(receive)
        except StarletteHTTPException as exc:  # over the size or time limit (serve_app.guard)
            await errors.answer(exc)(scope, receive, send)  # type: ignore[misc]
            return
        if body is None:
            return  # the client went away before sending its body
        try:
            parsed = model.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)  # FastAPI words the error
            return
        try:
            response = await handler(parsed, _authorization(scope))
        except Exception as exc:  # noqa: BLE001 - as FastAPI's handlers would answer it
            response = errors.answer(exc) or errors.bug(exc, "POST", scope["path"])
        await response(scope, receive, send)

    def _route(self, scope: Scope) -> tuple[type[BaseModel], Handler] | None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("query_string"):
            return None
        path = scope["path"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root):]
        route = self.routes.get(path)
        if route is None:
            return None
        for name, value in scope["headers"]:
            if name == b"content-type":
                return route if value.split(b";", 1)[0].strip().lower() == b"application/json" else None
        return None


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return None
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for an app downstream: the body already read, then the client's own messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def again() -> dict:
        return pending.pop() if pending else await receive()

    return again


class RouterAPI(FastAPI):
    """FastAPI, with :attr:`fast` (the :class:`FastPath`) in front of FastAPI's own per-request work
    (its telemetry check alone cost about 4% of the router's CPU per task)."""

    fast: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast is not None and scope["type"] == "http":
            await self.fast(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's full handling: what the fast path hands everything else to."""
        await super().__call__(scope, receive, send)


def create_api(get: Callable[[], RouterService], auth: Callable[[], AdminAuth]) -> FastAPI:
    """The FastAPI app; ``get``/``auth`` return the process's service and admin check."""
    api = RouterAPI(
        default_response_class=JSONResponse,
        title="AI workload orchestrator: placement router",
        version=API_VERSION,
        description="Decides where AI tasks run on a heterogeneous Ray cluster (edge, cloud, GPU pools; "
                    "MIG and time-sliced GPU shares), runs them, and records every accepted task. "
                    "Work (`POST /v1/tasks`, `DELETE /v1/tasks/{id}`) needs a client's API key and admin "
                    "calls the admin token, both as `Authorization: Bearer ...`. A request cut by a router "
                    "crash is safe to retry with the same task id.",
    )
    errors.install(api)
    io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="router-io")

    async def blocking(fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(io, fn, *args)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def route_many(items: list[tuple]) -> list[dict[str, Any]]:
        return get().decide(items, endpoint="route")

    async def route_one(item: tuple) -> dict[str, Any]:
        if _in_replica():
            return await route_many(item)
        return get().decide([item], endpoint="route")[0]  # a plain ASGI server (tests): no batching

    def admin(cred: Optional[HTTPAuthorizationCredentials] = Security(ADMIN_TOKEN)) -> None:
        auth().check(_header(cred))

    def clients() -> ClientAuth:
        """The process's key check, built once per service and admin check."""
        svc, a = get(), auth()
        ca = getattr(svc, "client_auth", None)
        if ca is None or ca.admin is not a:
            ca = svc.client_auth = ClientAuth(a, svc.keys, svc.cfg.key_refresh_s)
        return ca

    def decider(authorization: str | None, n: int) -> None:
        """Who asks for ``n`` decisions: a key, or anonymous when ``open_route``; charged ``n``."""
        svc = get()
        who = clients().principal(authorization)
        if who is None:
            if not svc.cfg.open_route:
                clients().require(None, "this router's decisions")
            who = Principal(ANONYMOUS)
        svc.admission.charge(who, n)

    @api.get("/healthz", response_model=HealthOut, tags=["ops"])
    async def healthz() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(get().health))

    @api.post("/v1/route", response_model=DecisionOut, responses={**_ERRORS, **_INFEASIBLE, **_KEYED},
              tags=["placement"],
              summary="Decide where one task should run (nothing is run or reserved)")
    async def route(body: TaskIn, cred: Optional[HTTPAuthorizationCredentials] = Security(API_KEY)) -> JSONResponse:
        return await route_task(body, _header(cred))

    async def route_task(body: TaskIn, authorization: str | None = None) -> JSONResponse:
        svc = get()
        decider(authorization, 1)
        _tune_batch(route_many, svc)
        item = svc.parse_task(body.fields())
        view = await route_one(item)
        if not view["placed"]:
            raise ApiError(view["status"], view["explanation"], extra={"decision": view},
                           headers={"Retry-After": "5"} if view["status"] == 503 else None)
        return JSONResponse(view)

    @api.post("/v1/route/batch", response_model=BatchOut, responses={**_ERRORS, **_KEYED}, tags=["placement"],
              summary="Decide for many tasks at once, in order")
    async def route_batch(body: BatchIn,
                          cred: Optional[HTTPAuthorizationCredentials] = Security(API_KEY)) -> JSONResponse:
        return await route_tasks(body, _header(cred))

    async def route_tasks(body: BatchIn, authorization: str | None = None) -> JSONResponse:
        svc = get()
        if len(body.tasks) > svc.cfg.max_batch:
            raise ApiError(422, f"at most {svc.cfg.max_batch} tasks per call, got {len(body.tasks)}",
                           loc=["body", "tasks"])
        decider(authorization, len(body.tasks))
        items = [svc.parse_task(t.fields(), ("body", "tasks", i))
                 for i, t in enumerate(body.tasks)]
        t0 = time.perf_counter()
        if len(items) <= INLINE_BATCH:
            views = svc.decide(items, plan=body.plan, endpoint="batch")
        else:
            views = await run_in_threadpool(svc.decide, items, plan=body.plan, endpoint="batch")
        return JSONResponse({"decisions": views, "policy": svc.policies.active.name, "plan": body.plan,
                             "decision_ms": round((time.perf_counter() - t0) * 1000.0, 3)})

    @api.post("/v1/tasks", status_code=202, response_model=TaskOut, tags=["tasks"],
              responses={**_ERRORS, **_INFEASIBLE, **_KEYED,
                         200: {"model": TaskOut, "description": "finished (wait=true), or the existing record "
                                                               "of a task with this id (idempotent retry)"},
                         403: {"model": ErrorOut, "description": "entry_point is not on the router's allow-list"},
                         409: {"model": ErrorOut, "description": "cannot ever be hosted, a request with this id "
                                                                 "is in progress, or the id was used for another "
                                                                 "task or by another client"}},
              summary="Accept a task, place it and run it on the cluster (needs an API key)")
    async def create_task(body: TaskIn,
                          wait: bool = Query(False, description="answer when the task has ended and its record says how"),
                          timeout_s: Optional[float] = Query(None, gt=0, le=86_400, allow_inf_nan=False,
                                                             description="longest wait (default: router config)"),
                          cred: Optional[HTTPAuthorizationCredentials] = Security(API_KEY)) -> JSONResponse:
        return await run_task(body, _header(cred), wait, timeout_s)

    async def run_task(body: TaskIn, authorization: str | None = None, wait: bool = False,
                       timeout_s: float | None = None) -> JSONResponse:
        svc = get()
        who = clients().require(authorization, "POST /v1/tasks")
        svc.admission.charge(who, 1)
        fields = body.fields()
        work, call = svc.real_work(fields)
        task, pool = svc.parse_task(fields, work=True)
        existing, (view, fut, status) = await accept(svc, who, task, pool, body.deadline_s, work, call)
        if existing is not None:
            return JSONResponse(existing, status_code=200, headers={"Idempotent-Replay": "true"})
        if fut is None:
            raise ApiError(status, view["explanation"], extra={"task_id": task.id, "decision": view},
                           headers={"Retry-After": "5"} if status == 503 else None)
        accepted = {"task_id": task.id, "status": "placed" if view["queued"] else "running",
                    "policy": view["policy"], "pool": view["pool"], "node": view["node"], "decision": view}
        if not wait:
            return JSONResponse(accepted, status_code=202, headers={"Location": f"/v1/tasks/{task.id}"})
        limit = min(timeout_s or svc.cfg.wait_timeout_s, svc.cfg.wait_timeout_s)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), limit)
        except asyncio.TimeoutError:
            return JSONResponse(accepted, status_code=202, headers={"Location": f"/v1/tasks/{task.id}"})
        return JSONResponse(await ended(svc, task, view, fut), status_code=200)

    @api.get("/v1/tasks/{task_id}", response_model=TaskOut, tags=["tasks"],
             responses={404: {"model": ErrorOut, "description": "no such task"}},
             summary="One task's record and life cycle")
    async def get_task(task_id: str = Path(..., min_length=1, max_length=128)) -> JSONResponse:
        rec = await blocking(get().record, task_id)
        if rec is None:
            raise ApiError(404, f"no task {task_id!r} in the history")
        return JSONResponse(rec)

    @api.delete("/v1/tasks/{task_id}", response_model=TaskOut, tags=["tasks"],
                responses={401: _KEYED[401], 403: {"model": ErrorOut, "description": "another client's task"},
                           404: {"model": ErrorOut, "description": "no such task"},
                           409: {"model": ErrorOut, "description": "the task has already ended"}},
                summary="Cancel a queued or running task (its owner or the admin); frees its share at once")
    async def cancel_task(task_id: str = Path(..., min_length=1, max_length=128),
                          cred: Optional[HTTPAuthorizationCredentials] = Security(API_KEY)) -> JSONResponse:
        who = clients().require(_header(cred), "DELETE /v1/tasks/{id}")
        return JSONResponse(await blocking(get().cancel, task_id, who))

    @api.post("/v1/keys", status_code=201, response_model=KeyOut, responses={**_ERRORS, **_ADMIN,
              409: {"model": ErrorOut, "description": "an active key has this name"}},
              tags=["keys"], dependencies=[Depends(admin)],
              summary="Create a client's API key (admin); the secret is in this answer only")
    async def create_key(body: KeyIn) -> JSONResponse:
        try:
            key, secret = await blocking(get().keys.create, body.name,
                                         Quota(body.rate_per_s, body.burst, body.max_in_flight))
        except KeyStoreError as exc:
            raise ApiError(409 if exc.conflict else 422, exc.reason, loc=["body", exc.field]) from None
        return JSONResponse({**key.public(), "key": secret}, status_code=201)

    @api.get("/v1/keys", response_model=list[KeyOut], responses=_ADMIN, tags=["keys"],
             dependencies=[Depends(admin)], summary="The API keys, active and revoked, without secrets (admin)")
    async def list_keys() -> JSONResponse:
        return JSONResponse([k.public() for k in await blocking(get().keys.list)])

    @api.delete("/v1/keys/{name}", response_model=KeyOut, responses={**_ADMIN, 404: {"model": ErrorOut}},
                tags=["keys"], dependencies=[Depends(admin)], summary="Revoke a client's API key (admin)")
    async def revoke_key(name: str = Path(..., min_length=1, max_length=64)) -> JSONResponse:
        svc = get()
        if not await blocking(svc.keys.revoke, name):
            raise ApiError(404, f"no active key named {name!r}")
        return JSONResponse(next(k.public() for k in await blocking(svc.keys.list) if k.name == name))

    @api.get("/v1/tasks", response_model=TaskPage, tags=["tasks"], responses={422: _ERRORS[422]},
             summary="Tasks from the history, newest first")
    async def list_tasks(
            status: Optional[TaskStatus] = None,
            pool: Optional[str] = Query(None, max_length=64),
            policy: Optional[str] = Query(None, max_length=64),
            since: Optional[float] = Query(None, allow_inf_nan=False, description="accepted at or after (unix s)"),
            until: Optional[float] = Query(None, allow_inf_nan=False, description="accepted before (unix s)"),
            limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=1_000_000_000)) -> JSONResponse:
        svc = get()
        page = await blocking(lambda: svc.query(status=status, pool=pool, policy=policy, since=since, until=until,
                                                limit=limit, offset=offset))
        return JSONResponse(page)

    @api.get("/v1/history/aggregates", response_model=list[AggregateOut], tags=["tasks"],
             responses={**_ADMIN, 422: _ERRORS[422]}, dependencies=[Depends(admin)],
             summary="Daily totals of the tasks retention trimmed from the history, oldest day first (admin)")
    async def history_aggregates(
            day: Optional[datetime.date] = Query(None, description="UTC day, YYYY-MM-DD"),
            pool: Optional[str] = Query(None, max_length=64), policy: Optional[str] = Query(None, max_length=64),
            kind: Optional[str] = Query(None, max_length=64),
            status: Optional[TaskStatus] = None) -> JSONResponse:
        svc = get()
        return JSONResponse(await blocking(lambda: svc.history.aggregates(
            day=None if day is None else day.isoformat(), pool=pool, policy=policy, kind=kind, status=status)))

    @api.get("/v1/cluster", response_model=ClusterOut, tags=["cluster"],
             summary="Node health: tier, load, free shares, network latency, alive")
    async def cluster() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(get().cluster))

    @api.put("/v1/cluster/draining", response_model=ClusterOut, responses={**_ERRORS, **_ADMIN}, tags=["cluster"],
             dependencies=[Depends(admin)],
             summary="Drain exactly these nodes (admin): no new placements, running tasks finish; [] ends drains")
    async def put_draining(body: DrainIn) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(get().set_draining, body.nodes))

    @api.get("/v1/policy", response_model=PolicyOut, tags=["policy"])
    async def get_policy() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(get().policy_info))

    @api.put("/v1/policy", response_model=PolicyOut, responses={**_ERRORS, **_ADMIN}, tags=["policy"],
             dependencies=[Depends(admin)], summary="Switch the policy (admin); in-flight requests finish")
    async def put_policy(body: PolicyIn) -> JSONResponse:
        return await switched(get().set_policy, body.policy, body.version)

    async def switched(change: Callable[..., dict[str, Any]], *args: Any) -> JSONResponse:
        """A policy (or shadow) change, built off the event loop; a bad name or version is a 422 naming it."""
        try:
            return JSONResponse(await run_in_threadpool(change, *args))
        except PolicyChoiceError as exc:
            raise ApiError(422, exc.reason, loc=["body", exc.field]) from None

    @api.post("/v1/policy/promote", response_model=PolicyOut, tags=["policy"],
              responses={**_ADMIN, 409: {"model": ErrorOut, "description": "no shadow policy, too few verdicts of "
                                                                          "the champion, or a promotion still judged"}},
              dependencies=[Depends(admin)],
              summary="Promote the shadow policy (admin); rolled back if it misses more SLOs than the old champion")
    async def promote() -> JSONResponse:
        try:
            return JSONResponse(get().promote())
        except PromotionRefused as exc:
            raise ApiError(409, str(exc)) from None

    @api.put("/v1/shadow", response_model=PolicyOut, responses={**_ERRORS, **_ADMIN}, tags=["policy"],
             dependencies=[Depends(admin)],
             summary="Run a challenger in shadow (admin): it decides every task too, never acted on; null stops it")
    async def put_shadow(body: ShadowIn) -> JSONResponse:
        return await switched(get().set_shadow, body.policy, body.version)

    @api.get("/v1/loop", response_model=LoopOut, tags=["policy"], responses={422: _ERRORS[422]},
             summary="The learning loop: calibration, the challenger's agreement in shadow, counterfactual and "
                     "retrain reports, promotions")
    async def loop(hours: float = Query(24.0, gt=0, le=24 * 365, description="shadow decisions of the last hours")
                   ) -> JSONResponse:
        return JSONResponse(await blocking(get().loop, hours))

    @api.get("/v1/capacity/forecast", response_model=ForecastOut, tags=["capacity"],
             responses={409: {"model": ErrorOut, "description": "too little history to forecast from"},
                        422: _ERRORS[422], 429: {"model": ErrorOut, "description": "another forecast is computing "
                                                                                  "(see Retry-After)"}},
             summary="Forecast of this router's demand from its history, with intervals, beside the actuals")
    async def capacity_forecast(
            interval: Literal[INTERVALS] = Query("1h", description="series resolution"),
            horizon: int = Query(24, ge=1, le=MAX_HORIZON, description="intervals ahead"),
            models: str = Query(",".join(DEFAULT_MODELS), max_length=64,
                                description="comma-separated: snaive, ets, mstl, lgbm (snaive always runs)")
    ) -> JSONResponse:
        try:
            chosen = parse_models(models)
        except UsageError as exc:
            raise ApiError(422, str(exc).removeprefix("--models: "), loc=["query", "models"]) from None
        return JSONResponse(await blocking(get().capacity.forecast, interval, horizon, chosen))

    @api.get("/v1/capacity/recommendation", response_model=RecommendationOut, tags=["capacity"],
             responses={404: {"model": ErrorOut, "description": "no recommendation written yet (the command to run)"}},
             summary="The latest cluster recommendation by simulation (`orchestrator capacity recommend`)")
    async def capacity_recommendation() -> JSONResponse:
        return JSONResponse(await blocking(get().capacity.recommendation))

    def client_of(authorization: str | None, host: str) -> str:
        """The name a request is counted under by the guard: its key's, else anonymous by address."""
        try:
            who = clients().principal(authorization)
        except ApiError:
            who = None
        return who.name if who is not None else f"{ANONYMOUS}@{host}"

    # every HTTP request passes here first (RouterAPI), the ones FastAPI answers too: the limits
    # need no second copy inside FastAPI's middleware stack
    api.fast = Guard(FastPath(api.fastapi, {"/v1/route": (TaskIn, route_task), "/v1/route/batch": (BatchIn, route_tasks),
                                            "/v1/tasks": (TaskIn, run_task)}),
                     limits=lambda: get().guard_limits, who=client_of)
    return api


async def accept(svc: RouterService, who: Principal, task: Task, pool: str | None, deadline_s: float | None,
                 work: dict[str, Any] | None, call: Callable[[], Any] | None
                 ) -> tuple[dict[str, Any] | None, tuple[dict[str, Any], Future | None, int]]:
    """Accept a parsed task and start it once committed: (the earlier record of a retried id, or None;
    :meth:`RouterService.start`'s (decision view, future, status), or empty ones for a retry).
    ``POST /v1/tasks`` and the Python API (:meth:`serve_app.deployment.Router.run_function`) both."""
    with svc.claim(task.id):
        existing, committed = svc.begin_accept(task, pool, who, deadline_s, work)  # one indexed read
        if existing is not None:
            return existing, ({}, None, 200)
        start = partial(svc.start, task, pool, owner=who.name, call=call)
        await _committed(committed, start)
        return None, start()


async def ended(svc: RouterService, task: Task, view: dict[str, Any], fut: Future) -> dict[str, Any]:
    """The answer for a task that has ended, once its final record is committed (at most
    :data:`RECORD_WAIT_S`), so that a ``GET`` right after it reads the same ending: the record is
    written behind, and without this wait a read could still find ``running``."""
    write = svc.final_write(task.id)
    if write is not None:
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(write)), RECORD_WAIT_S)
        except asyncio.TimeoutError:
            log.warning("task %s ended; its record is not committed after %g s: answering without it",
                        task.id, RECORD_WAIT_S)
        except Exception:  # noqa: BLE001 - the history writer logs it (and keeps it when the database was away)
            pass
    return svc.result_view(task, view, fut)


async def _committed(committed: Future, start: Callable[[], Any]) -> None:
    """Wait for a task's commit. If the request is cancelled meanwhile (the client went away),
    the task is accepted all the same, so ``start`` still runs once the commit lands."""
    try:
        await asyncio.shield(asyncio.wrap_future(committed))
    except asyncio.CancelledError:
        loop = asyncio.get_running_loop()

        def later(f: Future) -> None:
            if not f.cancelled() and f.exception() is None:
                loop.call_soon_threadsafe(start)

        committed.add_done_callback(later)
        raise


_IN_REPLICA: list[bool] = []


def _in_replica() -> bool:
    """Whether this process is a Serve replica (``@serve.batch`` needs one)."""
    if not _IN_REPLICA:
        try:
            serve.get_replica_context()
            _IN_REPLICA.append(True)
        except Exception:  # noqa: BLE001 - RayServeException outside a replica
            _IN_REPLICA.append(False)
    return _IN_REPLICA[0]


def _tune_batch(batched: Any, svc: RouterService) -> None:
    """Apply the config's ``@serve.batch`` settings once (they are per process)."""
    if getattr(batched, "_orch_tuned", False):
        return
    batched.set_max_batch_size(svc.cfg.batch_max_size)
    batched.set_batch_wait_timeout_s(svc.cfg.batch_wait_s)
    batched._orch_tuned = True
