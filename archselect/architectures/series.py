"""Sequence models over time series. Every forward takes ``x`` [B, T, C] (scaled floats) and
returns one value per forecast step (forecasting) or one score per class (classification).

The MLP over a flattened window is the tabular ``mlp`` (input ``features``): a window is a
feature vector of ``T * C`` numbers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from archselect.architectures.base import architectures
from archselect.architectures.tabular import outputs
from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec


def _shape(spec: DataSpec, key: str) -> tuple[int, int]:
    if len(spec.input_shape) != 2:
        raise ConfigError(key, "series architectures need [steps, channels] inputs",
                          given=spec.input_shape, fix="use a time series task")
    return int(spec.input_shape[0]), int(spec.input_shape[1])


class SeriesLSTM(nn.Module):
    """Stacked (bidirectional) LSTM encoder; the last states and the mean of the outputs feed a
    linear head with one output per forecast step or class."""

    def __init__(self, channels: int, n_out: int, hidden_size: int, num_layers: int,
                 dropout: float, bidirectional: bool) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, hidden_size, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0,
                            bidirectional=bidirectional)
        width = hidden_size * (2 if bidirectional else 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        width = out.shape[-1] // (2 if self.lstm.bidirectional else 1)
        # Forward direction's last step; backward direction's first step (its own last).
        last = out[:, -1, :width]
        if self.lstm.bidirectional:
            last = torch.cat([last, out[:, 0, width:]], dim=-1)
        return self.head(torch.cat([last, out.mean(dim=1)], dim=-1))


class SeriesTransformer(nn.Module):
    """Transformer encoder over patches of ``patch_size`` steps with sinusoidal positions; the
    last patch's token and the mean of all tokens feed a linear head."""

    def __init__(self, steps: int, channels: int, n_out: int, d_model: int, nhead: int,
                 num_layers: int, dropout: float, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tokens = math.ceil(steps / patch_size)
        self.embed = nn.Linear(patch_size * channels, d_model)
        position = torch.arange(self.tokens).float()[:, None]
        freq = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe = torch.zeros(self.tokens, d_model)
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq)[:, : d_model // 2]
        self.register_buffer("positions", pe[None], persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2 * d_model,
                                           dropout=dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(2 * d_model, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        pad = self.tokens * self.patch_size - t
        if pad:  # repeat the first step in front, so the last patch ends at the last step
            x = torch.cat([x[:, :1].expand(b, pad, c), x], dim=1)
        patches = x.reshape(b, self.tokens, self.patch_size * c)
        h = self.norm(self.encoder(self.embed(patches) + self.positions))
        return self.head(torch.cat([h[:, -1], h.mean(dim=1)], dim=-1))


@architectures.register("series_lstm", input="series")
def series_lstm(spec: DataSpec, *, hidden_size: int, num_layers: int, dropout: float,
                bidirectional: bool) -> nn.Module:
    """Stacked LSTM over the steps of a window or series (bidirectional by default)."""
    _, channels = _shape(spec, "arch.series_lstm")
    if hidden_size < 1 or num_layers < 1:
        raise ConfigError("arch.series_lstm.model", "hidden_size and num_layers must be at least 1",
                          given={"hidden_size": hidden_size, "num_layers": num_layers})
    return SeriesLSTM(channels, outputs(spec), hidden_size, num_layers, dropout, bidirectional)


@architectures.register("series_transformer", input="series")
def series_transformer(spec: DataSpec, *, d_model: int, nhead: int, num_layers: int,
                       dropout: float, patch_size: int) -> nn.Module:
    """Transformer encoder over patches of steps, with sinusoidal positional encoding."""
    steps, channels = _shape(spec, "arch.series_transformer")
    if d_model % nhead or d_model % 2:
        raise ConfigError("arch.series_transformer.model.d_model", "must be even and divisible "
                          "by nhead", given={"d_model": d_model, "nhead": nhead})
    if not 1 <= patch_size <= steps:
        raise ConfigError("arch.series_transformer.model.patch_size", "out of range",
                          given=patch_size, allowed=f"1..{steps} (the window length)")
    return SeriesTransformer(steps, channels, outputs(spec), d_model, nhead, num_layers, dropout,
                             patch_size)
