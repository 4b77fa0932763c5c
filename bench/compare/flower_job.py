"""One Flower run of a comparison row; runs inside bench/compare/.venv-flower (Flower and numpy only).

    python flower_job.py sim    --size N --clients C --rounds R --out DIR
    python flower_job.py server --size N --clients C --rounds R --out DIR --port P
    python flower_job.py client --port P

`sim` is Flower's simulation engine (`flwr.simulation.start_simulation`, Ray) in one process tree; `server`
and `client` are Flower's legacy gRPC processes (`flwr.server.start_server`, `flwr.client.start_client`).
The strategy is FedAvg started from `model.initial_weights(size)`; each client returns `model.train(w)`.
The server side writes DIR/result.json (wall-clock start and end of every round, results and failures per
round) and DIR/final.npy (the last aggregated model); the bench checks the weights, not this script.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import flwr
import numpy as np
from flwr.client import NumPyClient
from flwr.common import Parameters, ndarrays_to_parameters
from flwr.server import ServerConfig
from flwr.server.strategy import FedAvg
from model import initial_weights, train

# Flower's per-round INFO lines are not part of the work being timed (fl-broker runs at WARNING too).
logging.getLogger("flwr").setLevel(logging.WARNING)


class AddOneClient(NumPyClient):
    """A client whose training adds 1 to every weight; it reports one example so FedAvg weighs all alike."""

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        return [train(array) for array in parameters], 1, {}


class TimedFedAvg(FedAvg):
    """FedAvg over every client every round, no evaluation, that notes when each round starts and ends and
    keeps the last aggregated parameters (the strategy is the one place that sees them)."""

    def __init__(self, *, clients: int, size: int) -> None:
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=clients,
            min_available_clients=clients,
            initial_parameters=ndarrays_to_parameters([initial_weights(size)]),
        )
        self.started: list[float] = []
        self.done: list[float] = []
        self.results: list[int] = []
        self.failures: list[int] = []
        self.final: Parameters | None = None

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
        self.started.append(time.time())
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> Any:
        aggregated = super().aggregate_fit(server_round, results, failures)
        self.final = aggregated[0] or self.final
        self.results.append(len(results))
        self.failures.append(len(failures))
        self.done.append(time.time())
        return aggregated

    def write(self, out: Path) -> None:
        """result.json and final.npy in `out` (Flower's tensors are already .npy bytes: written as they are)."""
        if self.final is not None:
            (out / "final.npy").write_bytes(self.final.tensors[0])
        record = {
            "flwr": flwr.__version__,
            "started": self.started,
            "done": self.done,
            "results": self.results,
            "failures": self.failures,
        }
        (out / "result.json").write_text(json.dumps(record))


def run_simulation(args: argparse.Namespace) -> None:
    """The whole row in Flower's simulation engine; one CPU per virtual client (Flower's default)."""
    from flwr.simulation import start_simulation

    strategy = TimedFedAvg(clients=args.clients, size=args.size)
    start_simulation(
        client_fn=lambda context: AddOneClient().to_client(),
        num_clients=args.clients,
        config=ServerConfig(num_rounds=args.rounds),
        strategy=strategy,
        client_resources={"num_cpus": 1},
        # Ray's defaults as Flower sets them, plus loopback only: this machine has no network to find.
        ray_init_args={"ignore_reinit_error": True, "include_dashboard": False, "_node_ip_address": "127.0.0.1"},
    )
    strategy.write(args.out)


def run_server(args: argparse.Namespace) -> None:
    """The legacy gRPC server on 127.0.0.1:PORT; returns after the last round."""
    from flwr.server import start_server

    strategy = TimedFedAvg(clients=args.clients, size=args.size)
    start_server(
        server_address=f"127.0.0.1:{args.port}", config=ServerConfig(num_rounds=args.rounds), strategy=strategy
    )
    strategy.write(args.out)


def run_client(args: argparse.Namespace) -> None:
    """One legacy gRPC client; returns when the server ends the run."""
    from flwr.client import start_client

    start_client(server_address=f"127.0.0.1:{args.port}", client=AddOneClient().to_client(), insecure=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["sim", "server", "client"])
    parser.add_argument("--size", type=int, default=9)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    if os.environ.get("FLWR_TELEMETRY_ENABLED") != "0":
        raise SystemExit("set FLWR_TELEMETRY_ENABLED=0: this machine sends nothing off loopback")
    {"sim": run_simulation, "server": run_server, "client": run_client}[args.mode](args)


if __name__ == "__main__":
    main()
