"""hello-pt: the federated model's test accuracy against each site trained alone on its own shard.

    python bench/hello_pt_baseline.py            # needs the pt extra: pip install -e '.[pt]'

Runs apps/hello-pt as shipped with `fl-broker simulate` (2 sites) and reads its run_1/global_test.json.
Then, for each site, trains the same network from the same initial weights on that site's training images
only, for as many rounds of as many local epochs, with the same optimizer settings and the same seeds, and
tests it on the same held-out images; likewise on all sites' training images pooled in one place (what
federated training would match at best). The settings are read from the app's two config files.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fl_broker.pt.classifier import evaluate, train_epochs  # noqa: E402
from fl_broker.pt.components import build_component  # noqa: E402

APP = ROOT / "apps" / "hello-pt"
SITES = ("site-1", "site-2")


@dataclass(frozen=True)
class Settings:
    """What the app's configs say about training: the learner's arguments and the number of rounds."""

    rounds: int
    learner: dict[str, Any]


def settings_of(app_dir: Path) -> Settings:
    """The rounds (server config) and the DigitsLearner's arguments (client config) of the app."""
    server = json.loads((app_dir / "config" / "config_fed_server.json").read_text())
    client = json.loads((app_dir / "config" / "config_fed_client.json").read_text())
    rounds = next(w["args"]["num_rounds"] for w in server["workflows"] if w["path"].endswith("ScatterAndGather"))
    learner = client["executors"][0]["executor"]["args"]
    return Settings(rounds=rounds, learner=learner)


def trained_alone(app_dir: Path, sites: tuple[str, ...]) -> dict[str, float]:
    """Test metrics of the network trained on the training images of `sites` only (one site: that site
    alone; all sites: pooled), round after round, exactly as DigitsLearner trains each round."""
    settings = settings_of(app_dir)
    args, custom = settings.learner, app_dir / "custom"
    net: Any = build_component(args["model"], custom, object, "model")
    dataset: Any = build_component(args["dataset"], custom, object, "dataset")
    parts = [dataset.site(site) for site in sites]
    x = np.concatenate([part.train_x for part in parts])
    y = np.concatenate([part.train_y for part in parts])
    seed = int(args.get("seed", 0))
    for current in range(settings.rounds):
        train_epochs(
            net,
            x,
            y,
            epochs=int(args.get("epochs", 2)),
            lr=float(args.get("lr", 0.05)),
            batch_size=int(args.get("batch_size", 32)),
            momentum=float(args.get("momentum", 0.9)),
            seed=seed * 1_000_003 + current,
        )
    return evaluate(net, *dataset.test())


def federated(app_dir: Path, workspace: Path) -> dict[str, float]:
    """The app's own result: run it with simulate (2 sites) and read run_1/global_test.json."""
    from fl_broker.cli import _make_worker
    from fl_broker.cli.simulate import simulate

    result = simulate(app_dir, clients=len(SITES), workspace_root=workspace, make_worker=_make_worker, run=1)
    if result.phase != "finished":
        raise SystemExit(f"hello-pt did not finish: {result.phase} {result.status.get('failure')}")
    report: dict[str, float] = json.loads((workspace / "server" / "run_1" / "global_test.json").read_text())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", type=Path, default=APP)
    app_dir = parser.parse_args().app.resolve()
    settings = settings_of(app_dir)
    print(f"{app_dir.name}: {settings.rounds} rounds x {settings.learner.get('epochs', 2)} local epochs")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        rows = [("FedAvg, 2 sites (simulate)", federated(app_dir, Path(tmp)), time.monotonic() - started)]
    for label, sites in [(f"{site} alone", (site,)) for site in SITES] + [("pooled (all sites' images)", SITES)]:
        started = time.monotonic()
        rows.append((label, trained_alone(app_dir, sites), time.monotonic() - started))
    print(f"{'model':<28} {'test accuracy':>13} {'test loss':>9} {'images':>6} {'seconds':>7}")
    for label, metrics, seconds in rows:
        accuracy, loss, samples = metrics["accuracy"], metrics["loss"], metrics["samples"]
        print(f"{label:<28} {accuracy:>13.4f} {loss:>9.4f} {samples:>6.0f} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
