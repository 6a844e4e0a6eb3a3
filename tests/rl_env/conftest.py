"""Fixtures of the training tests."""
from __future__ import annotations

import pytest

from scheduler.model_registry import REGISTRY_ENV


@pytest.fixture
def shipped_models(monkeypatch) -> None:
    """The shipped experiment clones a shipped forest (rf:5): read it with the shipped models, not a
    registry of tiny ones that another package's session fixture may have pointed ORCH_REGISTRY at."""
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
