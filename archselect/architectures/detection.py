"""Object detectors. The contract of a detector (input kind ``detection``):

- ``forward(x)`` on normalised images ``[B, 3, S, S]`` (in eval mode) returns the detections
  ``[B, K, 6]``: ``[x_min, y_min, x_max, y_max, score, class]`` in the image's pixels, the best K
  by score, padded with class -1 (``archselect.tasks.detection.pad_detections``);
- ``detection_loss(x, targets)`` (in train mode), with one ``{"boxes" [n, 4], "labels" [n]}``
  per image, returns its named losses, which the family sums.

``yolo_style`` is written here (a residual CNN, a feature pyramid, an anchor-free YOLO-style
head); the others are torchvision's detectors, built without weights (or from a local file).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archselect.architectures.base import architectures
from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec
from archselect.tasks.detection import MAX_DETECTIONS, pad_detections

#: why a detector is not exported to ONNX (the registry's ``no_onnx``; said in one line)
NO_ONNX = ("detectors are not exported: their post-processing (score filtering, per-image "
           "non-maximum suppression, the best 100 per image) has data-dependent shapes, and the "
           "traced graph keeps the batch size it was traced with (onnxruntime then fails on "
           "another batch size, or the exporter aborts)")


def _size(spec: DataSpec, key: str) -> int:
    if spec.kind != "detection" or len(spec.input_shape) != 3:
        raise ConfigError(key, "detectors need detection data (images with boxes)",
                          given=spec.kind, fix="use it in task=object_detection")
    return int(spec.input_shape[-1])


# -- yolo_style ---------------------------------------------------------------------------------------
class ConvBN(nn.Sequential):
    """Convolution, batch norm, SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.SiLU(inplace=True))


