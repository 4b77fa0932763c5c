"""deploy/rabbitmq/definitions.json and `fl-broker provision` output, checked against the code."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fl_broker.errors import InvalidSiteName
from fl_broker.ops import provision
from fl_broker.wire import names

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"


def declared(vhost: str, sites: list[str], queue_type: str = names.CLASSIC) -> tuple[set, set, set]:
    """(exchanges, queues, bindings) as the programs declare them, rebuilt straight from fl_broker.wire.names."""
    exchanges, queues, bindings = set(), set(), set()
    for plain in [names.server_topology(), *(names.site_topology(s) for s in sites)]:
        topology = names.with_queue_type(plain, queue_type)
        exchanges |= {(e.name, e.type, True, False) for e in topology.exchanges}
        for q in topology.queues:
            queues.add((q.name, True, False, json.dumps(q.arguments, sort_keys=True)))
            bindings |= {(exchange, q.name, key) for exchange, key in q.bindings}
    return exchanges, queues, bindings


def in_file(defs: dict, vhost: str) -> tuple[set, set, set]:
    assert {e["vhost"] for e in defs["exchanges"] + defs["queues"] + defs["bindings"]} == {vhost}
    exchanges = {(e["name"], e["type"], e["durable"], e["auto_delete"]) for e in defs["exchanges"]}
    queues = {(q["name"], q["durable"], q["auto_delete"], json.dumps(q["arguments"], sort_keys=True))
              for q in defs["queues"]}  # fmt: skip
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]}
    assert all(b["destination_type"] == "queue" for b in defs["bindings"])
    return exchanges, queues, bindings


def policies_in(defs: dict, vhost: str) -> dict[str, tuple]:
    assert {p["vhost"] for p in defs["policies"]} == {vhost}
    return {p["name"]: (p["pattern"], p["apply-to"], p["priority"], p["definition"]) for p in defs["policies"]}


def expected_policies() -> dict[str, tuple]:
    return {p.name: (p.pattern, p.apply_to, p.priority, p.definition) for p in names.POLICIES}


def test_deploy_definitions_match_the_code():
    defs = json.loads(DEFINITIONS.read_text())
    assert defs["vhosts"] == [{"name": names.DEFAULT_VHOST}]
    assert in_file(defs, names.DEFAULT_VHOST) == declared(names.DEFAULT_VHOST, ["site-1", "site-2"])
    assert policies_in(defs, names.DEFAULT_VHOST) == expected_policies()
    assert len(defs["queues"]) == len({q["name"] for q in defs["queues"]})  # no duplicates
    assert "users" not in defs and "permissions" not in defs  # no secrets in the repository


def test_provisioned_definitions_match_the_code():
    plan = provision.make_plan(["a", "b", "c"], vhost="/fed")
    defs = provision.definitions(plan)
    assert in_file(defs, "/fed") == declared("/fed", ["a", "b", "c"])
    assert policies_in(defs, "/fed") == expected_policies()
    assert {u["name"] for u in defs["users"]} == {"server", "admin", "a", "b", "c"}
    assert {p["user"] for p in defs["permissions"]} == {"server", "admin", "a", "b", "c"}
    assert {(t["user"], t["exchange"]) for t in defs["topic_permissions"]} == {
        (user, names.REPLY_EXCHANGE) for user in ("admin", "a", "b", "c")
    }
    assert not any("amq.default" in p["write"] for p in defs["permissions"])  # nobody writes to any queue


def test_dead_letter_policies_bound_both_queues_and_only_them():
    import re

    queues = (names.DEAD_LETTER_QUEUE, names.DROPPED_QUEUE, "fl.dead-letters-x", "fl.dead-letters.dropped2")
    by_queue = {q: [p for p in names.POLICIES if re.fullmatch(p.pattern, q)] for q in queues}
    main, dropped = by_queue[names.DEAD_LETTER_QUEUE], by_queue[names.DROPPED_QUEUE]
    assert len(main) == 1 and len(dropped) == 1 and not by_queue["fl.dead-letters-x"]
    assert not by_queue["fl.dead-letters.dropped2"]
    assert main[0].definition["overflow"] == "drop-head" and dropped[0].definition["overflow"] == "drop-head"
    assert main[0].definition["dead-letter-exchange"] == names.DROPPED_EXCHANGE  # drops are counted ...
    assert "dead-letter-exchange" not in dropped[0].definition  # ... and the counter drops silently (no cycle)
    # The limits are policies, not arguments: an existing fl.dead-letters (no arguments) is declared unchanged.
    [dlq] = [q for q in names.server_topology().queues if q.name == names.DEAD_LETTER_QUEUE]
    assert dlq.arguments == {}


def test_provisioned_limits_bound_every_login_but_the_server():
    plan = provision.make_plan(["a", "b"], vhost="/fed")
    defs = provision.definitions(plan)
    limits = {u["name"]: u.get("limits") for u in defs["users"]}
    assert limits == {"server": None, "admin": provision.ADMIN_LIMITS, "a": provision.SITE_LIMITS,
                      "b": provision.SITE_LIMITS}  # fmt: skip
    [vhost_limits] = defs["parameters"]
    assert vhost_limits["component"] == "vhost-limits" and vhost_limits["vhost"] == "/fed"
    site, admin = provision.SITE_LIMITS["max-connections"], provision.ADMIN_LIMITS["max-connections"]
    assert vhost_limits["value"]["max-connections"] == provision.SERVER_CONNECTIONS + 2 * site + admin
    assert vhost_limits["value"]["max-queues"] == len(defs["queues"]) + 4 * provision.PRIVATE_QUEUES_PER_LOGIN


def test_provisioned_quorum_definitions_and_env_files_agree_on_the_queue_type(tmp_path):
    plan = provision.make_plan(["a", "b"], queue_type="quorum")
    vhost = names.DEFAULT_VHOST
    assert in_file(provision.definitions(plan), vhost) == declared(vhost, ["a", "b"], "quorum")
    provision.write_plan(plan, tmp_path)
    for login in ("server", "a", "b", "admin"):
        assert provision.read_env_file(tmp_path / f"{login}.env")["FL_QUEUE_TYPE"] == "quorum"
    with pytest.raises(ValueError, match="unknown queue type"):
        provision.make_plan(["a"], queue_type="mirrored")


def test_provisioning_for_a_cluster_lists_one_url_per_node(tmp_path):
    from fl_broker.transport.urls import split_broker_urls

    plan = provision.make_plan(["site-1"], host="node-a, node-b,node-c", port=5672)
    provision.write_plan(plan, tmp_path)
    urls = split_broker_urls(provision.read_env_file(tmp_path / "site-1.env")["FL_BROKER_URL"])
    assert [u.split("@")[1] for u in urls] == [f"node-{n}:5672/%2Ffl" for n in "abc"]
    assert len({u.split("@")[0] for u in urls}) == 1  # one login, one password for every node
    assert plan.mgmt_url == "http://node-a:15672"


def test_password_hash_is_rabbitmqs_salted_sha256():
    encoded = provision.password_hash("s3cret", salt=b"\x01\x02\x03\x04")
    raw = base64.b64decode(encoded)
    assert raw[:4] == b"\x01\x02\x03\x04" and raw[4:] == hashlib.sha256(b"\x01\x02\x03\x04s3cret").digest()
    assert provision.password_hash("s3cret") != provision.password_hash("s3cret")  # fresh salt each time


@pytest.mark.parametrize("site", ["site-1", "a.b"])
def test_site_permissions_name_only_its_own_resources(site):
    if "." in site:
        with pytest.raises(InvalidSiteName, match="invalid site name 'a.b'"):
            provision.make_plan([site])
        return
    import re

    perm = provision.site_permission(site)
    read = re.compile(perm.read)
    assert read.match(f"fl.task.{site}") and read.match(f"fl.control.{site}") and read.match(f"fl.private.{site}.x1")
    for other in ("fl.task.site-2", "fl.task.site-10", f"fl.task.{site}0", "fl.result.server", "fl.event.history",
                  f"fl.private.{site}", "fl.private.site-2.x"):  # fmt: skip
        assert not read.match(other), other
    write = re.compile(perm.write)
    assert write.match("fl.result") and write.match("fl.control") and write.match("fl.reply")
    assert write.match(f"fl.private.{site}.x1")  # binding its reply queue needs write on the queue
    for other in ("amq.default", "fl.task", "fl.event", "fl.resultx", "fl.event.history", "fl.private.site-2.x"):
        assert not write.match(other), other
    [topics] = perm.topics  # on fl.reply: bind own queue names, reply to the server's reply queues only
    assert topics.exchange == names.REPLY_EXCHANGE
    assert re.match(topics.read, f"fl.private.{site}.ab12") and not re.match(topics.read, "fl.private.server.ab12")
    assert not re.match(topics.read, "#") and not re.match(topics.read, "fl.private.#")
    assert re.match(topics.write, "fl.private.server.ab12") and not re.match(topics.write, "fl.private.admin.ab12")
    assert not re.match(topics.write, f"fl.private.{site}.ab12") and not re.match(topics.write, "fl.event.history")
    assert not re.compile(perm.configure).match(f"fl.task.{site}")


def test_provision_command_writes_private_files_and_prints_no_secret(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fl_broker.cli", "provision", "--sites", "site-1,site-2", "--out", str(out),
               "--host", "broker.example", "--port", "5671", "--tls", "--tls-dir", "/etc/fl-broker/tls"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["admin.env", "definitions.json", "server.env", "site-1.env", "site-2.env"]
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    envs = {name: provision.read_env_file(out / f"{name}.env") for name in ("server", "site-1", "admin")}
    passwords = set()
    for name, env in envs.items():
        assert (
            env["FL_BROKER_URL"].startswith(f"amqps://{name}:") and "@broker.example:5671/%2Ffl" in env["FL_BROKER_URL"]
        )
        assert env["FL_TLS_CA"] == "/etc/fl-broker/tls/ca.pem"
        passwords.add(env["FL_BROKER_URL"].split(":")[2].split("@")[0])
    assert len(passwords) == 3 and all(len(p) >= 30 for p in passwords)
    for password in passwords:
        assert password not in done.stdout + done.stderr
        assert password not in (out / "definitions.json").read_text()
    assert envs["server"]["FL_ADMIN_USERS"] == "admin" and envs["server"]["FL_ENFORCE_SITE_USERS"] == "1"
    assert envs["site-1"]["FL_PREDECLARED"] == "1"
