"""ExcludeVars: names removed by exact match, or by a regex anywhere in the name (FLARE's arguments)."""

from __future__ import annotations

import numpy as np
import pytest

from fl_broker.privacy.exclude_vars import ExcludeVars
from fl_broker.wire.messages import DataKind, ReturnCode, make_reply
from tests.privacy.helpers import context, result_of

DATA = {"conv1.weight": 1.0, "conv1.bias": 2.0, "fc.weight": 3.0, "head.conv": 4.0}


def kept(exclude_vars, kind=DataKind.WEIGHTS) -> list[str]:
    out = ExcludeVars(exclude_vars).process(result_of(dict(DATA), kind), context())
    assert out.dxo is not None
    return sorted(out.dxo.data)


def test_a_list_removes_exactly_the_names_given():
    assert kept(["conv1.bias", "fc.weight", "absent"]) == ["conv1.weight", "head.conv"]


def test_a_string_is_a_regex_that_may_match_anywhere_in_a_name():
    assert kept("conv") == ["fc.weight"]
    assert kept(r"^conv1\.") == ["fc.weight", "head.conv"]
    assert kept(r"\.bias$") == ["conv1.weight", "fc.weight", "head.conv"]


def test_nothing_given_removes_nothing_and_other_kinds_are_filtered_too():
    assert kept(None) == sorted(DATA)
    assert kept("") == sorted(DATA)
    assert kept(["fc.weight"], DataKind.METRICS) == ["conv1.bias", "conv1.weight", "head.conv"]


def test_meta_stays_and_a_failed_result_passes_unchanged():
    result = result_of({"a": np.ones(2), "b": np.zeros(2)}, steps=3)
    out = ExcludeVars(["a"]).process(result, context())
    assert out.dxo is not None and out.dxo.meta == {"NUM_STEPS_CURRENT_ROUND": 3} and list(out.dxo.data) == ["b"]
    failed = make_reply(ReturnCode.EXECUTION_EXCEPTION)
    assert ExcludeVars(["a"]).process(failed, context()) is failed


@pytest.mark.parametrize(
    ("bad", "message"), [(5, "expected a list of names or a regex"), ([1], "expected names"), ("(", "not a regular")]
)
def test_bad_arguments_are_refused_when_built(bad, message):
    with pytest.raises(ValueError, match=message):
        ExcludeVars(bad)
