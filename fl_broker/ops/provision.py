"""Broker accounts for a federation: one RabbitMQ user per participant, least-privilege permissions, and the
topology as RabbitMQ definitions (the JSON that `rabbitmqctl import_definitions` and POST /api/definitions load).

Permissions are three regular expressions per user and vhost (configure, write, read), matched against
exchange and queue names; the default exchange is named `amq.default` for this purpose. What each program
needs, found by running them against a node loaded with these definitions:

- a site: reads its own task and control queues and its private reply queues (`fl.private.<site>.*`, which
  it also declares and binds to `fl.reply` under their own names); publishes results to `fl.result`,
  requests to `fl.control`, and replies to `fl.reply`, with topic permissions that allow only its own
  queue names as binding keys and only the server's reply queues as routing keys. It may not use the
  default exchange, which would let it put a message into any queue. It declares nothing else: it runs
  with a predeclared topology (`FL_PREDECLARED=1`), because declaring an exchange needs `configure` on it,
  and binding a queue needs `read` on the exchange, which would let a site bind its queue to `fl.task`
  under another site's routing key.
- the server: everything under `fl.` (it declares the topology and publishes tasks and events).
- the admin: requests on `fl.control`, its private reply/watch queues (bound to `fl.reply` as a site's
  are), and reading `fl.event` (the console's event watch binds a private queue to it). It has the
  `management` tag, for `fl-broker status` and the UI.

Passwords are stored as RabbitMQ does (rabbit_password_hashing_sha256): base64(salt + sha256(salt + password))
with a 4-byte random salt. Secrets go to files of mode 0600 only, never to logs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_broker.wire import names

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
PASSWORD_BYTES = 24  # 32 URL-safe characters
SECRET_FILE_MODE = 0o600

# Per-login limits the broker enforces (RabbitMQ's user limits cover connections and channels only). A worker
# or console uses one connection with one channel at a time; the headroom covers a restart while the broker
# still holds the old connection (until its heartbeat times out).
SITE_LIMITS = {"max-connections": 4, "max-channels": 8}
ADMIN_LIMITS = {"max-connections": 8, "max-channels": 16}  # several consoles may share the admin login
SERVER_CONNECTIONS = 4  # the server has no user limit (it is trusted) but counts against the vhost's
# Per-vhost limits (connections, queues) are derived from the above: the topology's queues plus this many
# private (reply, watch) queues per login, so one login cannot fill the broker with queues.
PRIVATE_QUEUES_PER_LOGIN = 16


def password_hash(password: str, salt: bytes | None = None) -> str:
    """The `password_hash` RabbitMQ stores for `password` (salted SHA-256, base64)."""
    salt = secrets.token_bytes(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode("ascii")


def _exact(*resources: str) -> str:
    """A permission regex matching exactly the given names."""
    return "^(" + "|".join(re.escape(r) for r in resources) + ")$"


def _private(user: str) -> str:
    """Regex source (no anchors) of the private queues the transport names after a login."""
    return re.escape(f"fl.private.{user}.") + ".+"


@dataclass(frozen=True)
class TopicPermission:
    """Which routing keys a user may publish with (write) and bind its queues with (read) on one topic exchange
    (RabbitMQ checks these on top of the exchange permissions)."""

    exchange: str
    write: str
    read: str


@dataclass(frozen=True)
class Permission:
    """One user's permissions on one vhost."""

    configure: str
    write: str
    read: str
    topics: tuple[TopicPermission, ...] = ()


def _reply_topics(user: str, *, replies_to: str | None) -> TopicPermission:
    """On fl.reply: bind only its own queues, reply only to the private queues of `replies_to` (None: never)."""
    return TopicPermission(
        names.REPLY_EXCHANGE, write=f"^{_private(replies_to)}$" if replies_to else "^$", read=f"^{_private(user)}$"
    )


def site_permission(site: str, server: str = names.SERVER) -> Permission:
    """Least privilege for a site's login (which must be the site name: the server checks user_id). Binding its
    reply queue to fl.reply needs `write` on the queue and `read` on the exchange; the topic permissions keep
    that binding to its own queues' names and its replies to the server's reply queues."""
    own = [names.task_queue(site), names.site_control_queue(site)]
    exchanges = [
        re.escape(x)
        for x in (names.RESULT_EXCHANGE, names.CONTROL_EXCHANGE, names.DEAD_LETTER_EXCHANGE, names.REPLY_EXCHANGE)
    ]
    return Permission(
        configure=f"^{_private(site)}$",
        # fl.dlx: a worker dead-letters what it refuses with the reason (RabbitMQ stamps the copy with the
        # site's own user_id, so a site can only speak for itself there).
        write="^(" + "|".join([*exchanges, _private(site)]) + ")$",
        read="^(" + "|".join([*(re.escape(q) for q in own), re.escape(names.REPLY_EXCHANGE), _private(site)]) + ")$",
        topics=(_reply_topics(site, replies_to=server),),
    )