class Residual(nn.Module):
    """x + two 3x3 ConvBN of x."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBN(c, c), ConvBN(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class YoloStyle(nn.Module):
    """A small YOLO-style single-stage detector (after YOLOX, Ge et al. 2021, and FCOS, Tian et
    al. 2019): a CNN backbone down to stride 32 (residual from stride 8), a feature pyramid
    (top-down, strides
    8, 16, 32), and an anchor-free head shared by the levels predicting per cell the class
    scores, an objectness and the distances to the box's four sides.

    Training: cells whose centre lies inside a box, near its centre (within ``radius`` cells)
    and on the level suited to its size are its positives; the loss is a sigmoid focal loss on
    objectness over every cell, and on the positives only a cross-entropy over the classes (as
    YOLOv3 keeps the class loss to cells that hold an object: the many background cells do not
    drown it) and the generalised IoU loss of their boxes (torchvision.ops). Inference: score =
    objectness x class probability; boxes above ``score_threshold`` go through class-wise
    non-maximum suppression (torchvision.ops.batched_nms).
    """

    strides = (8, 16, 32)
    points: torch.Tensor
    point_strides: torch.Tensor
    ranges: torch.Tensor

    def __init__(self, size: int, num_classes: int, width: int, depth: int,
                 score_threshold: float, nms_iou: float, radius: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.score_threshold, self.nms_iou, self.radius = score_threshold, nms_iou, radius
        w = width
        chans = [w, 2 * w, 4 * w, 8 * w, 8 * w]  # strides 2, 4, 8, 16, 32
        stages: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(chans):
            # Residual blocks from stride 8 on: the two high-resolution stages only downsample
            # (they would cost as much as the rest of the network).
            blocks = [Residual(c) for _ in range(depth if i >= 2 else 0)]
            stages.append(nn.Sequential(ConvBN(c_in, c, 3, 2), *blocks))
            c_in = c
        self.stages = nn.ModuleList(stages)
        d = 4 * w  # the pyramid's width
        self.lateral = nn.ModuleList(nn.Conv2d(c, d, 1) for c in chans[2:])
        self.smooth = nn.ModuleList(ConvBN(d, d) for _ in chans[2:])
        self.stem = nn.Sequential(ConvBN(d, d), ConvBN(d, d))
        self.cls = nn.Conv2d(d, num_classes, 1)
        self.obj = nn.Conv2d(d, 1, 1)
        self.box = nn.Conv2d(d, 4, 1)
        prior = -math.log((1 - 0.01) / 0.01)  # start at 1% objectness (RetinaNet's prior)
        nn.init.constant_(self.obj.bias, prior)  # type: ignore[arg-type]
        points, strides, ranges = [], [], []
        lows = (0.0, 64.0, 128.0)
        highs = (64.0, 128.0, float("inf"))
        for s, lo, hi in zip(self.strides, lows, highs, strict=True):
            n = math.ceil(size / s)
            ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            points.append(torch.stack([(xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s], 1))
            strides.append(torch.full((n * n,), float(s)))
            ranges.append(torch.tensor([[lo, hi]]).expand(n * n, 2))
        self.register_buffer("points", torch.cat(points), persistent=False)
        self.register_buffer("point_strides", torch.cat(strides), persistent=False)
        self.register_buffer("ranges", torch.cat(ranges), persistent=False)

    def _raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits [B, P, C], objectness logits [B, P] and box distances [B, P, 4] (in
        pixels) for every cell of every level, levels in order."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        c3, c4, c5 = feats[2:]
        p5 = self.lateral[2](c5)
        p4 = self.lateral[1](c4) + nn.functional.interpolate(p5, size=c4.shape[-2:])
        p3 = self.lateral[0](c3) + nn.functional.interpolate(p4, size=c3.shape[-2:])
        levels = [self.smooth[0](p3), self.smooth[1](p4), self.smooth[2](p5)]
        cls, obj, box = [], [], []
        for level, s in zip(levels, self.strides, strict=True):
            h = self.stem(level)
            cls.append(self.cls(h).flatten(2).transpose(1, 2))
            obj.append(self.obj(h).flatten(2).transpose(1, 2)[..., 0])
            box.append(nn.functional.softplus(self.box(h)).flatten(2).transpose(1, 2) * s)
        return torch.cat(cls, 1), torch.cat(obj, 1), torch.cat(box, 1)

    def _boxes(self, dist: torch.Tensor) -> torch.Tensor:
        p = self.points
        return torch.stack([p[:, 0] - dist[..., 0], p[:, 1] - dist[..., 1],
                            p[:, 0] + dist[..., 2], p[:, 1] + dist[..., 3]], -1)

    def _assign(self, boxes: torch.Tensor) -> torch.Tensor:
        """The index of the box each cell learns (-1: a negative)."""
        p = self.points
        if not len(boxes):
            return torch.full((len(p),), -1, dtype=torch.long, device=p.device)
        x, y = p[:, :1], p[:, 1:]
        left, top = x - boxes[:, 0], y - boxes[:, 1]
        right, bottom = boxes[:, 2] - x, boxes[:, 3] - y
        dist = torch.stack([left, top, right, bottom], -1)  # [P, n, 4]
        inside = dist.min(-1).values > 0
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        near = ((x - cx).abs() < self.radius * self.point_strides[:, None]) & (
            (y - cy).abs() < self.radius * self.point_strides[:, None])
        reach = dist.max(-1).values
        fits = (reach > self.ranges[:, :1]) & (reach <= self.ranges[:, 1:])
        ok = inside & near & fits
        # A box no level would take (all of its cells on other levels) keeps its inside cells.
        lonely = ~ok.any(0)
        ok = ok | (inside & near & lonely[None, :])
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand_as(ok)
        area = torch.where(ok, area, torch.full_like(area, float("inf")))
        best, index = area.min(1)
        return torch.where(torch.isfinite(best), index, torch.full_like(index, -1))

    def detection_loss(self, x: torch.Tensor, targets: list[dict[str, torch.Tensor]]
                       ) -> dict[str, torch.Tensor]:
        from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

        cls, obj, dist = self._raw(x)
        boxes = self._boxes(dist)
        obj_target = torch.zeros_like(obj)
        cls_losses, box_losses, n_pos = [], [], 0
        for i, t in enumerate(targets):
            index = self._assign(t["boxes"])
            pos = index >= 0
            n_pos += int(pos.sum())
            if pos.any():
                obj_target[i, pos] = 1.0
                cls_losses.append(nn.functional.cross_entropy(
                    cls[i, pos], t["labels"][index[pos]], reduction="sum"))
                box_losses.append(generalized_box_iou_loss(
                    boxes[i, pos], t["boxes"][index[pos]], reduction="sum"))
        norm = max(n_pos, 1)
        zero = cls.sum() * 0.0  # no box in the batch: nothing to classify or regress
        return {
            "cls": torch.stack(cls_losses).sum() / norm if cls_losses else zero,
            "obj": sigmoid_focal_loss(obj, obj_target, reduction="sum") / norm,
            "box": 2.0 * (torch.stack(box_losses).sum() / norm if box_losses else zero),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import batched_nms

        cls, obj, dist = self._raw(x)
        boxes = self._boxes(dist).clamp(0, float(x.shape[-1]))
        scores = torch.sigmoid(obj)[..., None] * torch.softmax(cls, -1)  # [B, P, C]
        found = []
        for i in range(len(x)):
            flat = scores[i].flatten()
            keep = flat > self.score_threshold
            idx = torch.nonzero(keep).flatten()
            top = flat[idx].topk(min(len(idx), 1000)).indices
            idx = idx[top]
            point, label = idx // self.num_classes, idx % self.num_classes
            b, s = boxes[i, point], flat[idx]
            kept = batched_nms(b, s, label, self.nms_iou)[:MAX_DETECTIONS]
            found.append((b[kept], s[kept], label[kept]))
        return pad_detections(found)


@architectures.register("yolo_style", input="detection", no_onnx=NO_ONNX)
def yolo_style(spec: DataSpec, *, width: int, depth: int, score_threshold: float,
               nms_iou: float, radius: float) -> nn.Module:
    """A small YOLO-style anchor-free detector (residual CNN, feature pyramid, decoupled
    class / objectness / box head)."""
    size = _size(spec, "arch.yolo_style")
    if width < 1 or depth < 0:
        raise ConfigError("arch.yolo_style.model", "width must be at least 1 and depth at least 0",
                          given={"width": width, "depth": depth})
    return YoloStyle(size, spec.num_classes, width, depth, score_threshold, nms_iou, radius)


# -- torchvision's detectors ---------------------------------------------------------------------------
class TorchvisionDetector(nn.Module):
    """A torchvision detector behind the detector contract: its classes are shifted by one
    (torchvision keeps 0 for the background), its own resizing and normalisation are off (the
    data kind letterboxes and normalises)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def detection_loss(self, x: torch.Tensor, targets: list[dict[str, torch.Tensor]]
                       ) -> dict[str, torch.Tensor]:
        shifted = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
        losses: dict[str, torch.Tensor] = self.model(list(x), shifted)
        return {k.removeprefix("loss_").removeprefix("bbox_"): v for k, v in losses.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(list(x))
        return pad_detections([(o["boxes"], o["scores"], o["labels"] - 1) for o in out])


def _load(model: nn.Module, path: str | None, key: str) -> None:
    """Local weights where their shapes fit (the class layers differ)."""
    if not path:
        return
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(key, "weights file not found", given=path, fix="give a local .pth file")
    state = torch.load(file, map_location="cpu", weights_only=True)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fitting) < len(own) // 2:
        raise ConfigError(key, f"only {len(fitting)} of {len(own)} tensors in the file fit this "
                          "detector", given=path, fix="use weights saved from the same detector")
    model.load_state_dict(fitting, strict=False)


