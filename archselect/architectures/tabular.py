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


def _columns(spec: DataSpec, key: str) -> tuple[int, list[int]]:
    """How many leading encoded columns are numbers, and the width of each categorical column's
    one-hot block after them (the tabular data kind encodes numbers first)."""
    if spec.kind != "tabular":
        raise ConfigError(key, "needs a table (numeric and categorical columns)", given=spec.kind,
                          fix="use it in a tabular task")
    n_num = spec.n_numeric
    cards = list(spec.cat_cardinalities)
    if n_num + sum(cards) != spec.n_features:  # a spec without the breakdown: all numbers
        return spec.n_features, []
    return n_num, cards


class FeatureEmbeddings(nn.Module):
    """Numbers -> periodic embeddings (Gorishniy et al. 2022, "On Embeddings for Numerical
    Features in Tabular Deep Learning", the ``rtdl_num_embeddings`` package); each categorical
    column's one-hot block -> a learned embedding of ``d_embedding`` (an embedding lookup, as a
    linear map of the one-hot block) when it has more levels than that, else kept one-hot.
    The output is flat: [B, width]."""

    def __init__(self, n_num: int, cards: list[int], d_embedding: int, n_frequencies: int,
                 frequency_scale: float, lite: bool) -> None:
        super().__init__()
        from rtdl_num_embeddings import PeriodicEmbeddings

        self.n_num = n_num
        self.numbers = (PeriodicEmbeddings(n_num, d_embedding, n_frequencies=n_frequencies,
                                           frequency_init_scale=frequency_scale, lite=lite)
                        if n_num else None)
        self.cards = cards
        self.embed = nn.ModuleList(
            nn.Linear(c, d_embedding, bias=False) if c > d_embedding else nn.Identity()
            for c in cards)
        self.width = n_num * d_embedding + sum(min(c, d_embedding) for c in cards)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.numbers is not None:
            parts.append(self.numbers(x[:, : self.n_num]).flatten(1))
        start = self.n_num
        for card, embed in zip(self.cards, self.embed, strict=True):
            parts.append(embed(x[:, start : start + card]))
            start += card
        return torch.cat(parts, dim=1)


class EmbeddingMLP(nn.Module):
    """An MLP on embedded features (numbers: periodic embeddings; many-level categories: learned
    embeddings), with a learned per-feature scale in front (as RealMLP, Holzmüller et al. 2024)."""

    def __init__(self, n_num: int, cards: list[int], n_out: int, d_embedding: int,
                 n_frequencies: int, frequency_scale: float, hidden_size: int, depth: int,
                 dropout: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n_num + sum(cards)))
        self.embed = FeatureEmbeddings(n_num, cards, d_embedding, n_frequencies, frequency_scale,
                                       lite=False)
        self.mlp = MLP(self.embed.width, n_out, hidden_size, depth, "silu", dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(x * self.scale))


class TabMModel(nn.Module):
    """TabM (Gorishniy et al. 2025, "TabM: Advancing Tabular Deep Learning with Parameter-
    Efficient Ensembling", the ``tabm`` package): ``k`` MLPs sharing most weights, trained
    together. Each member is trained on its own loss; the prediction is the members' mean
    (of probabilities for classes, of values for a number)."""

    def __init__(self, n_num: int, cards: list[int], n_out: int, classes: bool, k: int,
                 n_blocks: int, d_block: int, dropout: float, embeddings: bool,
                 d_embedding: int) -> None:
        super().__init__()
        import tabm

        self.classes = classes
        self.embed = (FeatureEmbeddings(n_num, cards, d_embedding, 48, 0.01, lite=True)
                      if embeddings else None)
        width = self.embed.width if self.embed is not None else n_num + sum(cards)
        self.tabm = tabm.TabM.make(
            n_num_features=width, d_out=n_out, k=k, n_blocks=n_blocks, d_block=d_block,
            dropout=dropout, start_scaling_init="normal" if embeddings else "random-signs")
        self.members: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) if self.embed is not None else x
        # TabM's own forward with only numbers, its column_stack (which has no ONNX form) left
        # out: the same computation.
        members = self.tabm.output(self.tabm.backbone(self.tabm.ensemble_view(h)))  # [B, k, out]
        if self.training:
            self.members = members  # what training_loss reads
        if self.classes:
            # The members' mean probability, as log-probabilities (a softmax gives it back).
            return torch.log(torch.softmax(members.float(), -1).mean(1).clamp_min(1e-12))
        return members.mean(1)

    def training_loss(self, scores: torch.Tensor, target: torch.Tensor,
                      weights: torch.Tensor | None = None) -> torch.Tensor | None:
        members = self.members
        if members is None:
            return None
        self.members = None
        k = members.shape[1]
        if self.classes:
            return nn.functional.cross_entropy(members.flatten(0, 1).float(),
                                               target.repeat_interleave(k), weight=weights)
        return nn.functional.mse_loss(members.float().reshape(len(target), k),
                                      target.float()[:, None].expand(-1, k))


@architectures.register("mlp_plr", input="tabular")
def mlp_plr(spec: DataSpec, *, d_embedding: int, n_frequencies: int, frequency_scale: float,
            hidden_size: int, depth: int, dropout: float) -> nn.Module:
    """MLP on periodic embeddings of the numbers and learned embeddings of many-level
    categories (MLP-PLR / RealMLP-style)."""
    n_num, cards = _columns(spec, "arch.mlp_plr")
    if min(d_embedding, n_frequencies, hidden_size, depth) < 1:
        raise ConfigError("arch.mlp_plr.model", "d_embedding, n_frequencies, hidden_size and "
                          "depth must be at least 1", given={"d_embedding": d_embedding,
                                                             "n_frequencies": n_frequencies,
                                                             "hidden_size": hidden_size,
                                                             "depth": depth})
    return EmbeddingMLP(n_num, cards, outputs(spec), d_embedding, n_frequencies, frequency_scale,
                        hidden_size, depth, dropout)


@architectures.register("tabm", input="tabular")
def tabm_model(spec: DataSpec, *, k: int, n_blocks: int, d_block: int, dropout: float,
               embeddings: bool, d_embedding: int) -> nn.Module:
    """TabM: a parameter-efficient ensemble of ``k`` MLPs (optionally on feature embeddings)."""
    n_num, cards = _columns(spec, "arch.tabm")
    if min(k, n_blocks, d_block, d_embedding) < 1:
        raise ConfigError("arch.tabm.model", "k, n_blocks, d_block and d_embedding must be at "
                          "least 1", given={"k": k, "n_blocks": n_blocks, "d_block": d_block})
    return TabMModel(n_num, cards, outputs(spec), bool(spec.num_classes), k, n_blocks, d_block,
                     dropout, embeddings, d_embedding)
