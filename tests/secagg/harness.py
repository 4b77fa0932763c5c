"""Secure-aggregation apps for tests (hello-numpy-secagg with a noisy two-array model, sites that drop out)
and an in-process federation with a chosen chunk size."""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fl_broker.apps.workspace import Workspace
from fl_broker.cli.flow import JobResult, run_job, shutdown_all, wait_for_clients
from fl_broker.protocol.control import RequestClient
from fl_broker.server.engine import EngineOptions, ServerEngine
from fl_broker.transport import TransportOptions
from fl_broker.transport.memory import MemoryBroker
from workers.worker import ClientWorker, worker_workspace

ROOT = Path(__file__).resolve().parents[2]
SECAGG_APP = ROOT / "apps" / "hello-numpy-secagg"

NOISY = '''
import os

import numpy as np

from fl_broker.fl.executor import Executor
from fl_broker.fl.persistor import ModelPersistor
from fl_broker.wire.messages import DXO, DataKind, MetaKey, ReturnCode, make_reply


class TwoArrays(ModelPersistor):
    """A float32 vector `w` of `size` and a 3x3 `b`, small normal values."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size

    def load_model(self, context):
        rng = np.random.default_rng(0)
        return {"w": rng.normal(0, 1, self.size).astype(np.float32), "b": rng.normal(0, 1, (3, 3)).astype(np.float32)}

    def save_model(self, model, context):
        folder = context.run_dir / "models"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "server.npz", **model)


class NoisyTrainer(Executor):
    """Adds site- and round-seeded noise to every weight; weight NUM_STEPS = the site's number. Saves the
    model it was sent and its plain update per round. `drop_site` drops out in `drop_round`: `hang` (never
    answers until aborted) or `exit` (the process dies)."""

    def __init__(self, drop_site: str = "", drop_round: int = -1, drop_how: str = "hang") -> None:
        self.drop_site, self.drop_round, self.drop_how = drop_site, drop_round, drop_how

    def execute(self, task_name, shareable, context, abort_signal):
        current = shareable.get_header("current_round")
        folder = context.run_dir / "trace"
        folder.mkdir(parents=True, exist_ok=True)
        weights = shareable.dxo.data
        np.savez(folder / f"seen{current}.npz", **weights)
        if context.site_name == self.drop_site and current == self.drop_round:
            if self.drop_how == "exit":
                os._exit(3)
            abort_signal.wait(300)
            return make_reply(ReturnCode.TASK_ABORTED)
        number = int(context.site_name.split("-")[1])
        rng = np.random.default_rng([number, current])
        update = {k: (v + rng.normal(0, 0.1, v.shape)).astype(v.dtype) for k, v in weights.items()}
        np.savez(folder / f"plain{current}.npz", **update)
        dxo = DXO(data_kind=DataKind.WEIGHTS, data=update)
        dxo.set_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND, number)
        return dxo.to_shareable()
'''


def noisy_app(
    folder: Path, *, size: int, num_rounds: int, server_args: dict[str, Any] | None = None, **trainer: Any
) -> Path:
    """hello-numpy-secagg with the two-array model and the noisy trainer (its args: `trainer`)."""
    app = folder / "secagg-noisy"
    shutil.copytree(SECAGG_APP, app)
    (app / "custom").mkdir()
    (app / "custom" / "noisy.py").write_text(NOISY)
    server_path, client_path = app / "config" / "config_fed_server.json", app / "config" / "config_fed_client.json"
    server, client = json.loads(server_path.read_text()), json.loads(client_path.read_text())
    server["components"][0] = {"id": "persistor", "path": "noisy.TwoArrays", "args": {"size": size}}
    args = {"num_rounds": num_rounds, "wait_time_after_min_received": 1, "key_timeout": 20, **(server_args or {})}
    server["workflows"][0]["args"].update(args)
    client["executors"][0]["executor"]["args"]["trainer"] = {"path": "noisy.NoisyTrainer", "args": trainer}
    server_path.write_text(json.dumps(server))
    client_path.write_text(json.dumps(client))
    return app