def server_permission() -> Permission:
    """The server declares and uses the whole topology (replies included: they go through fl.reply)."""
    everything = r"^fl\..*$"
    return Permission(configure=everything, write=everything, read=everything)


def admin_permission(admin: str) -> Permission:
    """The admin sends control requests, receives replies and watches events; nothing else."""
    private = _private(admin)
    return Permission(
        configure=f"^{private}$",
        write="^(" + re.escape(names.CONTROL_EXCHANGE) + "|" + private + ")$",
        read="^(" + re.escape(names.EVENT_EXCHANGE) + "|" + re.escape(names.REPLY_EXCHANGE) + "|" + private + ")$",
        topics=(_reply_topics(admin, replies_to=None),),
    )


def topology_definitions(
    vhost: str, sites: Iterable[str], queue_type: str = names.DEFAULT_QUEUE_TYPE
) -> dict[str, Any]:
    """Exchanges, queues and bindings of `vhost`, exactly as the server and `sites` declare them with
    `queue_type`."""
    topologies = [
        names.with_queue_type(t, queue_type)
        for t in [names.server_topology(), *(names.site_topology(site) for site in sites)]
    ]
    exchanges: dict[str, dict[str, Any]] = {}
    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    for topology in topologies:
        for exchange in topology.exchanges:
            exchanges.setdefault(
                exchange.name,
                {
                    "name": exchange.name,
                    "vhost": vhost,
                    "type": exchange.type,
                    "durable": True,
                    "auto_delete": False,
                    "internal": False,
                    "arguments": {},
                },
            )
        for queue in topology.queues:
            queues.append(
                {
                    "name": queue.name,
                    "vhost": vhost,
                    "durable": True,
                    "auto_delete": False,
                    "arguments": dict(queue.arguments),
                }
            )
            for exchange_name, key in queue.bindings:
                bindings.append(
                    {
                        "source": exchange_name,
                        "vhost": vhost,
                        "destination": queue.name,
                        "destination_type": "queue",
                        "routing_key": key,
                        "arguments": {},
                    }
                )
    return {
        "vhosts": [{"name": vhost}],
        "exchanges": list(exchanges.values()),
        "queues": queues,
        "bindings": bindings,
        "policies": [policy_definition(vhost, policy) for policy in names.POLICIES],
    }


def policy_definition(vhost: str, policy: names.PolicySpec) -> dict[str, Any]:
    """One policy in the definitions format (also the body of PUT /api/policies/VHOST/NAME, plus vhost/name)."""
    return {
        "vhost": vhost,
        "name": policy.name,
        "pattern": policy.pattern,
        "apply-to": policy.apply_to,
        "priority": policy.priority,
        "definition": dict(policy.definition),
    }


@dataclass(frozen=True)
class Account:
    """A participant's broker login."""

    role: str  # "server", "site" or "admin"
    user: str
    password: str
    permission: Permission
    tags: tuple[str, ...] = ()
    limits: dict[str, int] = field(default_factory=dict)  # RabbitMQ user limits; empty: none


@dataclass(frozen=True)
class Plan:
    """What `provision` writes: the accounts and where the broker is."""

    vhost: str
    host: str
    port: int
    tls: bool
    mgmt_url: str
    sites: tuple[str, ...]
    accounts: tuple[Account, ...]
    queue_type: str = names.DEFAULT_QUEUE_TYPE

    def url(self, account: Account) -> str:
        """The AMQP URL `account` connects with (it contains the password); for a cluster (`host` lists its
        nodes, comma-separated) one URL per node, comma-separated, as --broker and FL_BROKER_URL take them."""
        scheme = "amqps" if self.tls else "amqp"
        user = urllib.parse.quote(account.user, safe="")
        password = urllib.parse.quote(account.password, safe="")
        vhost = urllib.parse.quote(self.vhost, safe="")
        return ",".join(f"{scheme}://{user}:{password}@{host}:{self.port}/{vhost}" for host in self.hosts)

    @property
    def hosts(self) -> list[str]:
        """The broker nodes (one, or a cluster's)."""
        return [h.strip() for h in self.host.split(",") if h.strip()]

    def account(self, user: str) -> Account:
        return next(a for a in self.accounts if a.user == user)


