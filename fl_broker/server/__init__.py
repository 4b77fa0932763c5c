"""The server program (`main`) and its parts: `engine` wires them together; `state` (run state and
engine.json), `sessions` (registered sites), `runs` (run control and the workflow thread), `fanout`
(server/client/all targets, asking sites), `commands/` (the control-request handlers), `task_channel`
(tasks out, results in) and `event_stream` (lifecycle events to fl.event)."""
