"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI document).

Request models carry the same bounds as :func:`scheduler.task.make_task`, so the
OpenAPI document tells clients (and the fuzzer) what is valid; ``make_task`` stays
the authority and runs after them. Unknown fields are refused (a typo must not
silently become a default). Responses are built as plain dicts on the hot path and
documented by these models.
"""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from cluster.topology import MIG_PROFILES
from cluster.vocabulary import ENTRY_POINT, SHARE_KINDS, STATUSES
from scheduler.task import MAX_CPU_MILLI, MAX_DESCRIPTION, MAX_GPUS, MAX_MEM_MIB, MAX_SLO_MS, MAX_WORK_S

MigProfile = Enum("MigProfile", {p.replace(".", "_"): p for p in MIG_PROFILES}, type=str)
StrictInt = Annotated[int, Field(strict=True)]
#: ``Literal[STATUSES]`` is ``Literal["accepted", ...]``: the OpenAPI enum follows the vocabulary
TaskStatus = Literal[STATUSES]  # type: ignore[valid-type]
ShareKind = Literal[SHARE_KINDS]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskIn(_Strict):
    """A task to place. Give a ``description`` alone and the rest is inferred; explicit fields win."""

    id: Optional[str] = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$",
                              description="Client id; on POST /v1/tasks it is the idempotency key "
                                          "(a retry with the same id returns the recorded task).")
    description: Optional[str] = Field(None, max_length=MAX_DESCRIPTION,
                                       examples=["real-time fraud detection"])
    priority: Optional[StrictInt] = Field(None, ge=1, le=10)
    slo_ms: Optional[float] = Field(None, gt=0, le=MAX_SLO_MS, description="latency SLO, end to end")
    cpu_milli: Optional[StrictInt] = Field(None, ge=0, le=MAX_CPU_MILLI)
    mem_mib: Optional[StrictInt] = Field(None, ge=0, le=MAX_MEM_MIB)
    gpu_milli: Optional[StrictInt] = Field(None, ge=0, le=999, description="a fraction of one GPU")
    gpu_count: Optional[StrictInt] = Field(None, ge=0, le=MAX_GPUS, description="whole GPUs")
    mig_profile: Optional[MigProfile] = None
    gpu_models: Optional[list[Annotated[str, Field(min_length=1, max_length=64)]]] = Field(None, max_length=32)
    work: Optional[float] = Field(None, ge=0, le=MAX_WORK_S, description="seconds on the reference device")
    cost_sensitivity: Optional[StrictInt] = Field(None, ge=1, le=10)
    kind: Optional[str] = Field(None, min_length=1, max_length=64)
    pool: Optional[str] = Field(None, min_length=1, max_length=64,
                                description="run only in this pool (the policy chooses within it)")
    deadline_s: Optional[float] = Field(None, gt=0, le=MAX_WORK_S,
                                        description="POST /v1/tasks: cancel the task if it has not ended this many "
                                                    "seconds after it was accepted (at most the router's "
                                                    "max_deadline_s; default: its default_deadline_s)")
    entry_point: Optional[str] = Field(None, max_length=256, pattern=ENTRY_POINT.pattern,
                                       examples=["orchestrator.examples.real_work:score_fraud"],
                                       description="POST /v1/tasks: run this function (`package.module:function`, "
                                                   "one of the router's entry_points) instead of emulated work; "
                                                   "its return value is the record's `result`")
    args: Optional[dict[str, Any]] = Field(None, description="keyword arguments of entry_point (a JSON object, "
                                                             "stored with the task)")

    def fields(self) -> dict[str, Any]:
        """The fields given, as plain JSON values (``model_dump(exclude_none=True, mode="json")``
        costs 6 us a task, a tenth of a batch decision's budget)."""
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        if "mig_profile" in out:
            out["mig_profile"] = out["mig_profile"].value
        return out


class BatchIn(_Strict):
    tasks: list[TaskIn] = Field(..., min_length=1)
    plan: StrictBool = Field(False, description="each decision takes the capacity the ones before it took "
                                          "(a coherent plan; nothing is reserved on the cluster); "
                                          "false: each is decided against the same state, as if sent alone")


class PolicyIn(_Strict):
    policy: str = Field(..., min_length=1, max_length=64, examples=["rf", "fastest-feasible", "rl:3"])
    version: Optional[Annotated[str, Field(min_length=1, max_length=16)] | StrictInt] = Field(
        None, description="registry version of a learned policy: 'latest' or a number")


class ShadowIn(_Strict):
    policy: Optional[str] = Field(..., min_length=1, max_length=64, examples=["rl", "rf:2", None],
                                  description="the challenger; null stops the shadow")
    version: Optional[Annotated[str, Field(min_length=1, max_length=16)] | StrictInt] = Field(
        None, description="registry version of a learned policy: 'latest' or a number")

    @model_validator(mode="after")
    def _version_needs_a_policy(self) -> "ShadowIn":
        if self.policy is None and self.version is not None:
            raise ValueError("version without a policy: name the policy, or send neither to stop the shadow")
        return self


class KeyIn(_Strict):
    """A new API key; unset limits take the router's defaults (``rate_per_s``, ``burst``, ``key_max_in_flight``)."""

    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="the client: owner of the tasks sent with the key")
    rate_per_s: Optional[float] = Field(None, gt=0, le=1e6, description="sustained tasks per second")
    burst: Optional[StrictInt] = Field(None, ge=1, le=10_000_000, description="tasks at once above the rate")
    max_in_flight: Optional[StrictInt] = Field(None, ge=1, le=10_000_000,
                                               description="accepted, unfinished tasks at most")


