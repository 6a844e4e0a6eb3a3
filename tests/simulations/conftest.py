"""Fixtures for this folder: a session registry with tiny learned models (see tests/learned_registry.py)."""
from tests.learned_registry import learned_registry  # noqa: F401  (autouse: rf builds by name)
