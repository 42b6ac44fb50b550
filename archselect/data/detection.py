"""Object detection data: images with boxes and class labels, from a COCO folder, a YOLO folder
or the built-in generated scenes; letterboxed to a square, augmented together with their boxes;
and the served detector's codec.

Boxes travel as ``[x_min, y_min, x_max, y_max, class]`` rows in the letterboxed image's pixels; a
batch's targets are padded to the data set's largest box count with rows of -1 (``pad_boxes``).
Letterboxing scales an image so that its longer side is ``image_size`` and pads the rest at the
right and bottom, so a box maps back by one division.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from archselect.config.errors import ConfigError, DataError
from archselect.config.schema import (
    DetectionDataConfig,
    DetectionFolderSourceConfig,
    SceneSourceConfig,
    SourceConfig,
)
from archselect.data.base import (
    SPLITS,
    BaseDataModule,
    DataSpec,
    ServingBundle,
    check_fractions,
    data_sources,
    datamodules,
    splits_text,
)
from archselect.hashing import stable_hash
from archselect.serving import Batch, Codec

#: the column of images the served detector reads (else the first column)
IMAGE_COLUMN = "image"
#: image file suffixes read from an ``images/`` folder
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
#: a box may cross the image's edge by this many pixels (rounding) before it is an error
EDGE_TOLERANCE = 1.0
#: the served detector's answer, one row per detection
OUTPUT_COLUMNS = ["image_index", "label", "score", "x_min", "y_min", "x_max", "y_max"]


@dataclass
class Annotated:
    """One image of a detection set: its file, its boxes ``[n, 4]`` (x_min, y_min, x_max,
    y_max in the image's pixels), their class indices, and the split its folder gave."""

    path: Path
    boxes: np.ndarray
    labels: np.ndarray
    split: str | None = None


@dataclass
class DetectionSet:
    """What a detection source hands on: the images with their boxes, the class names, and
    every problem found (``file: what is wrong``) with the images it concerns (left out)."""

    items: list[Annotated]
    classes: list[str]
    problems: list[str] = field(default_factory=list)


def pad_boxes(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """``[n_i, 5]`` box rows per image -> ``[B, width, 5]``, padded with -1."""
    out = torch.full((len(rows), width, 5), -1.0)
    for i, r in enumerate(rows):
        n = min(len(r), width)
        out[i, :n] = r[:n]
    return out


def letterbox(image: Any, size: int) -> tuple[np.ndarray, float]:
    """A PIL image as uint8 ``[3, size, size]``: scaled so its longer side is ``size``, padded
    at the right and bottom with grey; and the scale (new pixels per original pixel)."""
    from PIL import Image

    rgb = image.convert("RGB")
    w, h = rgb.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (size, size), (114, 114, 114))
    canvas.paste(rgb.resize((nw, nh), Image.Resampling.BILINEAR), (0, 0))
    return np.asarray(canvas, dtype=np.uint8).transpose(2, 0, 1).copy(), scale


# -- sources: COCO and YOLO folders, the built-in scenes ------------------------------------------
def _image_folder(folder: Path) -> Path:
    return folder / "images" if (folder / "images").is_dir() else folder


def _box_problem(box: np.ndarray, size: tuple[int, int]) -> str | None:
    """What is wrong with one ``[x_min, y_min, x_max, y_max]`` box on an image of ``size``
    (width, height), or None."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not np.isfinite(box).all():
        return f"box {[round(v, 1) for v in box.tolist()]} is not a number"
    if x1 < x0 or y1 < y0:
        return f"box {[round(v, 1) for v in box.tolist()]} is inverted (its end before its start)"
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return f"box {[round(v, 1) for v in box.tolist()]} is empty (no width or height)"
    w, h = size
    t = EDGE_TOLERANCE
    if x0 < -t or y0 < -t or x1 > w + t or y1 > h + t:
        return (f"box {[round(v, 1) for v in box.tolist()]} lies outside the image "
                f"({w}x{h})")
    return None


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file, or None when it cannot be read as an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            return int(img.size[0]), int(img.size[1])
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None


def _checked(path: Path, boxes: np.ndarray, labels: np.ndarray, n_classes: int,
             size: tuple[int, int] | None, split: str | None, folder: Path,
             problems: list[str]) -> Annotated | None:
    """The image if its file reads and every box is valid, else None with the problems noted."""
    name = _relative(path, folder)
    if not path.is_file():
        problems.append(f"{name}: image file not found")
        return None
    if size is None:
        problems.append(f"{name}: unreadable image")
        return None
    found = []
    for box, label in zip(boxes, labels, strict=True):
        why = _box_problem(box, size)
        if why is None and not 0 <= int(label) < n_classes:
            why = f"class id {int(label)} is not one of the {n_classes} classes"
        if why is not None:
            found.append(f"{name}: {why}")
    if found:
        problems.extend(found)
        return None
    w, h = size
    clipped = boxes.copy()
    if len(clipped):
        clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
        clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    return Annotated(path=path, boxes=clipped.astype(np.float32),
                     labels=labels.astype(np.int64), split=split)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def _split_folders(root: Path) -> list[tuple[str | None, Path]]:
    """The folder alone, or its ``train/``, ``val/`` (``valid/``) and ``test/`` sub-folders."""
    subs = {name: root / d for name, d in (("train", "train"), ("val", "val"),
                                           ("val", "valid"), ("test", "test"))
            if (root / d).is_dir()}
    if "train" in subs and len(subs) > 1:
        return list(subs.items())
    return [(None, root)]


def _folder(raw: str | None) -> Path:
    if raw in (None, "", "???"):
        raise ConfigError("data.path", "no folder given",
                          fix="add data.path=/path/to/folder (images/ and its annotations)")
    path = Path(str(raw)).expanduser()
    if not path.is_dir():
        raise ConfigError("data.path", "folder not found" if not path.exists() else
                          "is a file, not a folder", given=str(raw),
                          fix="give a folder holding images/ and its annotations")
    return path


def _coco_json(folder: Path) -> Path:
    candidates = [folder / "annotations.json", *sorted(folder.glob("*.json")),
                  *sorted((folder / "annotations").glob("*.json"))]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(f"data.path: {folder} has no annotations.json (COCO); fix: add it, or use "
                    "data=yolo for images/ with labels/")


def read_coco(folder: Path, root: Path, split: str | None, categories: dict[int, int] | None,
              names: list[str], problems: list[str]) -> list[Annotated]:
    """The images of one COCO folder (``annotations.json`` beside ``images/``). Category ids map
    to class indices through ``categories`` (filled from the first folder's categories)."""
    path = _coco_json(folder)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"data.path: {_relative(path, root)} is not readable JSON "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); fix: give a "
                        "COCO annotations file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"data.path: {_relative(path, root)} has no 'images' list; fix: give a "
                        "COCO annotations file (images, annotations, categories)")
    if categories is not None and not categories:
        cats = sorted(doc.get("categories") or [], key=lambda c: int(c.get("id", 0)))
        for c in cats:
            categories[int(c["id"])] = len(names)
            names.append(str(c.get("name", c["id"])))
    images_dir = _image_folder(folder)
    by_image: dict[Any, list[tuple[list[float], int]]] = {}
    known = {img.get("id") for img in doc["images"]}
    for ann in doc.get("annotations") or []:
        image_id, bbox = ann.get("image_id"), ann.get("bbox")
        if image_id not in known:
            problems.append(f"{_relative(path, root)}: annotation {ann.get('id')} names image id "
                            f"{image_id}, which is not in its images")
            continue
        if ann.get("iscrowd"):
            continue  # a crowd region, not one object
        cat = int(ann.get("category_id", -1))
        label = (categories or {}).get(cat, -1 - cat if cat >= 0 else -1)
        if not isinstance(bbox, list) or len(bbox) != 4:
            by_image.setdefault(image_id, []).append(([float("nan")] * 4, label))
            continue
        x, y, w, h = (float(v) for v in bbox)
        by_image.setdefault(image_id, []).append(([x, y, x + w, y + h], label))
    out = []
    n = len(names)
    for img in doc["images"]:
        file = images_dir / str(img.get("file_name", ""))
        rows = by_image.get(img.get("id"), [])
        unknown = [lab for _, lab in rows if lab < 0]
        if unknown:
            cat_ids = sorted({-1 - lab for lab in unknown})
            problems.append(f"{_relative(file, root)}: category id(s) {cat_ids} are not in the "
                            "categories")
            continue
        boxes = np.array([b for b, _ in rows], dtype=np.float64).reshape(-1, 4)
        labels = np.array([lab for _, lab in rows], dtype=np.int64)
        size = _image_size(file) if file.is_file() else None
        item = _checked(file, boxes, labels, n, size, split, root, problems)
        if item is not None:
            out.append(item)
    return out


