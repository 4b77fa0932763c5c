"""The life of a long-running program: fl_broker.program (no broker)."""

from __future__ import annotations

import argparse
import threading

import pytest

from fl_broker.program import add_transport_arguments, run_until_stopped, transport_options


def test_a_stop_request_ends_the_program_with_status_0() -> None:
    stop, calls = threading.Event(), []
    stop.set()
    code = run_until_stopped(stop, start=lambda: calls.append("start"), close=lambda: calls.append("close"))
    assert code == 0 and calls == ["start", "close"]


def test_a_failure_such_as_a_dead_consumer_ends_the_program_with_status_1(caplog: pytest.LogCaptureFixture) -> None:
    closed = []
    code = run_until_stopped(
        threading.Event(),
        start=lambda: None,
        close=lambda: closed.append(True),
        failure=lambda: "consumer of fl.result.server stopped: MemoryError()",
    )
    assert code == 1 and closed == [True]
    assert "consumer of fl.result.server stopped" in caplog.text


def test_sizes_take_suffixes_and_bad_ones_are_refused_with_usage() -> None:
    parser = argparse.ArgumentParser()
    add_transport_arguments(parser)
    options = transport_options(parser.parse_args(["--chunk-size", "64K", "--max-body-size", "2M"]), "site-1")
    assert (options.chunk_size, options.max_body_size, options.client_name) == (65536, 2 * 1024 * 1024, "site-1")
    assert transport_options(parser.parse_args(["--chunk-size", "8MiB"]), "x").chunk_size == 8 * 1024 * 1024
    for bad in ("lots", "0", "-5K"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--chunk-size", bad])


def test_the_broker_heartbeat_comes_from_the_option_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    def heartbeat(*argv: str) -> int:
        parser = argparse.ArgumentParser()
        add_transport_arguments(parser)
        return transport_options(parser.parse_args(list(argv)), "server").heartbeat

    assert heartbeat() == 30
    assert heartbeat("--heartbeat", "3") == 3
    monkeypatch.setenv("FL_HEARTBEAT", "7")
    assert heartbeat() == 7
    assert heartbeat("--heartbeat", "5") == 5