def _common(size: int, score_threshold: float) -> dict[str, Any]:
    """torchvision's transform off (the data kind letterboxes and normalises)."""
    return {"min_size": size, "max_size": size, "image_mean": [0.0, 0.0, 0.0],
            "image_std": [1.0, 1.0, 1.0], "score_thresh": score_threshold,
            "detections_per_img": MAX_DETECTIONS}


def _resnet_fpn(depth: int, channels: int, extra: bool) -> Any:
    """A ResNet body without weights and a feature pyramid (strides 8, 16, 32; with ``extra``
    also 64 and 128 as FCOS and RetinaNet use) of ``channels``."""
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.resnet import BasicBlock, ResNet
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    layers = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}[depth]
    body = ResNet(BasicBlock, layers)
    return BackboneWithFPN(
        body, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=[128, 256, 512], out_channels=channels,
        extra_blocks=LastLevelP6P7(channels, channels) if extra else LastLevelMaxPool())


def _depth(depth: int, key: str) -> int:
    if depth not in (10, 18, 34):
        raise ConfigError(key, "unsupported ResNet depth", given=depth, allowed=[10, 18, 34])
    return depth


@architectures.register("fcos", input="detection", no_onnx=NO_ONNX)
def fcos(spec: DataSpec, *, depth: int, fpn_channels: int, head_convs: int,
         score_threshold: float, weights_path: str | None) -> nn.Module:
    """torchvision's FCOS (anchor-free, one stage) on a ResNet + FPN built without weights."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    size = _size(spec, "arch.fcos")
    backbone = _resnet_fpn(_depth(depth, "arch.fcos.model.depth"), fpn_channels, extra=True)
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    head = FCOSHead(fpn_channels, 1, spec.num_classes + 1, num_convs=head_convs)
    model = FCOS(backbone, spec.num_classes + 1, anchor_generator=anchors, head=head,
                 **_common(size, score_threshold))
    _load(model, weights_path, "arch.fcos.model.weights_path")
    return TorchvisionDetector(model)


@architectures.register("retinanet", input="detection", no_onnx=NO_ONNX)
def retinanet(spec: DataSpec, *, depth: int, fpn_channels: int, score_threshold: float,
              weights_path: str | None) -> nn.Module:
    """torchvision's RetinaNet (anchors, focal loss) on a ResNet + FPN built without weights;
    anchor sizes follow the image size (16 to 256 px at 256)."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    size = _size(spec, "arch.retinanet")
    backbone = _resnet_fpn(_depth(depth, "arch.retinanet.model.depth"), fpn_channels, extra=True)
    base = max(size / 256, 0.25)
    sizes = tuple(tuple(int(s * base * m) for m in (1.0, 1.26, 1.59))
                  for s in (16, 32, 64, 128, 256))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    model = RetinaNet(backbone, spec.num_classes + 1, anchor_generator=anchors,
                      **_common(size, score_threshold))
    _load(model, weights_path, "arch.retinanet.model.weights_path")
    return TorchvisionDetector(model)