class KeyOut(BaseModel):
    name: str
    created_at: float
    revoked_at: Optional[float] = None
    rate_per_s: Optional[float] = None
    burst: Optional[int] = None
    max_in_flight: Optional[int] = None
    active: bool
    key: Optional[str] = Field(None, description="the secret: returned once, when the key is created")


class AggregateOut(BaseModel):
    """Daily totals of trimmed tasks (one UTC day of ``finished_at``, pool, policy, kind, status)."""

    day: str
    pool: Optional[str] = None
    policy: Optional[str] = None
    kind: Optional[str] = None
    status: str
    tasks: int
    latency_n: int = Field(description="tasks with a latency (latency_ms_sum / latency_n is their mean)")
    latency_ms_sum: float
    latency_ms_max: Optional[float] = None
    cost_sum: float
    slo_n: int = Field(description="tasks with an SLO verdict")
    slo_met: int


class ShareOut(BaseModel):
    kind: ShareKind
    amount: int | str
    text: str


class DecisionOut(BaseModel):
    task_id: str
    placed: bool
    node: Optional[str] = None
    pool: Optional[str] = None
    tier: Optional[str] = None
    node_class: Optional[str] = None
    share: Optional[ShareOut] = None
    device: Optional[int] = None
    queued: bool = False
    confidence: Optional[float] = None
    probabilities: Optional[dict[str, float]] = None
    scores: dict[str, float] = Field(default_factory=dict, description="per feasible node; higher is better")
    explanation: str
    policy: str
    policy_version: Optional[int] = None
    decision_ms: float
    inferred: list[str] = Field(default_factory=list, description="fields inferred from the description")
    status: Optional[int] = Field(None, description="batch only: 409 or 503 when not placed")


class BatchOut(BaseModel):
    decisions: list[DecisionOut]
    policy: str
    plan: bool
    decision_ms: float


class TaskOut(BaseModel):
    """A task as the history records it."""

    model_config = ConfigDict(extra="allow")
    task_id: str
    status: TaskStatus
    reason: Optional[str] = None
    policy: Optional[str] = None
    pool: Optional[str] = None
    node: Optional[str] = None
    accepted_at: Optional[float] = None
    finished_at: Optional[float] = None
    latency_ms: Optional[float] = None
    cost: Optional[float] = None
    slo_met: Optional[bool] = None
    attempts: Optional[int] = None
    result: Optional[Any] = Field(None, description="what an entry point's function returned (JSON, when small)")
    events: Optional[list[dict[str, Any]]] = None


class TaskPage(BaseModel):
    items: list[TaskOut]
    total: int
    limit: int
    offset: int
    next_offset: Optional[int] = None


class NodeOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    tier: str
    pool: str
    node_class: str
    alive: bool
    usable: bool
    problem: str
    network_ms: list[float]
    load: float
    running: int
    queued: int
    cpu_free_milli: int
    gpu_free_milli: int
    mig_free: dict[str, int]
    standby: bool = Field(False, description="a slot beyond the config's nodes that its pool scales into")
    draining: bool = Field(False, description="no new placements; its running tasks finish")


