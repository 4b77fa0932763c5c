"""The one error hierarchy of fl-broker: every exception class it defines is here, under FlBrokerError.
Third-party exceptions are translated at the boundary (`raise ConnectionLost(...) from exc`).

    FlBrokerError
    ├── ConfigError            an app config or a program option is wrong
    ├── InvalidSiteName        a site name fl-broker cannot use
    ├── UnsafeArchive          an app archive or app name that could escape its folder
    ├── MessageRefused         a received message is not acted on (dead-lettered or answered with why)
    │   ├── DecodeError        its body, envelope or fields are not what its kind needs
    │   └── Unauthorized       its sender's login may not send it
    ├── TransportError         messaging failures
    │   ├── ConnectionLost, AuthenticationFailed, PublishFailed, MessageTooLarge
    │   ├── QueueTypeMismatch  a queue exists as another type (classic/quorum) than the one configured
    │   └── ChunkError         a chunk that does not fit its stream
    ├── BadRequest             a control request that is malformed or not allowed now
    ├── RemoteError            a request answered with an error (carried as data)
    ├── RequestTimeout         a request got no reply in time
    ├── NotListening           nothing consumes the queue a request is for (its program is not running)
    ├── JobFailed              `simulate` / `poc` could not run the job to its end
    ├── AggregationError       a round's contributions give no usable aggregate
    ├── WorkflowFailed         a workflow ran but its outcome is not a result (e.g. no round accepted anything)
    ├── CheckpointError        a run's saved checkpoint cannot be read, so the run cannot resume
    ├── SecAggError            secure aggregation cannot go on (its extra is missing, a protocol message is wrong)
    ├── NodeError              a private RabbitMQ node could not be started, reached or stopped
    ├── StatusError            the management API could not be reached (`fl-broker status`)
    ├── UsageError             words typed in the admin console that do not fit the command
    └── WorkspaceRefused       a look into a workspace that leaves it, follows a link out, or is too big
"""

from __future__ import annotations


class FlBrokerError(Exception):
    """Base class of every error fl-broker raises on purpose."""


class ConfigError(FlBrokerError):
    """An app config or a program option is wrong; the message names the file and the key."""


class InvalidSiteName(FlBrokerError):
    """A site name with characters a queue name or a login cannot take, or the reserved name 'server'."""


class UnsafeArchive(FlBrokerError):
    """An app archive with absolute paths, '..', links or an excessive size, or an unsafe app name."""


class MessageRefused(FlBrokerError):
    """A received message is not acted on; the message is the reason it is dead-lettered or answered with."""


class DecodeError(MessageRefused):
    """A message body could not be decoded, or is not what its kind needs; the message says what was wrong."""


class Unauthorized(MessageRefused):
    """The sender's broker login (checked by RabbitMQ through user_id) may not send this message."""


class TransportError(FlBrokerError):
    """Base class of messaging failures."""


class ConnectionLost(TransportError):
    """The broker connection went away and could not be restored in time."""


class AuthenticationFailed(TransportError):
    """The broker refused the credentials; retrying will not help."""


class PublishFailed(TransportError):
    """The broker did not confirm a message (nacked, unroutable or refused)."""


class MessageTooLarge(TransportError):
    """A body is over the configured size limit."""


class QueueTypeMismatch(TransportError):
    """A durable queue exists with another `x-queue-type` than this program declares; retrying cannot help."""

    def __init__(self, queue: str, current: str, wanted: str) -> None:
        super().__init__(
            f"queue {queue!r} exists as a {current} queue but this program declares {wanted} queues "
            f"(--queue-type / FL_QUEUE_TYPE): run every program with --queue-type {current}, or "
            f"{migration(queue, wanted)}"
        )
        self.queue, self.current, self.wanted = queue, current, wanted


def migration(queue: str, wanted: str) -> str:
    """How an operator turns the queues of a federation into `wanted` queues (a queue's type is fixed when it
    is created), starting with the queue `queue`."""
    return (
        f"migrate: stop the federation, drain and delete the queues (rabbitmqctl delete_queue {queue} -p VHOST, "
        f"and likewise the other fl.* queues), then start the server with --queue-type {wanted}"
    )


class LockLost(TransportError):
    """Another connection took a lock this transport held (see Transport.hold_lock): it has stopped for good."""


class ChunkError(TransportError):
    """A chunk does not fit its stream; `stream` names the stream (None if unreadable)."""

    def __init__(self, message: str, stream: str | None = None) -> None:
        super().__init__(message)
        self.stream = stream
        self.partial: memoryview | None = None  # the stream's bytes received before the error, if any


class BadRequest(FlBrokerError):
    """The request is malformed or not allowed now; the message tells the caller why."""


class RemoteError(FlBrokerError):
    """A request was answered with an error; carries the remote error as data."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class RequestTimeout(FlBrokerError):
    """A request got no reply in time."""


class JobFailed(FlBrokerError):
    """The job could not be run to the end; the message says at which step."""


class NodeError(FlBrokerError):
    """The node could not be started, reached or stopped; the message includes the log tail if useful."""


class StatusError(FlBrokerError):
    """The management API could not be reached or refused the request."""


class UsageError(FlBrokerError):
    """The words typed do not fit the command; the message is its usage line."""


class NotListening(FlBrokerError):
    """Nothing consumes the queue a request is for (its program is not running), so no reply can come."""


class AggregationError(FlBrokerError):
    """A round's contributions give no usable aggregate (e.g. nothing with a positive weight); the round
    fails and the global model stays as it was."""


class WorkflowFailed(FlBrokerError):
    """A workflow ran to its end without a usable outcome; the message is the reason the run failed."""


class CheckpointError(FlBrokerError):
    """A run's checkpoint exists but cannot be read; resuming from anything else would give wrong weights."""


class SecAggError(FlBrokerError):
    """Secure aggregation cannot go on: the `secagg` extra (cryptography) is missing, or a message of the
    protocol is not what its phase needs (the message says which site, phase and field)."""


class WorkspaceRefused(FlBrokerError):
    """A workspace command (ls, cat, ...) that would leave the participant's workspace, follow a link out of
    it, read something that is not a regular file, or read too much; the message says which."""