def sites(count: int) -> list[str]:
    return [f"site-{i}" for i in range(1, count + 1)]


@dataclass
class Trace:
    """What one site saw and sent in one round."""

    seen: dict[str, np.ndarray]  # the global model it was sent
    plain: dict[str, np.ndarray] | None  # its update before masking (None: it dropped out)


def trace(workspace: Path, site: str, round: int, run: int = 1) -> Trace:
    folder = workspace / site / f"run_{run}" / "trace"
    plain = folder / f"plain{round}.npz"
    return Trace(dict(np.load(folder / f"seen{round}.npz")), dict(np.load(plain)) if plain.exists() else None)


def check_rounds(workspace: Path, count: int, num_rounds: int, dropped: dict[int, str] | None = None) -> None:
    """Every round's global model (as the next round's sites saw it, and the final one the server saved) is
    the weighted FedAvg of the plain updates of the sites that sent one, within the quantization step
    (2**-16); the site `dropped` names for a round sent none. (A round may also start before every site's
    client app is started: min_clients decides, so who took part is read from the sites' traces.)"""
    from fl_broker.fl.aggregation import weighted_mean

    final = dict(np.load(workspace / "server" / "run_1" / "models" / "server.npz"))
    for current in range(num_rounds):
        took_part = {s: trace(workspace, s, current) for s in sites(count) if _was_sent(workspace, s, current)}
        senders = [s for s, seen in took_part.items() if seen.plain is not None]
        assert (dropped or {}).get(current) not in senders, f"round {current}: the dropped site sent an update"
        assert len(senders) >= 2, f"round {current}: only {senders} sent an update"
        expected = weighted_mean((took_part[s].plain, float(s.split("-")[1])) for s in senders)
        nxt = final if current == num_rounds - 1 else _next_seen(workspace, count, current + 1)
        for name in ("w", "b"):
            assert nxt[name].dtype == np.float32
            np.testing.assert_allclose(nxt[name], expected[name], rtol=0, atol=2**-16, err_msg=f"round {current}")


def _was_sent(workspace: Path, site: str, round: int) -> bool:
    return (workspace / site / "run_1" / "trace" / f"seen{round}.npz").exists()


def _next_seen(workspace: Path, count: int, round: int) -> dict[str, np.ndarray]:
    """The global model a site was sent in `round`."""
    site = next(s for s in sites(count) if _was_sent(workspace, s, round))
    return trace(workspace, site, round).seen


class ChunkedFederation:
    """The server and `count` workers on one in-process broker whose bodies travel in `chunk_size` chunks."""

    def __init__(self, root: Path, count: int, *, chunk_size: int) -> None:
        self.root = root
        self.broker = MemoryBroker.named(f"secagg-{uuid.uuid4().hex}")
        options = TransportOptions(chunk_size=chunk_size)
        self.transports = [self.broker.connect(user, options) for user in ["server", "admin", *sites(count)]]
        self.engine = ServerEngine(
            workspace=Workspace(root, "server"), transport=self.transports[0], options=EngineOptions(client_grace=3)
        )
        self.engine.start()
        self.workers = [
            ClientWorker(site=s, workspace=worker_workspace(root, s), transport=t, heartbeat_interval=0.2)
            for s, t in zip(sites(count), self.transports[2:], strict=True)
        ]
        for worker in self.workers:
            worker.start()
        self.admin = RequestClient(self.transports[1])
        self.count = count

    def run(self, app: Path, timeout: float = 120) -> JobResult:
        wait_for_clients(self.admin, self.count, timeout=30, on_status=lambda s: None)
        return run_job(self.admin, app, run=1, on_status=lambda s: None, timeout=timeout)

    def close(self) -> None:
        shutdown_all(self.admin)
        self.admin.close()
        for worker in self.workers:
            worker.close()
        self.engine.close()
        for transport in self.transports:
            transport.close()
