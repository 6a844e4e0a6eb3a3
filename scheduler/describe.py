"""Infer a task's priority, latency need and GPU need from its free-text description.

Keyword rules, not a language model: transparent, fast, and good enough for the
phrases users actually type ("real-time fraud detection", "medical image
segmentation", "nightly batch ETL"). Explicit task fields always win over these.
"""
from __future__ import annotations

import re
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Mapping

# (pattern, fields) in order; the first urgency match and the first GPU match apply.
_URGENCY: list[tuple[str, dict[str, Any]]] = [
    (r"real[- ]?time|fraud|alert|emergenc|urgent|critical|anomal|intrusion|trading",
     {"priority": 9, "slo_ms": 300.0, "cost_sensitivity": 3}),
    (r"interactive|chat|inference|serving|online|user[- ]facing|recommend",
     {"priority": 7, "slo_ms": 1500.0, "cost_sensitivity": 5}),
    (r"nightly|batch|etl|backfill|report|offline|archive|training|fine[- ]?tun|train\b",
     {"priority": 2, "slo_ms": 3_600_000.0, "cost_sensitivity": 9}),
    (r"route|optimi[sz]|planning|schedul", {"priority": 5, "slo_ms": 5000.0, "cost_sensitivity": 6}),
]
_GPU: list[tuple[str, dict[str, Any]]] = [
    (r"fine[- ]?tun|training|train\b|pretrain", {"gpu_count": 1}),
    (r"llm|language model|gpt|llama|transformer|diffusion", {"gpu_milli": 500}),
    (r"image|imaging|segmentation|vision|video|mri|ct scan|x-ray|detection model|cnn",
     {"gpu_milli": 250}),
]


_URGENCY_RE = [(re.compile(p), v) for p, v in _URGENCY]
_GPU_RE = [(re.compile(p), v) for p, v in _GPU]


@lru_cache(maxsize=4096)
def infer_from_description(text: str) -> Mapping[str, Any]:
    """The task fields that ``text`` implies (possibly none), read-only and cached: users type
    the same few phrases, and a router validating thousands of tasks a second would otherwise
    run the patterns each time."""
    low = text.lower()
    out: dict[str, Any] = {}
    for pattern, values in _URGENCY_RE:
        if pattern.search(low):
            out.update(values)
            break
    for pattern, values in _GPU_RE:
        if pattern.search(low):
            out.update(values)
            break
    return MappingProxyType(out)
