"""Image classifiers. Every forward takes ``x`` [B, C, H, W] (normalised floats)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from archselect.architectures.base import architectures
from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec


def _shape(spec: DataSpec) -> tuple[int, int, int]:
    if len(spec.input_shape) != 3:
        raise ConfigError("data", "image architectures need [C, H, W] images", given=spec.input_shape)
    c, h, w = spec.input_shape
    return int(c), int(h), int(w)


def _load_weights(model: nn.Module, path: str | None, key: str) -> None:
    """Load a local state dict where shapes match (the stem and head may differ)."""
    if not path:
        return
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(key, "weights file not found", given=path, fix="give a local .pth file")
    state = torch.load(file, map_location="cpu", weights_only=True)
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fitting) < len(own) // 2:
        raise ConfigError(key, f"only {len(fitting)} of {len(own)} tensors in the file fit this "
                          "architecture (another width or depth?)", given=path,
                          fix="use weights saved from the same architecture and size")
    model.load_state_dict(fitting, strict=False)


class SmallCNN(nn.Module):
    """Three blocks of conv 3x3 -> batch norm -> ReLU -> 2x2 max-pool, then a dropout FC head."""

    def __init__(self, channels: int, num_classes: int, width: int, head_size: int,
                 dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for mult in (1, 2, 4):
            layers += [nn.Conv2d(c_in, width * mult, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width * mult), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c_in = width * mult
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout),
                                  nn.Linear(c_in, head_size), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(head_size, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@architectures.register("cnn", input="image")
def cnn(spec: DataSpec, *, width: int, head_size: int, dropout: float) -> nn.Module:
    """The three-block CNN (channel widths ``width``, 2x, 4x)."""
    c, _, _ = _shape(spec)
    return SmallCNN(c, spec.num_classes, width, head_size, dropout)


@architectures.register("resnet", input="image")
def resnet(spec: DataSpec, *, depth: int, weights_path: str | None) -> nn.Module:
    """torchvision's ResNet (BasicBlock), its stem adapted to small images and any channels."""
    from torchvision.models.resnet import BasicBlock, ResNet

    layers = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}
    if depth not in layers:
        raise ConfigError("arch.resnet.model.depth", "unsupported depth", given=depth,
                          allowed=list(layers))
    c, h, w = _shape(spec)
    model = ResNet(BasicBlock, layers[depth], num_classes=spec.num_classes)
    _load_weights(model, weights_path, "arch.resnet.model.weights_path")
    # Small images keep their resolution: a 3x3 stem, stride 1 up to 16 px, and no max-pool.
    stride = 1 if min(h, w) <= 16 else 2
    model.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=stride, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@architectures.register("efficientnet", input="image")
def efficientnet(spec: DataSpec, *, width_mult: float, depth_mult: float, dropout: float,
                 weights_path: str | None) -> nn.Module:
    """torchvision's EfficientNet at a chosen width and depth, its stem adapted to the input."""
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf

    c, h, w = _shape(spec)
    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=width_mult,
                                       depth_mult=depth_mult)
    model = EfficientNet(setting, dropout, last_channel=last, num_classes=spec.num_classes)
    _load_weights(model, weights_path, "arch.efficientnet.model.weights_path")
    first: Any = model.features[0]
    first[0] = nn.Conv2d(c, first[0].out_channels, 3, stride=1 if min(h, w) <= 16 else 2,
                         padding=1, bias=False)
    return model


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, and an identity (or 1x1 strided) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SmallResNet(nn.Module):
    """The ResNet for small images of He et al. 2016 (the CIFAR networks, "Deep Residual Learning
    for Image Recognition"): a 3x3 stem, three stages of ``blocks`` basic blocks at widths w, 2w,
    4w (the last two halve the resolution), global average pooling, a linear head."""

    def __init__(self, channels: int, num_classes: int, width: int, blocks: int,
                 dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        c_in = width
        for stage, mult in enumerate((1, 2, 4)):
            for b in range(blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(c_in, width * mult, stride))
                c_in = width * mult
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout),
                                  nn.Linear(c_in, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@architectures.register("resnet_small", input="image")
def resnet_small(spec: DataSpec, *, width: int, blocks: int, dropout: float) -> nn.Module:
    """A small ResNet for small images (ResNet-8/14/20 of the CIFAR experiments)."""
    c, _, _ = _shape(spec)
    if width < 1 or blocks < 1:
        raise ConfigError("arch.resnet_small.model", "width and blocks must be at least 1",
                          given={"width": width, "blocks": blocks})
    return SmallResNet(c, spec.num_classes, width, blocks, dropout)
