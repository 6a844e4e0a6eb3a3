"""Choosing the router's policy: a policy that needs a missing model is a 4xx-worthy choice error."""
from __future__ import annotations

import pytest

from serve_app.policies import PolicyChoiceError, build_policy


def test_auto_without_its_forest_is_refused_as_a_policy_choice_not_a_crash(tmp_path) -> None:
    with pytest.raises(PolicyChoiceError) as e:
        build_policy("auto", registry=str(tmp_path))  # an empty registry: no rf for auto to choose
    assert e.value.field == "policy" and "rf" in e.value.reason
