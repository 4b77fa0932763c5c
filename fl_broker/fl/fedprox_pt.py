"""FedProx's proximal term for PyTorch trainers (needs the `pt` extra): FLARE's PTFedProxLoss, in fl-broker.

    loss = criterion(output, labels) + fedprox(model, global_model)

where `fedprox = PTFedProxLoss(mu=...)` and `global_model` is a frozen copy of the model the task carried.
The term is mu / 2 * sum over parameters of ||p - p_global||^2; autograd gives its gradient mu * (p -
p_global), as `fl_broker.fl.fedprox` spells out for numpy.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from fl_broker.fl.fedprox import check_mu


def _parameters(model: torch.nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return list(model.parameters() if isinstance(model, torch.nn.Module) else model)


class PTFedProxLoss(torch.nn.Module):
    """mu / 2 * ||w - w_global||^2 between a model's parameters and the global model's (modules or the
    same-ordered iterables of tensors); the global side takes no gradient."""

    def __init__(self, mu: float = 0.01) -> None:
        super().__init__()
        self.mu = check_mu(mu)

    def forward(
        self, input: torch.nn.Module | Iterable[torch.Tensor], target: torch.nn.Module | Iterable[torch.Tensor]
    ) -> torch.Tensor:
        """The proximal term of `input` (the model being trained) around `target` (the global model)."""
        local, anchor = _parameters(input), _parameters(target)
        if len(local) != len(anchor):
            raise ValueError(f"the model has {len(local)} parameters, the global model {len(anchor)}")
        total = torch.zeros((), dtype=local[0].dtype if local else torch.float32)
        for param, ref in zip(local, anchor, strict=True):
            total = total + torch.sum((param - ref.detach()) ** 2)
        return self.mu / 2 * total
