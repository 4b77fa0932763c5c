"""Broker URL lists (the nodes of a cluster): parsing, checks, and how every program takes them."""

from __future__ import annotations

import ssl

import pytest

from admin.main import describe_broker
from fl_broker.cli import build_parser
from fl_broker.transport import TransportOptions
from fl_broker.transport.rabbitmq.nodes import node_parameters
from fl_broker.transport.urls import host_of, safe_url, split_broker_urls

A = "amqp://site-1:pw@node-a:5672/%2Ffl"
B = "amqp://site-1:pw@node-b:5673/%2Ffl"
C = "amqp://site-1:pw@node-c/%2Ffl"


def test_a_comma_separated_list_is_split_into_urls():
    assert split_broker_urls(f"{A},{B}, {C} ") == [A, B, C]
    assert split_broker_urls(A) == [A]


def test_a_comma_inside_a_password_or_vhost_is_not_a_separator():
    odd = "amqp://site-1:p,w@node-a:5672/fl%2Cx,y"
    assert split_broker_urls(odd) == [odd]
    assert split_broker_urls(f"{odd},amqp://site-1:p,w@node-b/fl%2Cx,y") == [odd, "amqp://site-1:p,w@node-b/fl%2Cx,y"]


@pytest.mark.parametrize(
    "other",
    ["amqp://admin:pw@node-b:5672/%2Ffl", "amqps://site-1:pw@node-b:5671/%2Ffl", "amqp://site-1:pw@node-b/other"],
)
def test_every_url_of_a_list_must_share_scheme_login_and_vhost(other):
    with pytest.raises(ValueError, match="differs from the first one") as caught:
        split_broker_urls(f"{A},{other}")
    assert "pw" not in str(caught.value).replace("pw@", "")  # the password is masked as ***
    assert ":***@" in str(caught.value)


def test_an_empty_list_is_refused():
    with pytest.raises(ValueError, match="no broker URL"):
        split_broker_urls(" ")


def test_logs_see_the_host_only():
    assert host_of(A) == "amqp://node-a:5672" and host_of(C) == "amqp://node-c"
    assert safe_url(A) == "amqp://site-1:***@node-a:5672/%2Ffl"


def test_each_node_checks_tls_against_its_own_host_name():
    context = ssl.create_default_context()
    urls = ["amqps://u:p@node-a:5671/%2Ffl", "amqps://u:p@node-b.example:5671/%2Ffl"]
    nodes = node_parameters(urls, TransportOptions(), context)
    assert [host for host, _ in nodes] == ["amqps://node-a:5671", "amqps://node-b.example:5671"]
    assert [params.ssl_options.server_hostname for _, params in nodes] == ["node-a", "node-b.example"]
    assert [params.host for _, params in nodes] == ["node-a", "node-b.example"]


@pytest.mark.parametrize(
    "program, required",
    [
        ("server", ["--workspace", "w"]),
        ("worker", ["--site", "s", "--workspace", "w"]),
        ("admin", ["--workspace", "w"]),
    ],
)
def test_every_program_takes_a_list_repeated_option_or_env_file(program, required, monkeypatch):
    parse = build_parser().parse_args
    assert parse([program, *required, "--broker", f"{A},{B}"]).broker == f"{A},{B}"
    assert parse([program, *required, "--broker", A, "--broker", B, "--broker", C]).broker == f"{A},{B},{C}"
    monkeypatch.setenv("FL_BROKER_URL", f"{A},{B}")  # defaults are read when the parser is built
    parse = build_parser().parse_args
    assert parse([program, *required]).broker == f"{A},{B}"
    assert parse([program, *required, "--broker", C]).broker == C  # the option replaces the env default


def test_the_admin_banner_names_the_first_node_and_how_many_more():
    identity = describe_broker(f"{A},{B},{C}")
    assert identity.user == "site-1" and identity.where == "amqp://node-a:5672 (+2 more nodes) vhost /fl"


def test_the_worker_scrubs_the_password_of_every_url_of_a_list():
    from fl_broker.transport.urls import each_url
    from workers.scrub import url_passwords

    assert url_passwords(each_url("amqp://u:first@a/%2Ffl,amqp://u:second@b/%2Ffl")) == ["second", "first"]
