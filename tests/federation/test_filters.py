"""FLARE's filter chains end to end on the in-process transport: every hook in its place, and refusals
(a server data filter returning None, a site's result filter raising) that refuse one round's task or
result with the reason, show up in show_errors, and leave the server and the workers running."""

from __future__ import annotations

import logging

from tests.support.filter_apps import check_filters_end_to_end
from tests.support.inprocess import InProcessFederation


def test_filter_chains_in_process(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    fed = InProcessFederation(tmp_path / "ws", ["site-1", "site-2"])
    try:
        fed.wait_registered(2)
        check_filters_end_to_end(fed, tmp_path / "ws", tmp_path / "apps", log=lambda name: caplog.text)
    finally:
        fed.close()