@architectures.register("faster_rcnn", input="detection", no_onnx=NO_ONNX)
def faster_rcnn(spec: DataSpec, *, depth: int, fpn_channels: int, score_threshold: float,
                weights_path: str | None) -> nn.Module:
    """torchvision's Faster R-CNN (a region proposal network, then a box head on the proposals)
    on a ResNet + FPN built without weights; anchor sizes follow the image size."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    size = _size(spec, "arch.faster_rcnn")
    backbone = _resnet_fpn(_depth(depth, "arch.faster_rcnn.model.depth"), fpn_channels,
                           extra=False)
    base = max(size / 256, 0.25)
    anchors = AnchorGenerator(tuple((int(s * base),) for s in (16, 32, 64, 128)),
                              ((0.5, 1.0, 2.0),) * 4)
    common = _common(size, score_threshold)
    model = FasterRCNN(backbone, spec.num_classes + 1, rpn_anchor_generator=anchors,
                       min_size=size, max_size=size, image_mean=common["image_mean"],
                       image_std=common["image_std"], box_score_thresh=score_threshold,
                       box_detections_per_img=MAX_DETECTIONS)
    _load(model, weights_path, "arch.faster_rcnn.model.weights_path")
    return TorchvisionDetector(model)


@architectures.register("ssdlite", input="detection", no_onnx=NO_ONNX)
def ssdlite(spec: DataSpec, *, score_threshold: float, weights_path: str | None) -> nn.Module:
    """torchvision's SSDlite (MobileNetV3-Large feature extractor, depthwise heads) built
    without weights, at the data's image size instead of its fixed 320."""
    from functools import partial

    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import (
        SSDLiteHead,
        _mobilenet_extractor,
        _normal_init,
    )
    from torchvision.models.mobilenetv3 import mobilenet_v3_large

    size = _size(spec, "arch.ssdlite")
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    body = mobilenet_v3_large(weights=None, norm_layer=norm, reduced_tail=True)
    _normal_init(body)
    backbone = _mobilenet_extractor(body, 6, norm)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.1, max_ratio=0.9)
    channels = det_utils.retrieve_out_channels(backbone, (size, size))
    head = SSDLiteHead(channels, anchors.num_anchors_per_location(), spec.num_classes + 1, norm)
    common = _common(size, score_threshold)
    model = SSD(backbone, anchors, (size, size), spec.num_classes + 1, head=head,
                score_thresh=score_threshold, detections_per_img=MAX_DETECTIONS,
                nms_thresh=0.55, topk_candidates=300, image_mean=common["image_mean"],
                image_std=common["image_std"])
    _load(model, weights_path, "arch.ssdlite.model.weights_path")
    return TorchvisionDetector(model)
