"""The worker program: `fl-broker worker --site site-1 --workspace WS --broker URL`."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from fl_broker.errors import ConfigError, FlBrokerError
from fl_broker.logs import configure_logging
from fl_broker.ops.malloc_tuning import limit_heap_growth
from fl_broker.ops.tls import TlsFiles, add_tls_arguments
from fl_broker.program import (
    Relaunch,
    add_broker_argument,
    add_transport_arguments,
    run_until_stopped,
    transport_options,
)
from fl_broker.transport import connect
from fl_broker.transport.urls import each_url
from workers.app_policy import AppPolicy, read_allow_list
from workers.scrub import scrub_environment, url_passwords
from workers.worker import ClientWorker, worker_workspace

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's command-line options."""
    parser.add_argument("--site", required=True, help="this client's site name, e.g. site-1")
    parser.add_argument("--workspace", type=Path, required=True, help="workspace root (the worker uses WS/SITE)")
    add_broker_argument(parser)
    parser.add_argument("--heartbeat-interval", type=float, default=5.0, help="seconds between heartbeats")
    _flag(parser, "--predeclared", "FL_PREDECLARED", "the broker has the topology already (provisioned login)")
    parser.add_argument(
        "--server-user",
        default=os.environ.get("FL_SERVER_USER") or None,
        help="accept tasks and control requests only from this broker login (provisioned; env FL_SERVER_USER)",
    )
    _flag(parser, "--refuse-custom-code", "FL_REFUSE_CUSTOM_CODE", "refuse apps with code in custom/ or naming "
          "classes that are not fl-broker built-ins")  # fmt: skip
    parser.add_argument(
        "--app-allow-list",
        type=Path,
        default=os.environ.get("FL_APP_ALLOW_LIST") or None,
        help="run only apps whose content hash is in this file (env FL_APP_ALLOW_LIST; python -m workers.app_policy)",
    )
    add_tls_arguments(parser)
    add_transport_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-config", type=Path, help="a logging.config.fileConfig file")


def _flag(parser: argparse.ArgumentParser, option: str, env: str, text: str) -> None:
    """An on/off option whose default is on when the env variable `env` is 1, true or yes (env files)."""
    default = os.environ.get(env, "").lower() in ("1", "true", "yes")
    parser.add_argument(option, action="store_true", default=default, help=f"{text} (env {env}=1)")


def main(args: argparse.Namespace) -> int:
    """Run the worker until a `shutdown` request or SIGTERM/SIGINT."""
    relaunch = Relaunch.capture()  # for `restart`: the command line and environment before the scrub
    scrub_environment(url_passwords(each_url(args.broker)))  # executors run in this process: no password for them
    workspace = worker_workspace(args.workspace.resolve(), args.site)
    limit_heap_growth()
    configure_logging(workspace.log_file, level=args.log_level, config_file=args.log_config)
    policy = AppPolicy(refuse_custom_code=args.refuse_custom_code, allow_list=args.app_allow_list)
    if policy.allow_list is not None:
        try:
            log.info("app allow-list %s: %d app(s)", policy.allow_list, len(read_allow_list(policy.allow_list)))
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
    if policy.refuse_custom_code:
        log.info("this site refuses apps with custom code")
    try:
        tls = TlsFiles.from_values(args.tls_ca, args.tls_cert, args.tls_key)
        transport = connect(
            args.broker, options=transport_options(args, args.site), tls=tls, predeclared=args.predeclared
        )
    except (FlBrokerError, OSError, ValueError) as exc:
        log.error("cannot connect to the broker: %s", exc)
        return 2
    worker = ClientWorker(
        site=args.site,
        workspace=workspace,
        transport=transport,
        heartbeat_interval=args.heartbeat_interval,
        server_user=args.server_user,
        app_policy=policy,
    )

    def close() -> None:
        transport.begin_close()  # a paused broker must not hold the steps below up (see Transport.begin_close)
        worker.close(wait=False)
        transport.close()  # ends a heartbeat's wait for a broker that is gone, so the join below is prompt
        worker.join()

    code = run_until_stopped(worker.stopped, start=worker.start, close=close, failure=lambda: transport.failure)
    if code == 0 and worker.restart_requested.is_set():
        relaunch()
    log.info("worker %s stopped", args.site)
    return code
