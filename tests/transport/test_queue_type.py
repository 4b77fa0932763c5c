"""The queue type (classic or quorum) as configuration: names, the in-process transport, the programs' option."""

from __future__ import annotations

import pytest

from fl_broker.cli import build_parser
from fl_broker.errors import QueueTypeMismatch
from fl_broker.program import transport_options
from fl_broker.transport import TransportOptions
from fl_broker.transport.memory import MemoryBroker
from fl_broker.wire import names


def test_every_queue_of_a_topology_gets_the_type_and_keeps_its_arguments():
    plain = names.server_topology()
    quorum = names.with_queue_type(plain, names.QUORUM)
    assert [q.name for q in quorum.queues] == [q.name for q in plain.queues]
    for before, after in zip(plain.queues, quorum.queues, strict=True):
        assert after.arguments == {**before.arguments, "x-queue-type": "quorum"}
        assert after.bindings == before.bindings
    assert names.with_queue_type(quorum, names.CLASSIC).queues[0].arguments["x-queue-type"] == "classic"
    with pytest.raises(ValueError, match="unknown queue type 'stream': use classic or quorum"):
        names.with_queue_type(plain, "stream")


def test_memory_transport_refuses_a_queue_of_the_other_type_naming_it_and_the_way_out():
    broker = MemoryBroker()
    broker.connect(user="server", options=TransportOptions(queue_type="quorum")).declare(names.server_topology())
    classic = broker.connect(user="server")
    with pytest.raises(QueueTypeMismatch) as caught:
        classic.declare(names.server_topology())
    message = str(caught.value)
    assert message.startswith(f"queue {names.SERVER_RESULT_QUEUE!r} exists as a quorum queue but this program")
    assert "--queue-type quorum" in message and "rabbitmqctl delete_queue fl.result.server" in message


@pytest.mark.parametrize("program", ["server", "worker", "poc"])
def test_every_program_takes_the_queue_type_from_its_option_or_the_env_file(program, monkeypatch):
    required = {"server": ["--workspace", "w"], "worker": ["--site", "s", "--workspace", "w"], "poc": ["app"]}
    args = build_parser().parse_args([program, *required[program]])
    assert args.queue_type == "auto"
    monkeypatch.setenv("FL_QUEUE_TYPE", "quorum")
    args = build_parser().parse_args([program, *required[program]])
    assert args.queue_type == "quorum"
    if program != "poc":
        assert transport_options(args, "x").queue_type == "quorum"
    args = build_parser().parse_args([program, *required[program], "--queue-type", "classic"])
    assert args.queue_type == "classic"
    with pytest.raises(SystemExit):
        build_parser().parse_args([program, *required[program], "--queue-type", "lazy"])


def test_auto_picks_quorum_for_a_cluster_and_classic_for_one_node():
    assert names.resolve_queue_type("auto", 3) == "quorum"
    assert names.resolve_queue_type("auto", 1) == "classic"
    assert names.resolve_queue_type("classic", 3) == "classic"
    with pytest.raises(ValueError, match="unknown queue type 'lazy'"):
        names.resolve_queue_type("lazy", 1)


def test_auto_keeps_the_type_of_queues_that_exist_on_the_memory_transport():
    broker = MemoryBroker()
    broker.connect(user="server", options=TransportOptions(queue_type="quorum")).declare(names.server_topology())
    broker.connect(user="server", options=TransportOptions(queue_type="auto")).declare(names.server_topology())
    broker.connect(user="site-1", options=TransportOptions(queue_type="auto")).declare(names.site_topology("site-1"))
    assert broker.queues[names.SERVER_RESULT_QUEUE].arguments["x-queue-type"] == "quorum"
    assert broker.queues[names.task_queue("site-1")].arguments["x-queue-type"] == "classic"  # new, one node


def test_provision_defaults_to_quorum_for_several_hosts():
    from fl_broker.ops import provision

    assert provision.make_plan(["a"], host="n1,n2,n3").queue_type == "quorum"
    assert provision.make_plan(["a"], host="n1").queue_type == "classic"
    assert provision.make_plan(["a"], host="n1,n2", queue_type="classic").queue_type == "classic"
