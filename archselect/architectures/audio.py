"""Sound classifiers on log-mel spectrograms (input kind ``audio``): ``x`` is ``[B, 1, n_mels,
frames]``, standardised; every model returns class logits ``[B, num_classes]``."""

from __future__ import annotations

import math

import torch
from torch import nn

from archselect.architectures.base import architectures
from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec


def _positive(key: str, **values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise ConfigError(f"{key}.{name}", "must be at least 1", given=v)


class MfccMLP(nn.Module):
    """The mean and spread over time of 20 MFCCs, then an MLP: what a clip sounds like on
    average, without its order in time."""

    def __init__(self, spec: DataSpec, hidden_size: int, depth: int, dropout: float) -> None:
        super().__init__()
        from archselect.data.audio import mfcc_stats

        self.stats = mfcc_stats
        width = int(self.stats(torch.zeros(1, *spec.input_shape)).shape[1])
        layers: list[nn.Module] = [nn.BatchNorm1d(width)]
        for _ in range(depth):
            layers += [nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, spec.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.stats(x))


def _block(cin: int, cout: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(), nn.MaxPool2d(pool, ceil_mode=True))


class LogMelCNN(nn.Module):
    """A 2-D CNN on the log-mel image (3x3 convolutions, batch norm, 2x2 pooling, the width
    doubling each block), global average and max pooling, a linear classifier."""

    def __init__(self, spec: DataSpec, width: int, depth: int, dropout: float) -> None:
        super().__init__()
        blocks, cin = [], 1
        for i in range(depth):
            blocks.append(_block(cin, width * 2 ** i, (2, 2)))
            cin = width * 2 ** i
        self.body = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * cin, spec.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))


class CNNLSTM(nn.Module):
    """Two convolution blocks pooling the frequency axis (time kept), then a bidirectional LSTM
    over the frames; its outputs averaged and max-pooled over time, a linear classifier."""

    def __init__(self, spec: DataSpec, width: int, hidden_size: int, dropout: float) -> None:
        super().__init__()
        n_mels = int(spec.input_shape[1])
        self.front = nn.Sequential(_block(1, width, (2, 1)), _block(width, 2 * width, (2, 1)))
        bands = math.ceil(math.ceil(n_mels / 2) / 2)  # two ceil-mode poolings of 2
        self.lstm = nn.LSTM(2 * width * bands, hidden_size, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * hidden_size, spec.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.front(x)  # [B, C, M', T]
        h = h.flatten(1, 2).transpose(1, 2)  # [B, T, C * M']
        out, _ = self.lstm(h)
        return self.head(torch.cat([out.mean(1), out.amax(1)], 1))


class AudioTransformer(nn.Module):
    """After the Audio Spectrogram Transformer (Gong et al. 2021): the spectrogram cut into
    strips of ``patch`` frames (all bands), each projected to a token, a class token and learned
    positions, a pre-norm Transformer encoder; the class token's output classifies."""

    def __init__(self, spec: DataSpec, d_model: int, nhead: int, num_layers: int, patch: int,
                 dropout: float) -> None:
        super().__init__()
        n_mels, frames = int(spec.input_shape[1]), int(spec.input_shape[2])
        self.patch = patch
        tokens = -(-frames // patch)
        self.embed = nn.Linear(n_mels * patch, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, 4 * d_model, dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, _m, t = x.shape
        pad = (-t) % self.patch
        x = nn.functional.pad(x[:, 0], (0, pad))  # [B, M, T']
        strips = x.reshape(b, x.shape[1], -1, self.patch)  # [B, M, n, p] (ONNX has no unfold)
        tokens = self.embed(strips.permute(0, 2, 1, 3).flatten(2))  # [B, n, d]
        h = torch.cat([self.cls.expand(b, -1, -1), tokens], 1) + self.pos[:, : tokens.shape[1] + 1]
        return self.head(self.norm(self.encoder(h))[:, 0])


@architectures.register("mfcc_mlp", input="audio")
def mfcc_mlp(spec: DataSpec, *, hidden_size: int, depth: int, dropout: float) -> nn.Module:
    _positive("arch.mfcc_mlp.model", hidden_size=hidden_size, depth=depth)
    return MfccMLP(spec, hidden_size, depth, dropout)


@architectures.register("cnn_logmel", input="audio")
def cnn_logmel(spec: DataSpec, *, width: int, depth: int, dropout: float) -> nn.Module:
    _positive("arch.cnn_logmel.model", width=width, depth=depth)
    return LogMelCNN(spec, width, depth, dropout)


@architectures.register("cnn_lstm", input="audio")
def cnn_lstm(spec: DataSpec, *, width: int, hidden_size: int, dropout: float) -> nn.Module:
    _positive("arch.cnn_lstm.model", width=width, hidden_size=hidden_size)
    return CNNLSTM(spec, width, hidden_size, dropout)


@architectures.register("audio_transformer", input="audio")
def audio_transformer(spec: DataSpec, *, d_model: int, nhead: int, num_layers: int, patch: int,
                      dropout: float) -> nn.Module:
    _positive("arch.audio_transformer.model", d_model=d_model, nhead=nhead,
              num_layers=num_layers, patch=patch)
    if d_model % nhead:
        raise ConfigError("arch.audio_transformer.model.nhead", "must divide d_model",
                          given=nhead, allowed=[h for h in (1, 2, 4, 8) if d_model % h == 0])
    return AudioTransformer(spec, d_model, nhead, num_layers, patch, dropout)