def read_yolo(folder: Path, root: Path, split: str | None, names: list[str],
              problems: list[str]) -> list[Annotated]:
    """The images of one YOLO folder: ``images/`` and ``labels/<stem>.txt`` (one line per box:
    class, centre x, centre y, width, height, all but the class relative to the image)."""
    images_dir = _image_folder(folder)
    labels_dir = folder / "labels"
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    stems = {p.stem for p in files}
    if labels_dir.is_dir():
        for txt in sorted(labels_dir.glob("*.txt")):
            if txt.stem not in stems:
                problems.append(f"{_relative(txt, root)}: labels for an image that is not in "
                                f"{_relative(images_dir, root)}/")
    out = []
    for file in files:
        size = _image_size(file)
        txt = labels_dir / f"{file.stem}.txt"
        rows: list[list[float]] = []
        bad_line = None
        if txt.is_file():
            for k, line in enumerate(txt.read_text(encoding="utf-8", errors="replace")
                                     .splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    values = [float(v) for v in parts[:5]]
                except ValueError:
                    values = []
                if len(parts) < 5 or len(values) < 5 or not float(values[0]).is_integer():
                    bad_line = f"line {k} is not 'class cx cy w h' ({line.strip()[:40]!r})"
                    break
                rows.append(values)
        if bad_line is not None:
            problems.append(f"{_relative(txt, root)}: {bad_line}")
            continue
        if size is None:
            problems.append(f"{_relative(file, root)}: unreadable image")
            continue
        w, h = size
        arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
        outside = [r for r in arr if not (0 <= r[1] <= 1 and 0 <= r[2] <= 1)]
        if outside:
            problems.append(f"{_relative(txt, root)}: box centre {outside[0][1:3].round(3).tolist()} "
                            "lies outside the image (YOLO coordinates are 0..1)")
            continue
        boxes = np.stack([(arr[:, 1] - arr[:, 3] / 2) * w, (arr[:, 2] - arr[:, 4] / 2) * h,
                          (arr[:, 1] + arr[:, 3] / 2) * w, (arr[:, 2] + arr[:, 4] / 2) * h], 1)
        item = _checked(file, boxes, arr[:, 0].astype(np.int64), len(names), size, split, root,
                        problems)
        if item is not None:
            out.append(item)
    return out


@data_sources.register("coco", kind="detection", schema=DetectionFolderSourceConfig)
def load_coco(source: DetectionFolderSourceConfig) -> DetectionSet:
    """A COCO folder: ``images/`` and ``annotations.json`` (bbox = x, y, width, height in
    pixels; classes by category id and name), or ``train/``, ``val/``, ``test/`` folders of
    that layout."""
    root = _folder(source.path)
    categories: dict[int, int] = {}
    names: list[str] = []
    problems: list[str] = []
    items = []
    for split, folder in _split_folders(root):
        items += read_coco(folder, root, split, categories, names, problems)
    if not names:
        raise DataError(f"data.path: {root} names no categories; fix: add the COCO "
                        "'categories' list (id and name of each class)")
    return DetectionSet(items=items, classes=names, problems=problems)


@data_sources.register("yolo", kind="detection", schema=DetectionFolderSourceConfig)
def load_yolo(source: DetectionFolderSourceConfig) -> DetectionSet:
    """A YOLO folder: ``images/``, ``labels/<stem>.txt`` and the class names (``classes.txt``,
    one per line, or ``data.classes``), or ``train/``, ``val/``, ``test/`` folders of that
    layout."""
    root = _folder(source.path)
    if source.classes:
        names = [str(c) for c in source.classes]
    else:
        found = [p for p in (root / "classes.txt", root / "train" / "classes.txt") if p.is_file()]
        if not found:
            raise ConfigError("data.classes", "no class names: the folder has no classes.txt",
                              given=None, fix="add classes.txt (one name per line, in class id "
                              "order) or data.classes=[cat,dog]")
        names = [ln.strip() for ln in found[0].read_text(encoding="utf-8").splitlines()
                 if ln.strip()]
    problems: list[str] = []
    items = []
    for split, folder in _split_folders(root):
        items += read_yolo(folder, root, split, names, problems)
    return DetectionSet(items=items, classes=names, problems=problems)


#: the generator's version: a change here writes the scenes again
SCENES_VERSION = 1


@data_sources.register("digit_scenes", kind="detection", schema=SceneSourceConfig)
def load_digit_scenes(source: SceneSourceConfig) -> DetectionSet:
    """The built-in detection set: scikit-learn's handwritten digits (real 8x8 scans, scaled
    up 2 to 5 times and tinted) placed on textured canvases, up to ``max_objects`` per image
    without overlap, with exact boxes; written once in COCO format under ``source.path`` and
    read back as a user's COCO folder is."""
    folder = Path(str(source.path)).expanduser()
    info = {"generator": "archselect digit_scenes", "version": SCENES_VERSION,
            "images": source.images, "canvas": source.canvas,
            "max_objects": source.max_objects, "seed": source.seed}
    done = folder / "annotations.json"
    fresh = True
    if done.is_file():
        try:
            fresh = json.loads(done.read_text()).get("info") != info
        except (OSError, json.JSONDecodeError):
            fresh = True
    if fresh:
        write_digit_scenes(folder, info)
    return load_coco(DetectionFolderSourceConfig(source="coco", name=source.name,
                                                 path=str(folder)))


def write_digit_scenes(folder: Path, info: dict[str, Any]) -> None:
    """Generate the digit scenes into ``folder`` (whole, or not at all)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(int(info["seed"]))
    size = int(info["canvas"])
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(int(info["images"])):
        # A textured canvas: a colour gradient, low-frequency blobs and pixel noise.
        base = rng.uniform(40, 200, 3)
        tilt = rng.uniform(-60, 60, (2, 3))
        canvas = base + xx[..., None] * tilt[0] + yy[..., None] * tilt[1]
        for _ in range(int(rng.integers(2, 6))):
            cx, cy = (float(v) for v in rng.uniform(0, 1, 2))
            r = float(rng.uniform(0.05, 0.3))
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            canvas += blob[..., None] * rng.uniform(-50, 50, 3)
        canvas += rng.normal(0, 8, canvas.shape)
        placed: list[list[float]] = []
        for _ in range(int(rng.integers(1, int(info["max_objects"]) + 1))):
            k = int(rng.integers(len(digits.images)))
            side = int(rng.integers(2 * 8, 5 * 8 + 1))
            glyph = np.asarray(Image.fromarray((digits.images[k] * 16).astype(np.uint8))
                               .resize((side, side), Image.Resampling.BILINEAR), float) / 255.0
            rows, cols = np.nonzero(glyph > 0.15)
            if not len(rows):
                continue
            for _try in range(20):
                x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
                box = [int(x0 + cols.min()), int(y0 + rows.min()), int(x0 + cols.max() + 1),
                       int(y0 + rows.max() + 1)]
                if all(_iou(box, other) < 0.05 for other in placed):
                    break
            else:
                continue
            ink = rng.uniform(0, 255, 3)
            if np.abs(ink - canvas[y0:y0 + side, x0:x0 + side].mean((0, 1))).mean() < 60:
                ink = 255 - ink  # keep the digit visible against its background
            alpha = glyph[..., None]
            region = canvas[y0:y0 + side, x0:x0 + side]
            canvas[y0:y0 + side, x0:x0 + side] = region * (1 - alpha) + ink * alpha
            placed.append([float(v) for v in box])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(digits.target[k]), "iscrowd": 0,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                "area": (box[2] - box[0]) * (box[3] - box[1])})
        name = f"{i:05d}.png"
        Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(tmp / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    doc = {"info": info, "images": images, "annotations": annotations,
           "categories": [{"id": d, "name": str(d)} for d in range(10)]}
    (tmp / "annotations.json").write_text(json.dumps(doc))
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(folder)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# -- the data kind ----------------------------------------------------------------------------------
class _Images(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(uint8 image [3, S, S], box rows [n, 5]) per image."""

    def __init__(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> None:
        self.images, self.boxes = images, boxes

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.boxes[i]


@datamodules.register("detection", schema=DetectionDataConfig)
class DetectionDataModule(BaseDataModule):
    """Images with boxes: letterboxed to ``data.image_size``; normalised with training-split
    statistics; torchvision v2 augmentation that moves the boxes with the pixels (scale jitter
    and shifts, colour, optional flips; strength searched) on training batches; a trial may
    train at a smaller size (``image_size``, e.g. capped without a GPU)."""

    target_kinds = ("boxes",)
    cfg: DetectionDataConfig

    def __init__(self, options: DetectionDataConfig, source: SourceConfig, *, seed: int,
                 cache_dir: str | Path, target_kind: str = "boxes") -> None:
        super().__init__(options, source, seed=seed, cache_dir=cache_dir, target_kind=target_kind)
        self.images: dict[str, torch.Tensor] = {}
        self.boxes: dict[str, list[torch.Tensor]] = {}
        self.files: dict[str, list[str]] = {}
        self.mean: list[float] = []
        self.std: list[float] = []
        self.max_boxes = 1
        self.augment = 0.0
        self.flip = False
        self.size = 0  # the trial's image size (0: the prepared size)

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        size = self.cfg.image_size
        if not 32 <= size <= 2048:
            raise ConfigError("data.image_size", "must lie in 32..2048 pixels", given=size)
        check_fractions(self.cfg.val_fraction, self.cfg.test_fraction)
        found: DetectionSet = self.load_frame()
        if found.problems and not self.cfg.skip_bad:
            more = (f" (and {len(found.problems) - 1} more problem(s))"
                    if len(found.problems) > 1 else "")
            raise DataError(f"data: {found.problems[0]}{more}; fix: correct the annotations, or "
                            "set data.skip_bad=true to leave those images out (they are counted "
                            "in the data profile)")
        items = found.items
        if not items:
            raise DataError("data: no usable image with annotations; fix: check data.path")
        n = self.cfg.max_samples
        if n is not None and n < len(items):
            keep = np.sort(np.random.default_rng(self.seed).choice(len(items), n, replace=False))
            items = [items[i] for i in keep]
        split = self._split(items)
        arrays, boxes, files = [], [], []
        for item in items:
            from PIL import Image

            with Image.open(item.path) as img:
                pixels, scale = letterbox(img, size)
            arrays.append(pixels)
            rows = np.concatenate([item.boxes * scale, item.labels[:, None]], 1)
            boxes.append(torch.as_tensor(rows, dtype=torch.float32).reshape(-1, 5))
            files.append(item.path.name)
        stacked = torch.as_tensor(np.stack(arrays))
        for s in SPLITS:
            idx = split[s]
            self.images[s] = stacked[idx]
            self.boxes[s] = [boxes[i] for i in idx]
            self.files[s] = [files[i] for i in idx]
        if not len(self.boxes["train"]) or not sum(len(b) for b in self.boxes["train"]):
            raise DataError("data: the training split holds no boxes; fix: add annotated images")
        self.max_boxes = max(1, max(len(b) for bs in self.boxes.values() for b in bs))
        train = self.images["train"].float() / 255.0
        self.mean = [round(float(v), 5) for v in train.mean(dim=(0, 2, 3))]
        self.std = [round(float(v) or 1.0, 5) for v in train.std(dim=(0, 2, 3))]
        names = found.classes
        all_boxes = torch.cat([b for bs in self.boxes.values() for b in bs] or
                              [torch.zeros(0, 5)])
        counts = np.bincount(all_boxes[:, 4].long().numpy(), minlength=len(names))
        sides = ((all_boxes[:, 2] - all_boxes[:, 0]) * (all_boxes[:, 3] - all_boxes[:, 1])
                 ).clamp_min(0).sqrt().numpy()
        per_image = [len(b) for bs in self.boxes.values() for b in bs]
        profile = {
            "source": self.cfg.name, "samples": len(items),
            "splits": {s: len(self.boxes[s]) for s in SPLITS},
            "split_from_folders": any(it.split for it in items),
            "image_size": size, "classes": len(names),
            "boxes": {"total": len(all_boxes), "per_image_mean": round(float(np.mean(
                per_image)), 2), "per_image_max": int(max(per_image)),
                "images_without_boxes": int(sum(1 for k in per_image if k == 0)),
                "side_px": {f"p{q}": round(float(np.percentile(sides, q)), 1)
                            for q in (5, 50, 95)} if len(sides) else {}},
            "boxes_per_class": {n_: int(c) for n_, c in zip(names, counts, strict=True)},
            "skipped": found.problems[:20], "skipped_count": len(found.problems),
            "mean": self.mean, "std": self.std,
        }
        self.spec = DataSpec(
            kind="detection", num_classes=len(names), class_names=list(names),
            input_shape=[3, size, size], max_boxes=self.max_boxes,
            data_hash=stable_hash(stable_hash(stacked.numpy().tobytes()),
                                  [b.tolist() for b in boxes], names,
                                  {k: v.tolist() for k, v in split.items()}),
            profile=profile)
        return self.spec

    def _split(self, items: list[Annotated]) -> dict[str, np.ndarray]:
        """The folders' split where they gave one (a split they lack is carved, seeded, from
        train), else a seeded random split by ``val_fraction`` and ``test_fraction``."""
        rng = np.random.default_rng(self.seed)
        given = np.array([it.split or "" for it in items])
        if (given != "").any():
            out = {s: np.flatnonzero(given == s) for s in SPLITS}
            for s, frac in (("test", self.cfg.test_fraction), ("val", self.cfg.val_fraction)):
                if not len(out[s]):
                    train = rng.permutation(out["train"])
                    k = max(1, round(len(given) * frac))
                    out[s], out["train"] = np.sort(train[:k]), np.sort(train[k:])
            return out
        order = rng.permutation(len(items))
        n_test = max(1, round(len(items) * self.cfg.test_fraction))
        n_val = max(1, round(len(items) * self.cfg.val_fraction))
        if len(items) - n_test - n_val < 1:
            raise DataError(f"data: {len(items)} image(s) are too few to split into train, val "
                            "and test; fix: add images")
        return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
                "train": np.sort(order[n_test + n_val:])}

    def for_trial(self, option: str | None, *, batch_size: int, num_workers: int,
                  **data_opts: Any) -> DataSpec:
        allowed = {"augment", "flip", "image_size"}
        unknown = sorted(set(data_opts) - allowed)
        if unknown:
            raise ConfigError("arch.<name>.data", "unknown detection data setting", given=unknown,
                              allowed=sorted(allowed))
        spec = self.prepare()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.augment = float(data_opts.get("augment", 0.0))
        if not 0.0 <= self.augment <= 0.5:
            raise ConfigError("arch.<name>.data.augment", "must be between 0 (off) and 0.5",
                              given=self.augment)
        self.flip = bool(data_opts.get("flip", False))
        prepared = spec.input_shape[-1]
        self.size = min(int(data_opts.get("image_size") or prepared), prepared)
        return replace(spec, input_shape=[3, self.size, self.size])

    def targets(self, split: str) -> torch.Tensor:
        self.prepare()
        return pad_boxes(self._scaled(self.boxes[split]), self.max_boxes)

    def _scaled(self, boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Box rows at the trial's image size."""
        prepared = self.prepare().input_shape[-1]
        if not self.size or self.size == prepared:
            return boxes
        f = self.size / prepared
        return [torch.cat([b[:, :4] * f, b[:, 4:]], 1) for b in boxes]

    def profile_lines(self) -> list[tuple[str, str]]:
        prof = self.prepare().profile
        b = prof["boxes"]
        side = b.get("side_px", {})
        lines = [
            ("source", str(prof["source"])),
            ("images", f"{prof['samples']} ({splits_text(prof['splits'])}"
             f"{', split by its folders' if prof['split_from_folders'] else ''}), letterboxed to "
             f"{prof['image_size']}x{prof['image_size']}; train mean {prof['mean']}"),
            ("boxes", f"{b['total']}: {b['per_image_mean']} per image (max {b['per_image_max']}), "
             f"{b['images_without_boxes']} image(s) without boxes; sides p5 {side.get('p5')}, "
             f"p50 {side.get('p50')}, p95 {side.get('p95')} px"),
            ("classes", f"{prof['classes']}: " + ", ".join(
                f"{k} {v}" for k, v in prof["boxes_per_class"].items())),
        ]
        if prof["skipped_count"]:
            lines.append(("skipped", f"{prof['skipped_count']} image(s) (data.skip_bad), e.g. "
                          + "; ".join(prof["skipped"][:3])))
        return lines

    def serving_bundle(self, checkpoint: str, folder: Path) -> ServingBundle:
        from mlflow.types.schema import AnyType, ColSpec, Schema

        spec = self.prepare()
        codec = DetectionCodec(class_names=spec.class_names, size=self.size or
                               spec.input_shape[-1], mean=self.mean, std=self.std)
        example = pd.DataFrame({IMAGE_COLUMN: [self.images["test"][i].permute(1, 2, 0).numpy()
                                               .astype(np.uint8).tolist()
                                               for i in range(min(2, len(self.images["test"])))]})
        output = pd.DataFrame({"image_index": [0], "label": [spec.class_names[0]],
                               "score": [0.9], "x_min": [1.0], "y_min": [1.0], "x_max": [9.0],
                               "y_max": [9.0]})
        return ServingBundle(codec=codec, artifacts={}, input_example=example,
                             output_example=output,
                             input_schema=Schema([ColSpec(AnyType(), IMAGE_COLUMN)]))

    def extra_figures(self, preds: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """A grid of test images with their true boxes (dashed) and the detections (solid,
        with scores), one colour per class."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        names = self.prepare().class_names
        colours = plt.get_cmap("tab20")
        n = min(12, len(preds))
        if not n:
            return {}
        cols = 4
        rows = (n + cols - 1) // cols
        size = self.size or self.prepare().input_shape[-1]
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.0, rows * 3.1), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        images = self.images["test"]
        for i, ax in zip(range(n), axes.flat, strict=False):
            img = images[i]
            if img.shape[-1] != size:
                img = torch.nn.functional.interpolate(img[None].float(), size=(size, size),
                                                      mode="bilinear", antialias=True)[0]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 255).numpy().astype(np.uint8))
            for x0, y0, x1, y1, c in targets[i].tolist():
                if c >= 0:
                    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2,
                                           ls="--", ec=colours(int(c) % 20)))
            for x0, y0, x1, y1, score, c in preds[i].tolist():
                if c >= 0 and score >= 0.3:
                    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.6,
                                           ec=colours(int(c) % 20)))
                    ax.text(x0, y0, f"{names[int(c)]} {score:.2f}", fontsize=6, va="bottom",
                            color="white", bbox={"facecolor": colours(int(c) % 20), "pad": 0.5,
                                                 "lw": 0})
            ax.set_title(self.files["test"][i], fontsize=7)
        fig.suptitle("Test images: true boxes dashed, detections (score >= 0.3) solid")
        fig.tight_layout()
        return {"plots/detections.png": fig}

    def split_dataset(self, split: str) -> Dataset[Any]:
        self.prepare()
        return _Images(self.images[split], self.boxes[split])

    def collate(self, train: bool) -> Any:
        augment = self._augmenter() if train and (self.augment > 0 or self.flip) else None
        prepared = self.prepare().input_shape[-1]
        return _Collate(self.mean, self.std, augment, self.max_boxes, self.size or prepared,
                        prepared)

    def _augmenter(self) -> Any:
        from torchvision.transforms import v2

        s = self.augment
        steps: list[Any] = []
        if self.flip:
            steps.append(v2.RandomHorizontalFlip())
        if s > 0:
            steps += [v2.RandomAffine(degrees=0.0, translate=(s / 2, s / 2),
                                      scale=(1 - s, 1 + s), fill=114),
                      v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(s / 2, 0.5))]
        steps.append(v2.SanitizeBoundingBoxes(min_size=2.0))
        return v2.Compose(steps)


class _Collate:
    """uint8 images and their box rows -> (augmented) normalised float batches at the trial's
    size, the boxes moved with the pixels and padded to ``width`` rows."""

    def __init__(self, mean: list[float], std: list[float], augment: Any, width: int,
                 size: int, prepared: int) -> None:
        self.mean = torch.tensor(mean)[None, :, None, None]
        self.std = torch.tensor(std)[None, :, None, None]
        self.augment = augment
        self.width, self.size, self.prepared = width, size, prepared

    def __call__(self, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        images, boxes = [], []
        for img, box in rows:
            if self.augment is not None:
                img, box = self._augmented(img, box)
            images.append(img)
            boxes.append(box)
        x = torch.stack(images).float() / 255.0
        if self.size != self.prepared:
            f = self.size / self.prepared
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                                antialias=True)
            boxes = [torch.cat([b[:, :4] * f, b[:, 4:]], 1) for b in boxes]
        x = (x - self.mean) / self.std
        return {"inputs": {"x": x}, "target": pad_boxes(boxes, self.width)}

    def _augmented(self, img: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        boxes = tv_tensors.BoundingBoxes(box[:, :4], format="XYXY",
                                         canvas_size=(self.prepared, self.prepared))
        out = self.augment({"image": tv_tensors.Image(img), "boxes": boxes,
                            "labels": box[:, 4]})
        kept = torch.cat([out["boxes"].as_subclass(torch.Tensor).float(),
                          out["labels"].float()[:, None]], 1)
        return out["image"].as_subclass(torch.Tensor), kept.reshape(-1, 5)


class DetectionCodec(Codec):
    """The served detector's side: a column of uint8 images (H x W or H x W x C arrays, any
    size) in, letterboxed and normalised as in training; one row per detection out
    (``image_index``, ``label``, ``score`` and the box in the input image's pixels)."""

    def __init__(self, *, class_names: list[str], size: int, mean: list[float],
                 std: list[float]) -> None:
        self.class_names = class_names
        self.size = size
        self.mean = mean
        self.std = std

    def _tensor(self, image: Any) -> tuple[torch.Tensor, float, tuple[int, int]]:
        from PIL import Image

        arr = np.asarray(image, dtype=np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        img = Image.fromarray(arr)
        pixels, scale = letterbox(img, self.size)
        t = torch.as_tensor(pixels).float() / 255.0
        mean = torch.tensor(self.mean)[:, None, None]
        std = torch.tensor(self.std)[:, None, None]
        return (t - mean) / std, scale, (img.size[0], img.size[1])

    def encode(self, frame: pd.DataFrame) -> tuple[list[Batch], Any]:
        column = IMAGE_COLUMN if IMAGE_COLUMN in frame.columns else frame.columns[0]
        done = [self._tensor(img) for img in frame[column].tolist()]
        batches = [{"x": torch.stack([d[0] for d in done[i : i + 16]])}
                   for i in range(0, len(done), 16)]
        return batches, [(d[1], d[2]) for d in done]

    def decode(self, outputs: torch.Tensor, keys: Any, params: dict[str, Any] | None
               ) -> pd.DataFrame:
        rows = []
        for i, (scale, (w, h)) in enumerate(keys or []):
            for x0, y0, x1, y1, score, c in outputs[i].tolist():
                if c < 0:
                    continue
                rows.append((i, self.class_names[int(c)], round(float(score), 5),
                             round(min(max(x0 / scale, 0.0), w), 2),
                             round(min(max(y0 / scale, 0.0), h), 2),
                             round(min(max(x1 / scale, 0.0), w), 2),
                             round(min(max(y1 / scale, 0.0), h), 2)))
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS).astype(
            {"image_index": "int64", "label": "object", "score": "float64"})
