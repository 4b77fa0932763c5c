"""A site that refuses custom code sees the filters an app names: built-in filters (by path, FLARE path or
name) pass, any other class named as a filter is code and refuses the app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fl_broker.apps.archive import pack_app
from workers.app_policy import AppPolicy, AppRefused


def app_with_result_filters(tmp_path: Path, filters: list) -> bytes:
    app = tmp_path / "filtered-app"
    (app / "config").mkdir(parents=True, exist_ok=True)
    config = {
        "format_version": 2,
        "executors": [{"tasks": ["train"], "executor": {"path": "fl_broker.fl.executor.Executor"}}],
        "task_result_filters": [{"tasks": ["train"], "filters": filters}],
    }
    (app / "config" / "config_fed_client.json").write_text(json.dumps(config))
    return pack_app(app)


def test_built_in_filters_pass_a_site_that_refuses_custom_code(tmp_path):
    filters = [
        {"name": "GaussianPrivacy", "args": {"clip_norm": 1, "noise_multiplier": 1}},
        {"path": "nvflare.app_common.filters.percentile_privacy.PercentilePrivacy"},
        {"path": "fl_broker.privacy.exclude_vars.ExcludeVars"},
    ]
    assert len(AppPolicy(refuse_custom_code=True).check("app", app_with_result_filters(tmp_path, filters))) == 64


def test_any_other_class_named_as_a_filter_is_code(tmp_path):
    archive = app_with_result_filters(tmp_path, [{"name": "ExcludeVars"}, {"path": "subprocess.Popen"}])
    with pytest.raises(AppRefused, match=r"task_result_filters\[0\]\.filters\[1\]\.path names 'subprocess\.Popen'"):
        AppPolicy(refuse_custom_code=True).check("app", archive)
