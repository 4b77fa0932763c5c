"""Command handlers are collected by name from the classes of each concern."""

from __future__ import annotations

import pytest

from fl_broker.server.commands import collect


class Apps:
    def cmd_list_apps(self, request):
        return ["a"]

    def helper(self):  # not a command
        return None


class Status:
    def cmd_check_status(self, request):
        return {"engine_status": "stopped"}


def test_every_cmd_method_is_served_under_its_name():
    handlers = collect(Apps(), Status())
    assert sorted(handlers) == ["check_status", "list_apps"]
    assert handlers["list_apps"](None) == ["a"]


def test_a_command_defined_twice_is_refused():
    class MoreApps:
        def cmd_list_apps(self, request):
            return []

    with pytest.raises(ValueError, match="command 'list_apps' is defined by two handler classes"):
        collect(Apps(), MoreApps())
