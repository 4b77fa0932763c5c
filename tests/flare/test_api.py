"""fl-broker's FLARE 2.0 layer (fl_broker.flare): the semantics FLARE apps rely on."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.events import Event
from fl_broker.fl.events import EventType as Lifecycle
from fl_broker.flare.apis.dxo import DXO, DataKind, MetaKey, from_bytes, from_shareable
from fl_broker.flare.apis.event_type import EventType
from fl_broker.flare.apis.fl_component import FLComponent
from fl_broker.flare.apis.fl_constant import FLContextKey, ReservedKey, ReturnCode
from fl_broker.flare.apis.fl_context import FLContext, PropStore
from fl_broker.flare.apis.shareable import Shareable, make_reply
from fl_broker.flare.app_common.abstract.learnable import Learnable
from fl_broker.flare.app_common.abstract.model import (
    ModelLearnable,
    make_model_learnable,
    model_learnable_to_dxo,
    validate_model_learnable,
)
from fl_broker.flare.app_common.app_constant import AppConstants
from fl_broker.flare.app_common.app_event_type import AppEventType
from fl_broker.flare.runtime import FlareEngine


def run_context(tmp_path: Path, site: str = "site-1", run: int = 3) -> RunContext:
    run_dir = tmp_path / site / f"run_{run}"
    return RunContext(site, run, run_dir, run_dir / f"app_{site}")


class Recorder(FLComponent):
    """Remembers the events it is given, with the round and event data each came with."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, object, object]] = []

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        self.seen.append(
            (event_type, fl_ctx.get_prop(AppConstants.CURRENT_ROUND), fl_ctx.get_prop(FLContextKey.EVENT_DATA))
        )


def test_dxo_bytes_round_trip_through_the_codec_and_refuse_pickle():
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([0.5])}
    dxo = DXO(data_kind=DataKind.WEIGHTS, data=weights, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: 4})
    back = from_bytes(dxo.to_bytes())
    assert back.data_kind == DataKind.WEIGHTS and back.meta == {"NUM_STEPS_CURRENT_ROUND": 4}
    np.testing.assert_array_equal(back.data["w"], weights["w"])
    assert back.data["w"].dtype == np.float32
    with pytest.raises(ValueError, match="not the bytes of a DXO"):
        from_bytes(pickle.dumps({"kind": "WEIGHTS", "data": {}, "meta": {}}))
    with pytest.raises(ValueError):
        from_bytes(b"\x00garbage")


def test_dxo_takes_flare_arguments_and_has_its_helpers():
    dxo = DXO(data_kind=DataKind.METRICS, data=None, meta=None)
    assert dxo.data == {} and dxo.meta == {} and dxo.validate() == ""
    dxo.update_meta_props({"a": 1, "b": 2})
    dxo.remove_meta_props(["a", "missing"])
    assert dxo.get_meta_props() == {"b": 2}
    shareable = dxo.update_shareable(Shareable())
    assert from_shareable(shareable) is dxo
    with pytest.raises(ValueError):
        from_shareable(make_reply(ReturnCode.OK))


def test_return_codes_and_replies_have_flare_values():
    for code in ("OK", "BAD_TASK_DATA", "TASK_UNSUPPORTED", "HANDLER_EXCEPTION", "VALIDATE_TYPE_UNKNOWN"):
        assert getattr(ReturnCode, code) == code
    reply = make_reply(ReturnCode.EXECUTION_RESULT_ERROR)
    assert reply.get_return_code() == "EXECUTION_RESULT_ERROR" and reply.dxo is None
    reply.add_cookie(AppConstants.MODEL_OWNER, "site-2")
    assert reply.get_cookie("_model_owner_") == "site-2" and reply.get_cookie("nope", 7) == 7


def test_sticky_props_are_shared_by_the_runs_contexts_and_kinds_are_kept():
    store = PropStore()
    first, second = FLContext(store), FLContext(store)
    assert first.set_prop("shared", 1) and first.set_prop("local", 2, sticky=False)
    assert second.get_prop("shared") == 1 and second.get_prop("local", "absent") == "absent"
    assert first.set_prop("shared", 5, private=True, sticky=True)
    assert not second.set_prop("shared", 6, private=False, sticky=True)  # another kind: refused, value kept
    assert second.get_prop("shared") == 5
    assert second.get_prop_detail("shared") == {"value": 5, "private": True, "sticky": True}
    second.set_prop("public", "x", private=False)
    assert second.get_all_public_props() == {"public": "x"}
    second.remove_prop(ReservedKey.ENGINE)  # reserved names cannot be removed (nothing happens)


def test_engine_contexts_carry_the_run_and_its_folders(tmp_path):
    engine = FlareEngine()
    ctx = engine.new_context(run_context(tmp_path))
    workspace = ctx.get_engine().get_workspace()
    assert workspace.get_run_dir(ctx.get_prop(FLContextKey.CURRENT_RUN)) == str(tmp_path / "site-1" / "run_3")
    assert workspace.get_app_dir(3) == str(tmp_path / "site-1" / "run_3" / "app_site-1")
    assert ctx.get_identity_name() == "site-1" and ctx.get_run_number() == 3
    assert ctx.get_prop(FLContextKey.CLIENT_NAME) == "site-1"
    assert ctx.get_prop(FLContextKey.APP_ROOT) == str(tmp_path / "site-1" / "run_3" / "app_site-1")
    server = FlareEngine().new_context(run_context(tmp_path, "server"))
    assert server.get_identity_name() == "server" and server.get_prop(FLContextKey.CLIENT_NAME) is None


