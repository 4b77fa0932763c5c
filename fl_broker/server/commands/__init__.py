"""The server's control-request handlers, one class per concern: `sessions` (workers registering and
heartbeating), `apps` (staging, run numbers, deploying), `runs` (start, abort, shutdown), `status`.

To add a command, write a method `cmd_NAME(self, request) -> JSON-able` on the class of its concern (or a
new class, listed in `ServerEngine._command_owners`); it is served under NAME. Raise BadRequest for a
request that is wrong or not allowed now: the caller gets the message. A command that may address the
server, the clients or both reads `SiteFanout.targets(request)` and runs its steps through
`SiteFanout.dispatch`. Every command is admin-only unless listed in `sessions.CLIENT_COMMANDS`.
"""

from __future__ import annotations

from fl_broker.protocol.control import BadRequest, Request, RequestHandler, command_handlers
from fl_broker.server.state import EngineState


def collect(*owners: object) -> dict[str, RequestHandler]:
    """The `cmd_*` handlers of every owner, by command name; a name defined twice is a bug."""
    handlers: dict[str, RequestHandler] = {}
    for owner in owners:
        for command, handler in command_handlers(owner).items():
            if command in handlers:
                raise ValueError(f"command {command!r} is defined by two handler classes")
            handlers[command] = handler
    return handlers


def requested_run(request: Request, state: EngineState) -> int:
    """The run a request names (its `run` argument), else the current run; BadRequest when neither is set."""
    run = request.arg("run", int, None)
    if run is None:
        run = state.run_number
    if run is None:
        raise BadRequest(f"no run number is set: name the run ({request.command} RUN)")
    return run
