"""The `fl-broker` command itself: --version, and --help that shows defaults without secrets."""

from __future__ import annotations

import pytest

from fl_broker import __version__
from fl_broker.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"fl-broker {__version__}"


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["poc", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert "(default: 2)" in text and "(default: workspace)" in text and "(default: 3600)" in text
    assert "(default: start a private local node)" in text  # a help text naming its default is left alone
    assert "(default: None)" not in text and "(default: False)" not in text


def test_help_never_shows_a_password_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FL_BROKER_URL", "amqp://admin:s3cr3t@broker.example:5672/%2Ffl")
    for program in ("admin", "server", "worker"):
        with pytest.raises(SystemExit):
            main([program, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "amqp://admin:***@broker.example:5672/%2Ffl" in text and "s3cr3t" not in text
        assert "(default: 10.0)" in text if program == "admin" else "(default: INFO)" in text
