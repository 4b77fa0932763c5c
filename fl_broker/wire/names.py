"""Every exchange, queue and routing key name of the wire contract. Nothing else spells them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from fl_broker.errors import InvalidSiteName

DEFAULT_VHOST = "/fl"

TASK_EXCHANGE = "fl.task"
RESULT_EXCHANGE = "fl.result"
CONTROL_EXCHANGE = "fl.control"
EVENT_EXCHANGE = "fl.event"
DEAD_LETTER_EXCHANGE = "fl.dlx"
DROPPED_EXCHANGE = "fl.dlx.dropped"  # where fl.dead-letters sends the oldest dead letters it drops
REPLY_EXCHANGE = "fl.reply"  # topic: each reply queue is bound under its own name (see reply_topology)
DEFAULT_EXCHANGE = ""  # AMQP's default exchange routes by queue name; fl-broker does not use it

SERVER = "server"  # routing key of the server on fl.result and fl.control
SERVER_RESULT_QUEUE = "fl.result.server"
SERVER_CONTROL_QUEUE = "fl.control.server"
DEAD_LETTER_QUEUE = "fl.dead-letters"
# Who of the servers sharing one workspace is active: the one whose connection holds this exclusive queue
# (the broker deletes it when that connection closes or is lost). Each standby consumes the durable
# fl.server.standby, so its consumer count tells the active one how many standbys wait.
SERVER_LOCK_QUEUE = "fl.server.active"
SERVER_STANDBY_QUEUE = "fl.server.standby"
DROPPED_QUEUE = "fl.dead-letters.dropped"  # its depth counts the dead letters fl.dead-letters dropped
EVENT_HISTORY_QUEUE = "fl.event.history"
EVENT_HISTORY_LENGTH = 1000

# Bounds of the dead-letter queues, applied by broker policies (see POLICIES) rather than queue arguments.
DEAD_LETTER_MAX_LENGTH = 10_000
DEAD_LETTER_MAX_BYTES = 128 * 1024 * 1024
DROPPED_MAX_LENGTH = 10_000
DROPPED_MAX_BYTES = 32 * 1024 * 1024

# Durable queues are declared with an explicit `x-queue-type`: classic (one node holds each queue) or quorum
# (replicated over a cluster's nodes by Raft, survives the loss of a minority of them). An explicit classic
# is equivalent to none on RabbitMQ 3.10, so queues declared before this argument existed still match.
QUEUE_TYPE_ARGUMENT = "x-queue-type"
CLASSIC, QUORUM = "classic", "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)
DEFAULT_QUEUE_TYPE = CLASSIC
# The programs' default: quorum when the broker is a cluster (the programs are given several of its nodes),
# classic on one node; a queue that exists already keeps its type (see resolve_queue_type).
AUTO = "auto"
QUEUE_TYPE_CHOICES = (AUTO, *QUEUE_TYPES)

REJECT_REASON_HEADER = "x-fl-reject-reason"
REJECT_QUEUE_HEADER = "x-fl-rejected-from"
CONTENT_TYPE = "application/msgpack"

# A lifecycle event on fl.event also says what it is in AMQP headers, which the management UI shows as text
# where it shows a msgpack body as bytes ("Get messages" on fl.event.history): the type, run and round, one
# line for people, and each small detail of the event (accepted, seconds, site, metrics ...) as its own
# header, EVENT_DETAIL_PREFIX + the detail's name with '-' for '_' (e.g. x-fl-accepted, x-fl-metrics); numbers
# that are not integers are text there (6 significant digits), as AMQP tables written by pika have no float.
EVENT_TYPE_HEADER = "x-fl-event"
EVENT_RUN_HEADER = "x-fl-run"
EVENT_ROUND_HEADER = "x-fl-round"
EVENT_SUMMARY_HEADER = "x-fl-summary"
EVENT_DETAIL_PREFIX = "x-fl-"

_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def check_site_name(site: str) -> str:
    """Return `site` if it is a valid site name (letters, digits, '-', '_'), else raise InvalidSiteName."""
    if site == SERVER or not _SITE_NAME.match(site):
        raise InvalidSiteName(f"invalid site name {site!r}: use letters, digits, '-' or '_' (not 'server')")
    return site


def task_queue(site: str) -> str:
    """The queue a site reads its tasks from."""
    return f"fl.task.{check_site_name(site)}"


def site_control_queue(site: str) -> str:
    """The queue a site reads control requests from."""
    return f"fl.control.{check_site_name(site)}"


def event_key(run: int, *parts: object) -> str:
    """Topic routing key of a lifecycle event, e.g. event_key(1, 'round', 3, 'done') -> run.1.round.3.done."""
    return ".".join(["run", str(run), *(str(p) for p in parts)])


@dataclass(frozen=True)
class ExchangeSpec:
    """An exchange to declare."""

    name: str
    type: str


@dataclass(frozen=True)
class QueueSpec:
    """A durable queue to declare, with its bindings as (exchange, routing key) pairs."""

    name: str
    bindings: tuple[tuple[str, str], ...] = ()
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicySpec:
    """A RabbitMQ policy: `definition` applies to every queue whose name matches `pattern` (a regex).

    Limits live in policies, not in queue arguments, because a queue that exists cannot be declared again
    with other arguments (406 PRECONDITION_FAILED): a policy bounds the queues of a running deployment at
    once, and operators can change it (`rabbitmqctl set_policy`) without deleting a queue."""

    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 10
    apply_to: str = "queues"


@dataclass(frozen=True)
class Topology:
    """Exchanges and queues that one participant declares (idempotently) when it connects."""

    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]


EXCHANGES = (
    ExchangeSpec(TASK_EXCHANGE, "direct"),
    ExchangeSpec(RESULT_EXCHANGE, "direct"),
    ExchangeSpec(CONTROL_EXCHANGE, "direct"),
    ExchangeSpec(EVENT_EXCHANGE, "topic"),
    ExchangeSpec(DEAD_LETTER_EXCHANGE, "fanout"),
    ExchangeSpec(DROPPED_EXCHANGE, "fanout"),
    ExchangeSpec(REPLY_EXCHANGE, "topic"),
)


def reply_topology() -> Topology:
    """The exchange replies travel on. A reply goes to fl.reply with the reply queue's name as routing key,
    not through the default exchange: permission to write to the default exchange is permission to put a
    message into any queue (fl.event.history, another site's queues), which sites must not have. A topic
    exchange, because RabbitMQ's topic permissions can then limit which keys a login may bind (its own
    queues' names) and publish to (the server's reply queues)."""
    return Topology(exchanges=(ExchangeSpec(REPLY_EXCHANGE, "topic"),), queues=())


def standby_topology() -> Topology:
    """The queue standby servers consume (nothing is ever published to it: its consumers are the standbys)."""
    return Topology(exchanges=(), queues=(QueueSpec(SERVER_STANDBY_QUEUE),))


# Work queues dead-letter into fl.dlx, so messages the broker drops (nack, expiry) are kept too.
_WORK_QUEUE_ARGS: dict[str, Any] = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}


def server_topology() -> Topology:
    """What the server declares: every exchange, its own queues, the dead-letter and event history queues."""
    return Topology(
        exchanges=EXCHANGES,
        queues=(
            QueueSpec(SERVER_RESULT_QUEUE, ((RESULT_EXCHANGE, SERVER),), dict(_WORK_QUEUE_ARGS)),
            QueueSpec(SERVER_CONTROL_QUEUE, ((CONTROL_EXCHANGE, SERVER),), dict(_WORK_QUEUE_ARGS)),
            QueueSpec(DEAD_LETTER_QUEUE, ((DEAD_LETTER_EXCHANGE, ""),)),
            QueueSpec(DROPPED_QUEUE, ((DROPPED_EXCHANGE, ""),)),
            QueueSpec(
                EVENT_HISTORY_QUEUE,
                ((EVENT_EXCHANGE, "#"),),
                {"x-max-length": EVENT_HISTORY_LENGTH, "x-overflow": "drop-head"},
            ),
        ),
    )


def site_topology(site: str) -> Topology:
    """What a site declares: every exchange and its own task and control queues."""
    return Topology(
        exchanges=EXCHANGES,
        queues=(
            QueueSpec(task_queue(site), ((TASK_EXCHANGE, site),), dict(_WORK_QUEUE_ARGS)),
            QueueSpec(site_control_queue(site), ((CONTROL_EXCHANGE, site),), dict(_WORK_QUEUE_ARGS)),
        ),
    )


def _only(queue: str) -> str:
    """A policy pattern matching exactly `queue`."""
    return "^" + re.escape(queue).replace("\\-", "-") + "$"  # '-' needs no escape outside [...]


# Both dead-letter queues drop their oldest message when full. fl.dead-letters sends what it drops on to
# fl.dead-letters.dropped, whose depth (in `fl-broker status` and the management UI) counts the drops
# while they fit its own bounds; it drops silently. Lazy mode keeps their bodies on disk, not in memory.
POLICIES = (
    PolicySpec(
        "fl-dead-letters",
        _only(DEAD_LETTER_QUEUE),
        {
            "max-length": DEAD_LETTER_MAX_LENGTH,
            "max-length-bytes": DEAD_LETTER_MAX_BYTES,
            "overflow": "drop-head",
            "dead-letter-exchange": DROPPED_EXCHANGE,
            "queue-mode": "lazy",
        },
    ),
    PolicySpec(
        "fl-dead-letters-dropped",
        _only(DROPPED_QUEUE),
        {
            "max-length": DROPPED_MAX_LENGTH,
            "max-length-bytes": DROPPED_MAX_BYTES,
            "overflow": "drop-head",
            "queue-mode": "lazy",
        },
    ),
)


def check_queue_type(queue_type: str) -> str:
    """Return `queue_type` if fl-broker can declare its queues with it, else raise ValueError."""
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"unknown queue type {queue_type!r}: use {' or '.join(QUEUE_TYPES)}")
    return queue_type


def resolve_queue_type(queue_type: str, nodes: int) -> str:
    """The type new queues get: `queue_type` itself, or for "auto" quorum when the broker URLs name several
    nodes (a cluster, where a classic queue dies with its one node) and classic for a single node."""
    if queue_type == AUTO:
        return QUORUM if nodes > 1 else CLASSIC
    return check_queue_type(queue_type)


def with_queue_type(topology: Topology, queue_type: str) -> Topology:
    """`topology` with every queue declared as `queue_type`. Only durable, shared queues are in topologies;
    exclusive reply and watch queues are declared elsewhere and stay classic (quorum queues cannot be
    exclusive). Every argument the topology uses (dead-lettering, x-max-length with drop-head, and
    per-message TTL on publish) works on quorum queues from RabbitMQ 3.10 on."""
    check_queue_type(queue_type)
    queues = tuple(replace(q, arguments={**q.arguments, QUEUE_TYPE_ARGUMENT: queue_type}) for q in topology.queues)
    return replace(topology, queues=queues)