def make_plan(
    sites: Iterable[str],
    *,
    server: str = names.SERVER,
    admin: str = "admin",
    vhost: str = names.DEFAULT_VHOST,
    host: str = "127.0.0.1",
    port: int | None = None,
    tls: bool = False,
    mgmt_url: str | None = None,
    queue_type: str = names.AUTO,
) -> Plan:
    """Accounts with fresh passwords for the server, each site and the admin."""
    site_list = tuple(names.check_site_name(s) for s in sites)
    logins = [server, admin, *site_list]
    if len(set(logins)) != len(logins):
        raise ValueError(f"logins must be distinct: {', '.join(logins)}")
    for login in (server, admin):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", login):
            raise ValueError(f"invalid login {login!r}")

    def new_password() -> str:
        return secrets.token_urlsafe(PASSWORD_BYTES)

    accounts = (
        Account("server", server, new_password(), server_permission()),
        *(
            Account("site", site, new_password(), site_permission(site, server), limits=SITE_LIMITS)
            for site in site_list
        ),
        Account("admin", admin, new_password(), admin_permission(admin), ("management",), ADMIN_LIMITS),
    )
    return Plan(
        vhost=vhost,
        host=host,
        port=port or (5671 if tls else 5672),
        tls=tls,
        mgmt_url=mgmt_url or f"http://{host.split(',')[0].strip()}:15672",
        sites=site_list,
        accounts=accounts,
        # auto: quorum for a cluster (several hosts), as the programs' --queue-type auto picks
        queue_type=names.resolve_queue_type(queue_type, len([h for h in host.split(",") if h.strip()])),
    )


def definitions(plan: Plan) -> dict[str, Any]:
    """Users (hashed passwords), permissions and topology, for POST /api/definitions or import_definitions."""
    defs = topology_definitions(plan.vhost, plan.sites, plan.queue_type)
    users = [
        {
            "name": a.user,
            "password_hash": password_hash(a.password),
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": list(a.tags),
            **({"limits": dict(a.limits)} if a.limits else {}),
        }
        for a in plan.accounts
    ]
    permissions = [
        {
            "user": a.user,
            "vhost": plan.vhost,
            "configure": a.permission.configure,
            "write": a.permission.write,
            "read": a.permission.read,
        }
        for a in plan.accounts
    ]
    topic_permissions = [
        {"user": a.user, "vhost": plan.vhost, "exchange": t.exchange, "write": t.write, "read": t.read}
        for a in plan.accounts
        for t in a.permission.topics
    ]
    # RabbitMQ 3.10 ignores a `limits` key on a vhost; vhost limits load as a runtime parameter.
    limits = {"vhost": plan.vhost, "component": "vhost-limits", "name": "limits", "value": vhost_limits(plan)}
    return {
        "users": users,
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        **defs,
        "parameters": [limits],
    }


def vhost_limits(plan: Plan) -> dict[str, int]:
    """The federation vhost's connection and queue limits: the sum of what its logins may use."""
    connections = SERVER_CONNECTIONS + sum(a.limits.get("max-connections", 0) for a in plan.accounts)
    topology = topology_definitions(plan.vhost, plan.sites)
    return {
        "max-connections": connections,
        "max-queues": len(topology["queues"]) + PRIVATE_QUEUES_PER_LOGIN * len(plan.accounts),
    }


def env_lines(plan: Plan, account: Account, *, tls_dir: str | None = None) -> list[str]:
    """KEY=value lines (systemd EnvironmentFile / shell syntax) for the program of `account`."""
    lines = [
        f"# fl-broker {account.role} {account.user}: secret, keep mode 0600",
        f"FL_BROKER_URL={plan.url(account)}",
        f"FL_QUEUE_TYPE={plan.queue_type}",
    ]
    if account.role == "site":
        server = next(a.user for a in plan.accounts if a.role == "server")
        lines += [f"FL_SITE={account.user}", "FL_PREDECLARED=1", f"FL_SERVER_USER={server}"]
        lines += [  # the site's app policy (workers/app_policy.py): off unless the site turns it on
            "# FL_REFUSE_CUSTOM_CODE=1",
            f"# FL_APP_ALLOW_LIST=/etc/fl-broker/{account.user}.apps   # hashes from: python -m workers.app_policy APP",
        ]
    elif account.role == "server":
        admins = ",".join(a.user for a in plan.accounts if a.role == "admin")
        lines += [f"FL_ADMIN_USERS={admins}", "FL_ENFORCE_SITE_USERS=1"]
    else:
        lines += [f"FL_MGMT_URL={plan.mgmt_url}", f"FL_VHOST={plan.vhost}"]
    if plan.tls and tls_dir:
        lines += [f"FL_TLS_CA={tls_dir}/ca.pem"]
    return lines


def write_secret(path: Path, text: str) -> None:
    """Create or replace `path` with mode 0600 from the start (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
    try:
        os.fchmod(fd, SECRET_FILE_MODE)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_plan(plan: Plan, out: Path, *, tls_dir: str | None = None) -> list[Path]:
    """Write OUT/definitions.json and OUT/<user>.env (all 0600); return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    defs_file = out / "definitions.json"
    write_secret(defs_file, json.dumps(definitions(plan), indent=2) + "\n")
    written.append(defs_file)
    for account in plan.accounts:
        env_file = out / f"{account.user}.env"
        write_secret(env_file, "\n".join(env_lines(plan, account, tls_dir=tls_dir)) + "\n")
        written.append(env_file)
    return written


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value pairs of an env file written by `write_plan` (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    return env
