"""The one documented schema of a task's history record (``GET /v1/tasks/{id}``), as JSON Schema.

What retraining and calibration read from the history: the task as submitted, the
features the policy saw at decision time, the decision with what the simulator's model
expected of it, and the measured queue, network and execution times, cost and SLO outcome.
``tests/serve_app`` validate the router's records against it (``jsonschema``), so the
schema and the records cannot drift. Times are milliseconds of workload time (a real
function's execution as measured), costs dollars, instants Unix seconds.
"""
from __future__ import annotations

from typing import Any

from cluster.vocabulary import STATUSES
from scheduler.features import FEATURE_NAMES, SCHEMA_VERSION

_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
_STR = {"type": ["string", "null"]}


def _num(text: str) -> dict[str, Any]:
    return {**_NUM, "description": text}


_PARTS = {
    "queue_ms": "waiting in the node's FIFO queue for capacity",
    "network_ms": "network delay to the node's tier",
    "exec_ms": "execution on the node and share",
    "latency_ms": "queue + network + execution, end to end",
}

#: the model's expected outcome of a choice at decision time
_EXPECTED = {
    "type": "object", "required": [*_PARTS, "cost", "score"],
    "description": "what the simulator's model expected at decision time (tier-mean network): beside the measured "
                   "parts, what calibration compares; beside the shadow's, a counterfactual",
    "properties": {**{k: _num(f"expected: {v}") for k, v in _PARTS.items()}, "cost": _num("expected dollars"),
                   "score": _num("the objective of that expected outcome")},
}

TASK_RECORD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Task record",
    "type": "object",
    "required": ["task_id", "status", "task", "accepted_at"],
    "additionalProperties": False,
    # a task that succeeded has every measured part, where it ran, and the decision it ran by
    "if": {"properties": {"status": {"const": "succeeded"}}},
    "then": {"required": [*_PARTS, "cost", "node", "decision"],
             "properties": {**{k: {"type": "number"} for k in (*_PARTS, "cost")}, "node": {"type": "string"},
                            "decision": {"type": "object", "required": ["expected"]}}},
    "properties": {
        "task_id": {"type": "string"},
        "status": {"enum": list(STATUSES), "description": "accepted -> placed | running -> a final status"},
        "reason": {**_STR, "description": "why it failed, was rejected or cancelled; a resumed task's note"},
        "policy": {**_STR, "description": "the policy that decided (name, with its version for learned ones)"},
        "policy_version": _STR,
        "pool": _STR, "node": _STR, "tier": _STR,
        "share": {**_STR, "description": "the GPU share held: cpu, slice:<milli>, whole:<n>, mig:<profile>"},
        "confidence": _num("a learned policy's confidence in its choice"),
        **{k: _num(f"measured: {v}") for k, v in _PARTS.items()},
        "decision_ms": _num("time the policy took to decide"),
        "cost": _num("measured: dollars, from the tier's prices and the measured execution"),
        "score": _num("the objective of the outcome (lower is better; configs/objective.yaml)"),
        "slo_met": {"type": ["boolean", "null"], "description": "latency_ms <= the task's slo_ms"},
        "kind": _STR, "priority": _INT, "slo_ms": _NUM,
        "accepted_at": {"type": "number"}, "finished_at": _NUM,
        "attempts": _INT,
        "task": {
            "type": "object",
            "description": "the task as accepted (every field explicit, inferred ones listed), its client and work",
            "required": ["id", "priority", "slo_ms", "cpu_milli", "mem_mib", "gpu_milli", "gpu_count", "work"],
            "properties": {
                "id": {"type": "string"}, "priority": {"type": "integer"}, "slo_ms": {"type": "number"},
                "cpu_milli": {"type": "integer"}, "mem_mib": {"type": "integer"},
                "gpu_milli": {"type": "integer"}, "gpu_count": {"type": "integer"},
                "mig_profile": _STR, "gpu_models": {"type": "array", "items": {"type": "string"}},
                "work": {"type": "number", "description": "expected seconds on the reference device"},
                "cost_sensitivity": {"type": "integer"}, "kind": _STR, "description": _STR,
                "inferred": {"type": "array", "items": {"type": "string"}},
                "pool": _STR, "owner": _STR, "deadline_at": _NUM,
                "entry_point": {**_STR, "description": "the allow-listed function it ran (HTTP)"},
                "args": {"type": ["object", "null"], "description": "that function's keyword arguments"},
                "python_call": {**_STR, "description": "the function it ran (Python API)"},
            },
        },
        "features": {
            "type": ["array", "null"], "items": {"type": ["number", "null"]},
            "minItems": len(FEATURE_NAMES), "maxItems": len(FEATURE_NAMES),
            "description": f"the state the policy saw, as scheduler.features.FEATURE_NAMES (schema "
                           f"{SCHEMA_VERSION}): {', '.join(FEATURE_NAMES)}",
        },
        "decision": {
            "type": ["object", "null"],
            "description": "the decision as POST /v1/route answers it",
            "properties": {
                "placed": {"type": "boolean"}, "node": _STR, "node_class": _STR, "queued": {"type": "boolean"},
                "scores": {"type": "object", "additionalProperties": {"type": "number"}},
                "probabilities": {"type": ["object", "null"]}, "explanation": {"type": "string"},
                "expected": _EXPECTED,
                "shadow": {
                    "type": "object", "required": ["policy"],
                    "description": "what the shadow policy (a challenger, never acted on) chose for this task on "
                                   "the same state: its choice, agreement, decision time and expected outcome, or "
                                   "the error it raised",
                    "properties": {"policy": {"type": "string"}, "placed": {"type": "boolean"},
                                   "agrees": {"type": "boolean"}, "decision_ms": {"type": "number"},
                                   "node": {"type": "string"}, "share": {"type": "string"}, "expected": _EXPECTED,
                                   "error": {"type": "string"}},
                },
            },
        },
        "result": {"description": "what an entry point's function returned (JSON of at most 64 KiB), "
                                  "or {\"not_kept\": why}"},
        "events": {"type": "array", "items": {"type": "object", "required": ["at", "status"]}},
    },
}
