"""Feature-vector models. Every forward takes ``x`` [B, ...] and flattens it."""

from __future__ import annotations

import torch
from torch import nn

from archselect.architectures.base import architectures
from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}



def outputs(spec: DataSpec) -> int:
    """Classification: one score per class; forecasting: one value per step; regression: one."""
    return spec.num_classes or spec.horizon or 1


class Perceptron(nn.Module):
    """A single linear unit per output, trained with the perceptron criterion.

    For classes, one unit per class (one-vs-rest); the criterion is ``max(0, -t * s)`` with
    ``t = +1`` for the true class's unit and ``-1`` for the others. For a continuous target the
    family's squared error applies (a linear regression).
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))

    def training_loss(self, scores: torch.Tensor, target: torch.Tensor,
                      weights: torch.Tensor | None = None) -> torch.Tensor | None:
        if target.dtype != torch.long:
            return None
        signs = -torch.ones_like(scores)
        signs.scatter_(1, target[:, None], 1.0)
        per_row = torch.relu(-signs * scores).sum(1)
        if weights is None:
            return per_row.mean()
        w = weights[target]  # class weights (optim.class_weight=balanced)
        return (w * per_row).sum() / w.sum()


class MLP(nn.Module):
    """Fully connected layers with an activation and dropout between them."""

    def __init__(self, n_in: int, n_out: int, hidden_size: int, depth: int, activation: str,
                 dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(1)]
        width = n_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden_size), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@architectures.register("perceptron", input="features")
def perceptron(spec: DataSpec) -> nn.Module:
    """The Perceptron: one linear unit per class (one-vs-rest) or one for a number."""
    return Perceptron(spec.n_features, outputs(spec))


@architectures.register("mlp", input="features")
def mlp(spec: DataSpec, *, hidden_size: int, depth: int, activation: str,
        dropout: float) -> nn.Module:
    """Multi-layer perceptron on the (flattened) feature vector."""
    if activation not in ACTIVATIONS:
        raise ConfigError("arch.mlp.model.activation", "unknown activation", given=activation,
                          allowed=ACTIVATIONS)
    if depth < 1 or hidden_size < 1:
        raise ConfigError("arch.mlp.model", "depth and hidden_size must be at least 1",
                          given={"depth": depth, "hidden_size": hidden_size})
    return MLP(spec.n_features, outputs(spec), hidden_size, depth, activation, dropout)
