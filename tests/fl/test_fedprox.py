"""FedProx: the proximal term and its gradient by hand (numpy and PyTorch), a trainer that uses it, with the
exact update, in one process end to end, and `mu` checked where the config gives it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fl_broker.apps.loader import load_client_app
from fl_broker.cli import _make_worker
from fl_broker.cli.simulate import simulate
from fl_broker.errors import ConfigError
from fl_broker.fl.context import RunContext, Signal
from fl_broker.fl.fedprox import FedProx, check_mu
from fl_broker.wire.messages import DXO, DataKind
from tests.support.federation import make_app, set_executor
from tests.support.prox_trainer import ProxTrainer

ROOT = Path(__file__).resolve().parents[2]
INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


def test_the_term_and_its_gradient_by_hand():
    prox = FedProx({"a": np.array([1.0, 2.0]), "b": np.array([[0.0]])}, mu=0.5)
    weights = {"a": np.array([2.0, 0.0]), "b": np.array([[3.0]]), "local_only": np.array([9.0])}
    # ||w - w_g||^2 = 1 + 4 + 9 = 14; 0.5 / 2 * 14 = 3.5 (local_only is not in the global model)
    assert prox.term(weights) == 3.5
    gradient = prox.gradient(weights)
    assert sorted(gradient) == ["a", "b"]
    np.testing.assert_array_equal(gradient["a"], [0.5, -1.0])
    np.testing.assert_array_equal(gradient["b"], [[1.5]])
    summed = prox.add_to({"a": np.array([10.0, 10.0]), "local_only": np.array([1.0])}, weights)
    np.testing.assert_array_equal(summed["a"], [10.5, 9.0])
    np.testing.assert_array_equal(summed["local_only"], [1.0])


def test_the_anchor_is_a_copy_so_training_in_place_cannot_move_it():
    task_weights = {"w": np.zeros(2)}
    prox = FedProx(task_weights, mu=1.0)
    task_weights["w"] += 3  # the trainer updates the task's arrays in place
    np.testing.assert_array_equal(prox.gradient(task_weights)["w"], [3.0, 3.0])


def test_mu_zero_is_fedavg_and_a_mismatched_shape_is_refused():
    assert FedProx({"w": np.ones(2)}, mu=0).term({"w": np.full(2, 5.0)}) == 0.0
    with pytest.raises(ValueError, match=r"'w' has shape \(3,\), the global model's is \(2,\)"):
        FedProx({"w": np.ones(2)}, mu=1).gradient({"w": np.ones(3)})


@pytest.mark.parametrize("mu", [-0.01, float("nan"), float("inf"), "0.1", True])
def test_a_bad_mu_is_refused(mu):
    with pytest.raises(ValueError, match="mu must be a finite number >= 0"):
        check_mu(mu)


def run_trainer(trainer: ProxTrainer, site: str, weights: np.ndarray) -> np.ndarray:
    context = RunContext(site, 1, Path("/nonexistent"), Path("/nonexistent"))
    task = DXO(DataKind.WEIGHTS, {"w": weights}).to_shareable()
    result = trainer.execute("train", task, context, Signal())
    assert result.dxo is not None
    return result.dxo.data["w"]


def test_a_trainer_with_fedprox_takes_the_exact_step():
    # site-1: c = 10. From w_g = 0 with lr 0.1: step 1 has no proximal pull (w = w_g): w1 = 0 - 0.1 * (0 - 10) = 1.
    # Step 2: w2 = 1 - 0.1 * ((1 - 10) + mu * (1 - 0)): 1.8 with mu = 1, 1.9 without.
    start = np.zeros(3)
    np.testing.assert_allclose(run_trainer(ProxTrainer(mu=1.0), "site-1", start), [1.8] * 3, rtol=1e-15)
    np.testing.assert_allclose(run_trainer(ProxTrainer(mu=0.0), "site-1", start), [1.9] * 3, rtol=1e-15)


def fedprox_app(tmp_path: Path, client_args: dict) -> Path:
    """hello-numpy-sag with the example FedProx trainer on the sites, 3 rounds."""
    app = make_app(tmp_path, server_args={"num_rounds": 3})
    shutil.copy(ROOT / "tests" / "support" / "prox_trainer.py", app / "custom" / "prox_trainer.py")
    set_executor(app, "prox_trainer.ProxTrainer", client_args)
    return app


def test_fedprox_end_to_end_in_one_process_gives_the_hand_computed_model(tmp_path):
    app = fedprox_app(tmp_path, {"mu": 1.0, "lr": 0.1, "local_steps": 2, "target": 10.0})
    result = simulate(app, clients=2, workspace_root=tmp_path / "ws", make_worker=_make_worker)
    assert result.phase == "finished"
    # On a site with target c, from w_g: w1 = 0.9 w_g + 0.1 c; w2 = 0.8 w1 + 0.1 c + 0.1 w_g = 0.82 w_g + 0.18 c.
    # The server averages site-1 (c = 10) and site-2 (c = 20): w_g' = 0.82 w_g + 0.18 * 15.
    expected = INITIAL.astype(np.float64)
    for _ in range(3):
        expected = 0.82 * expected + 2.7
    final = np.load(tmp_path / "ws" / "server" / "run_1" / "models" / "server.npy")
    assert final.dtype == np.float32
    np.testing.assert_allclose(final, expected, rtol=1e-6)


def test_a_negative_mu_in_the_client_config_names_the_file_and_the_key(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_client_app(fedprox_app(tmp_path, {"mu": -0.5}))
    message = str(caught.value)
    assert (
        "config_fed_client.json: executors[0].executor.args: ProxTrainer refused them: mu must be a finite " in message
    )
    assert "got -0.5" in message


# ---- PyTorch (the pt extra) ----


def test_the_pytorch_term_and_its_gradient_by_hand():
    torch = pytest.importorskip("torch")
    from fl_broker.fl.fedprox_pt import PTFedProxLoss

    model = torch.nn.Linear(2, 1)
    global_model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 3.0]]))
        model.bias.copy_(torch.tensor([2.0]))
        global_model.weight.copy_(torch.tensor([[0.0, 1.0]]))
        global_model.bias.copy_(torch.tensor([2.0]))
    loss = PTFedProxLoss(mu=0.2)(model, global_model)
    # ||w - w_g||^2 = 1 + 4 + 0 = 5; 0.2 / 2 * 5 = 0.5
    assert loss.item() == pytest.approx(0.5, rel=1e-6)
    loss.backward()
    # d/dw = mu * (w - w_g) = 0.2 * [1, 2]; the global model takes no gradient
    assert model.weight.grad.tolist()[0] == pytest.approx([0.2, 0.4], rel=1e-6)
    assert model.bias.grad.tolist() == [0.0]
    assert global_model.weight.grad is None


def test_a_pytorch_sgd_step_with_fedprox_is_the_exact_update():
    torch = pytest.importorskip("torch")
    from fl_broker.fl.fedprox_pt import PTFedProxLoss

    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    anchor = torch.tensor([0.0, 0.0], dtype=torch.float64)
    optimizer = torch.optim.SGD([w], lr=0.1)
    target = torch.tensor([3.0, 3.0], dtype=torch.float64)
    for _ in range(2):
        optimizer.zero_grad()
        loss = 0.5 * torch.sum((w - target) ** 2) + PTFedProxLoss(mu=0.5)([w], [anchor])
        loss.backward()
        optimizer.step()
    # g = (w - 3) + 0.5 w. Step 1: [1 - 0.1 * (-2 + 0.5), -2 - 0.1 * (-5 - 1)] = [1.15, -1.4]
    # step 2: [1.15 - 0.1 * (-1.85 + 0.575), -1.4 - 0.1 * (-4.4 - 0.7)] = [1.2775, -0.89]
    assert w.tolist() == pytest.approx([1.2775, -0.89], rel=1e-12)


def test_the_pytorch_term_refuses_a_bad_mu_and_models_that_differ():
    torch = pytest.importorskip("torch")
    from fl_broker.fl.fedprox_pt import PTFedProxLoss

    with pytest.raises(ValueError, match="mu must be a finite number >= 0, got -1"):
        PTFedProxLoss(mu=-1)
    with pytest.raises(ValueError, match="the model has 2 parameters, the global model 1"):
        PTFedProxLoss()(torch.nn.Linear(2, 1), [torch.zeros(1, 2)])
