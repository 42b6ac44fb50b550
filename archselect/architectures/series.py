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


# -- forecasting: linear maps and N-BEATS --------------------------------------------------------
class LinearForecaster(nn.Module):
    """One linear map from the window to the horizon (Zeng et al. 2023, "Are Transformers
    Effective for Time Series Forecasting?").

    ``nlinear``: the window's last value is subtracted from every step and added back to the
    forecast (robust to a level shift between training and test spans). ``dlinear``: the window
    is split into a trend (a moving average of ``kernel_size`` steps) and the remainder, each
    with its own linear map, summed. ``seasonal``: the seasonal-naive forecast read from the
    window (the target's last ``season`` steps, repeated) plus ``nlinear``'s map as a correction,
    which starts at zero: the model starts as repeating the last season and learns only what
    beats it (with a season of one step, or a window shorter than the season, it is ``nlinear``).
    """

    def __init__(self, steps: int, channels: int, n_out: int, variant: str,
                 kernel_size: int, season: int = 1) -> None:
        super().__init__()
        self.variant = variant
        self.kernel_size = kernel_size
        self.linear = nn.Linear(steps * channels, n_out)
        self.trend = nn.Linear(steps * channels, n_out) if variant == "dlinear" else None
        m = season if 1 < season <= steps else 1
        #: the window steps the seasonal-naive forecast repeats, one per forecast step
        self.register_buffer("season_steps", steps - m + torch.arange(n_out) % m,
                             persistent=False)
        if variant == "seasonal":
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trend is not None:
            k = self.kernel_size
            # Moving average over time, the ends repeated so that every step has a full window.
            padded = torch.cat([x[:, :1].expand(-1, (k - 1) // 2, -1), x,
                                x[:, -1:].expand(-1, k // 2, -1)], dim=1)
            trend = nn.functional.avg_pool1d(padded.transpose(1, 2), k, stride=1).transpose(1, 2)
            return self.linear((x - trend).flatten(1)) + self.trend(trend.flatten(1))
        if self.variant in ("nlinear", "seasonal"):
            last = x[:, -1:, :]
            steps: torch.Tensor = self.season_steps  # type: ignore[assignment]
            base = x[:, steps, 0] if self.variant == "seasonal" else last[:, 0, :1]
            return self.linear((x - last).flatten(1)) + base
        return self.linear(x.flatten(1))


class NBeatsBlock(nn.Module):
    """Fully connected layers, then a backcast of the input and a forecast (generic basis)."""

    def __init__(self, n_in: int, n_out: int, width: int, layers: int, dropout: float) -> None:
        super().__init__()
        body: list[nn.Module] = []
        size = n_in
        for _ in range(layers):
            body += [nn.Linear(size, width), nn.ReLU(), nn.Dropout(dropout)]
            size = width
        self.body = nn.Sequential(*body)
        self.backcast = nn.Linear(width, n_in)
        self.forecast = nn.Linear(width, n_out)


class NBeats(nn.Module):
    """N-BEATS, generic (Oreshkin et al. 2020): blocks in a residual stack, each removing its
    backcast from what the next one reads and adding its forecast to the sum."""

    def __init__(self, n_in: int, n_out: int, n_blocks: int, width: int, layers: int,
                 dropout: float) -> None:
        super().__init__()
        self.n_out = n_out
        self.blocks = nn.ModuleList(NBeatsBlock(n_in, n_out, width, layers, dropout)
                                    for _ in range(n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x.flatten(1)
        forecast = torch.zeros(x.shape[0], self.n_out, dtype=x.dtype, device=x.device)
        block: NBeatsBlock
        for block in self.blocks:  # type: ignore[assignment]
            h = block.body(residual)
            residual = residual - block.backcast(h)
            forecast = forecast + block.forecast(h)
        return forecast


@architectures.register("linear", input="series")
def linear(spec: DataSpec, *, variant: str, kernel_size: int) -> nn.Module:
    """DLinear / NLinear: a linear map over the window (after a trend split, or the last value
    subtracted; or a correction of the seasonal-naive forecast), one output per forecast step."""
    steps, channels = _shape(spec, "arch.linear")
    variants = ("seasonal", "nlinear", "dlinear", "plain")
    if variant not in variants:
        raise ConfigError("arch.linear.model.variant", "unknown variant", given=variant,
                          allowed=variants)
    if kernel_size < 1:
        raise ConfigError("arch.linear.model.kernel_size", "must be at least 1", given=kernel_size)
    return LinearForecaster(steps, channels, outputs(spec), variant, min(kernel_size, steps),
                            season=int(spec.season_length or 1))


@architectures.register("nbeats", input="series")
def nbeats(spec: DataSpec, *, n_blocks: int, width: int, layers: int,
           dropout: float) -> nn.Module:
    """N-BEATS-style stack of fully connected blocks with backcast residuals."""
    steps, channels = _shape(spec, "arch.nbeats")
    if min(n_blocks, width, layers) < 1:
        raise ConfigError("arch.nbeats.model", "n_blocks, width and layers must be at least 1",
                          given={"n_blocks": n_blocks, "width": width, "layers": layers})
    return NBeats(steps * channels, outputs(spec), n_blocks, width, layers, dropout)


# -- series classification: a residual 1-D CNN and random convolution kernels ------------------
class ResidualBlock1d(nn.Module):
    """Three convolutions (kernels 7, 5, 3: the paper's 8, 5, 3 made odd, so padding is even on
    both sides) with batch norm and ReLU, and a 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = c_in
        for i, k in enumerate((7, 5, 3)):
            layers += [nn.Conv1d(size, c_out, k, padding=k // 2, bias=False),
                       nn.BatchNorm1d(c_out)]
            if i < 2:
                layers.append(nn.ReLU())
            size = c_out
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet1d(nn.Module):
    """The residual network for series classification of Wang et al. 2017 ("Time Series
    Classification from Scratch with Deep Neural Networks"): residual blocks, global average
    pooling over time, a linear head."""

    def __init__(self, channels: int, n_out: int, width: int, n_blocks: int,
                 dropout: float) -> None:
        super().__init__()
        widths = [width] + [2 * width] * (n_blocks - 1)
        blocks, size = [], channels
        for w in widths:
            blocks.append(ResidualBlock1d(size, w))
            size = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x.transpose(1, 2)).mean(-1))


class Rocket(nn.Module):
    """Random convolution kernels (Dempster et al. 2020, ROCKET): fixed random kernels of
    lengths 7, 9 and 11 with random dilations, biases and paddings; each gives two features,
    the proportion of positive values (PPV) and the maximum; a trained linear head on the
    standardised features. The kernels come from ``seed`` and travel in the state dict.
    """

    def __init__(self, steps: int, channels: int, n_out: int, n_kernels: int, seed: int,
                 dropout: float) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        groups: dict[tuple[int, int, int], list[tuple[torch.Tensor, float]]] = {}
        for _ in range(n_kernels):
            length = (7, 9, 11)[int(torch.randint(0, 3, (1,), generator=g))]
            weight = torch.randn(channels, length, generator=g)
            weight -= weight.mean()
            bias = float(torch.rand(1, generator=g)) * 2 - 1
            top = math.log2(max((steps - 1) / (length - 1), 1.0))
            dilation = int(2 ** (float(torch.rand(1, generator=g)) * top))
            padding = (length - 1) * dilation // 2 if int(torch.randint(0, 2, (1,),
                                                                        generator=g)) else 0
            if (length - 1) * dilation + 1 > steps + 2 * padding:  # the kernel must fit
                padding = ((length - 1) * dilation + 1 - steps + 1) // 2
            groups.setdefault((length, dilation, padding), []).append((weight, bias))
        self.shapes = list(groups)
        for i, key in enumerate(self.shapes):
            self.register_buffer(f"weight{i}", torch.stack([w for w, _ in groups[key]]))
            self.register_buffer(f"bias{i}", torch.tensor([b for _, b in groups[key]]))
        self.norm = nn.BatchNorm1d(2 * n_kernels)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * n_kernels, n_out))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """PPV and max of every kernel's response, [B, 2 * n_kernels]."""
        x = x.transpose(1, 2)
        out = []
        for i, (_, dilation, padding) in enumerate(self.shapes):
            response = nn.functional.conv1d(x, getattr(self, f"weight{i}"),
                                            getattr(self, f"bias{i}"), dilation=dilation,
                                            padding=padding)
            out += [(response > 0).to(x.dtype).mean(-1), response.amax(-1)]
        return torch.cat(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x)))


@architectures.register("cnn1d", input="series")
def cnn1d(spec: DataSpec, *, width: int, n_blocks: int, dropout: float) -> nn.Module:
    """A residual 1-D CNN over the steps (kernels 7, 5, 3), globally average-pooled."""
    _, channels = _shape(spec, "arch.cnn1d")
    if width < 1 or n_blocks < 1:
        raise ConfigError("arch.cnn1d.model", "width and n_blocks must be at least 1",
                          given={"width": width, "n_blocks": n_blocks})
    return ResNet1d(channels, outputs(spec), width, n_blocks, dropout)


@architectures.register("rocket", input="series")
def rocket(spec: DataSpec, *, n_kernels: int, seed: int, dropout: float) -> nn.Module:
    """Fixed random convolution kernels (ROCKET) and a trained linear head."""
    steps, channels = _shape(spec, "arch.rocket")
    if n_kernels < 1:
        raise ConfigError("arch.rocket.model.n_kernels", "must be at least 1", given=n_kernels)
    return Rocket(steps, channels, outputs(spec), n_kernels, seed, dropout)