class DrainIn(_Strict):
    nodes: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        ..., max_length=1024, examples=[["cloud-add1"], []],
        description="the nodes to drain from now on (exactly these; [] ends every drain)")


class ClusterOut(BaseModel):
    cluster: str
    nodes: list[NodeOut]
    in_flight: int
    policy: str
    time: float
    previous_draining: Optional[list[str]] = Field(None, description="PUT /v1/cluster/draining: what was drained "
                                                                      "before")


class PolicyOut(BaseModel):
    policy: str
    version: Optional[int] = None
    since: float
    available: list[str]
    learned: dict[str, list[int]]
    shadow: Optional[str] = Field(None, description="the policy deciding in shadow, if any")
    promotion: Optional[dict[str, Any]] = Field(None, description="the promotion being judged, and the log of "
                                                                  "promotions and rollbacks")


class ForecastOut(BaseModel):
    """:func:`capacity.live.history_forecast`'s document: per series ``actual`` points, ``forecast``
    and (with history enough) ``backtest`` points per model, and each model's backtest ``errors``."""

    interval: str
    horizon: int
    models: list[str]
    skipped: dict[str, str]
    levels: list[int]
    generated_at: str
    forecast_from: str
    history: dict[str, Any]
    backtest: Optional[dict[str, Any]] = None
    backtest_needs: int
    series: list[dict[str, Any]]
    seconds: float
    cached: bool


class RecommendationOut(BaseModel):
    """What ``orchestrator capacity recommend`` wrote (:func:`capacity.live.recommendation_document`)."""

    model_config = ConfigDict(extra="allow")
    created_at: str
    age_s: float
    command: str
    policy: str
    feasible: bool
    now: dict[str, Any]
    recommended: dict[str, Any]
    saving_per_hour: Optional[float] = None
    cluster_diff: str


class LoopReportOut(BaseModel):
    """One command's report under the router's ``loop_dir``: the JSON it wrote, or a note saying why there is none."""

    report: Optional[dict[str, Any]] = Field(None, description="the file's JSON; null when there is none")
    path: str
    written_at: Optional[float] = Field(None, description="the file's modification time (Unix seconds)")
    note: Optional[str] = Field(None, description="why there is no report, naming the command that writes one")


class ShadowPairOut(BaseModel):
    """A challenger's decisions in shadow beside one champion's (:func:`serve_app.loop_views.agreement`)."""

    champion: str
    challenger: str
    decisions: int
    agreements: int
    disagreements: int
    errors: int = Field(description="decisions the challenger raised on (the task was placed by the champion)")
    agreement_pct: Optional[float] = Field(None, description="agreements of the decisions it made (errors left out)")
    compared: int = Field(description="disagreements where both chose a node: the expected figures are over these")
    challenger_better: int = Field(description="of those, the model expected the challenger's choice to score better")
    champion_expected_ms: Optional[float] = None
    challenger_expected_ms: Optional[float] = None
    champion_expected_score: Optional[float] = Field(None, description="objective score, lower is better")
    challenger_expected_score: Optional[float] = None
    champion_measured_score: Optional[float] = Field(None, description="the champion's succeeded tasks, measured")
    champion_slo_met_pct: Optional[float] = None


class ShadowAgreementOut(BaseModel):
    hours: float
    since: float
    decisions_read: int
    truncated: bool = Field(description="more decisions with a shadow in the window than one answer reads")
    first_accepted: Optional[float] = None
    pairs: list[ShadowPairOut]


class LoopOut(BaseModel):
    """The learning loop: the simulator's calibration, the challenger in shadow, the counterfactual and
    retrain reports, and the promotions."""

    folder: str = Field(description="the router's loop_dir")
    champion: str
    challenger: Optional[str] = Field(None, description="the policy deciding in shadow now, if any")
    promotion: Optional[dict[str, Any]] = Field(None, description="as in GET /v1/policy: the watch and the log")
    shadow: ShadowAgreementOut
    calibration: LoopReportOut
    counterfactual: LoopReportOut
    retrain: LoopReportOut


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    detail: list[ErrorItem] | str


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    policy: str
    nodes_usable: int
    nodes_total: int = Field(description="the topology's nodes, standby slots not started left out")
    nodes_standby: int = Field(0, description="slots the pools may scale into that are not started")
    in_flight: int
    pid: int
