"""Loaded at start-up by a process whose PYTHONPATH starts with this folder (tests only): with
FL_TEST_KILL_BEFORE=NAME:N[:AFTER:M] the process os._exit()s just before its N-th rename onto a file called
NAME that follows its M-th rename onto a file called AFTER, the way a kill at that instruction would end it."""

from __future__ import annotations

import os
import sys
from typing import Any

KILLED = 137


def _install(spec: str) -> None:
    name, count, *after = spec.split(":")
    after_name, after_count = (after[0], int(after[1])) if after else (None, 0)
    seen = {"target": 0, "after": 0}

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "os.rename" or isinstance(args[1], int):
            return
        target = os.path.basename(os.fsdecode(args[1]))
        if target == after_name:
            seen["after"] += 1
        if target == name and seen["after"] >= after_count:
            seen["target"] += 1
            if seen["target"] == int(count):
                os._exit(KILLED)

    sys.addaudithook(hook)


if os.environ.get("FL_TEST_KILL_BEFORE"):
    _install(os.environ["FL_TEST_KILL_BEFORE"])