def test_flcomponent_logs_with_the_run_and_task_and_without_super_init(tmp_path, caplog):
    class Lazy(FLComponent):
        def __init__(self) -> None:  # FLARE components sometimes skip super().__init__()
            self.value = 1

    engine = FlareEngine()
    ctx = engine.new_context(run_context(tmp_path))
    ctx.set_prop(FLContextKey.TASK_NAME, "train", sticky=False)
    with caplog.at_level(logging.INFO):
        Lazy().log_info(ctx, "hello")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            Lazy().log_exception(ctx, "it failed")
    assert ("Lazy", logging.INFO, "[run=3, task=train]: hello") in caplog.record_tuples
    failed = next(r for r in caplog.records if r.getMessage().endswith("it failed"))
    assert failed.levelno == logging.ERROR and failed.exc_info is not None


def test_log_error_fires_an_event_and_system_panic_aborts_the_run(tmp_path, caplog):
    engine, recorder, signal = FlareEngine(), Recorder(), Signal()
    engine.add(recorder, "recorder")
    engine.start_run(run_context(tmp_path, "server"), signal)
    ctx = engine.new_context()
    recorder.log_error(ctx, "bad")
    recorder.system_panic("the model is gone", ctx)
    assert [seen[0] for seen in recorder.seen] == [
        EventType.ABOUT_TO_START_RUN,
        EventType.START_RUN,
        EventType.ERROR_LOG_AVAILABLE,
        EventType.FATAL_SYSTEM_ERROR,
    ]
    assert recorder.seen[-1][2] == "the model is gone"
    assert signal.triggered and signal.value == "system_panic by Recorder: the model is gone"
    assert engine.get_component("recorder") is recorder


def test_fl_broker_events_reach_handle_event_under_flare_names(tmp_path):
    engine, recorder = FlareEngine(), Recorder()
    engine.add(recorder)
    engine.on_event(Event(Lifecycle.ROUND_STARTED, run=3, round=0))  # before start_run: not delivered
    engine.start_run(run_context(tmp_path, "server"))
    engine.on_event(Event(Lifecycle.ROUND_STARTED, run=3, round=2, data={"num_rounds": 5}))
    engine.on_event(Event(Lifecycle.BEFORE_SAVE, run=3, round=2))
    engine.on_event(Event(Lifecycle.RUN_FAILED, run=3))  # no FLARE counterpart
    data = {"model_owner": "SRV_server", "data_client": "site-1", "metrics": {"acc": 0.5}}

    class Validation(Recorder):
        def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
            if event_type == AppEventType.VALIDATION_RESULT_RECEIVED:
                result = fl_ctx.get_prop(AppConstants.VALIDATION_RESULT)
                owner, site = fl_ctx.get_prop(AppConstants.MODEL_OWNER), fl_ctx.get_prop(AppConstants.DATA_CLIENT)
                self.seen.append((owner, site, from_shareable(result).data))

    validation = Validation()
    engine.add(validation)
    engine.on_event(Event(Lifecycle.VALIDATION_RESULT_RECEIVED, run=3, data=data))
    engine.end_run()
    names = [seen[0] for seen in recorder.seen]
    assert names[2:] == [
        AppEventType.ROUND_STARTED,
        AppEventType.BEFORE_LEARNABLE_PERSIST,
        AppEventType.VALIDATION_RESULT_RECEIVED,
        EventType.ABOUT_TO_END_RUN,
        EventType.END_RUN,
    ]
    assert recorder.seen[2][1] == 2
    assert validation.seen == [("SRV_server", "site-1", {"acc": 0.5})]


def test_a_failing_handler_does_not_stop_the_others(tmp_path, caplog):
    class Broken(FLComponent):
        def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
            raise RuntimeError("handler bug")

    engine, recorder = FlareEngine(), Recorder()
    engine.add(Broken())
    engine.add(recorder)
    engine.start_run(run_context(tmp_path))
    assert [seen[0] for seen in recorder.seen] == [EventType.ABOUT_TO_START_RUN, EventType.START_RUN]
    assert "Broken.handle_event(_start_run) failed" in caplog.text


def test_model_learnable_helpers():
    weights = {"w": np.ones(2)}
    learnable = make_model_learnable(weights, {"epoch": 1})
    assert isinstance(learnable, ModelLearnable) and not learnable.is_empty()
    assert make_model_learnable({}, {}).is_empty()
    assert validate_model_learnable(learnable) == ""
    assert "missing meta" in validate_model_learnable(ModelLearnable(weights=weights))
    assert "expected a ModelLearnable" in validate_model_learnable({"weights": weights, "meta": {}})
    dxo = model_learnable_to_dxo(learnable)
    assert dxo.data_kind == DataKind.WEIGHTS and dxo.data is weights and dxo.meta == {"epoch": 1}
    with pytest.raises(ValueError, match="missing weights"):
        model_learnable_to_dxo(ModelLearnable(meta={}))
    back = ModelLearnable.from_bytes(learnable.to_bytes())
    assert isinstance(back, ModelLearnable) and back["meta"] == {"epoch": 1}
    np.testing.assert_array_equal(back["weights"]["w"], weights["w"])
    assert Learnable.from_bytes(Learnable(a=1).to_bytes()) == {"a": 1}
