"""The object detection row: COCO and YOLO folders written here (with their bad annotations),
boxes that move with the pixels, a short real study whose registered model answers through
``mlflow models predict``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import compose_cfg, config_datamodule, mlflow_models_predict

from archselect.config.errors import ConfigError, DataError
from archselect.tasks.detection import mean_average_precision, pad_detections

CLASSES = ["square", "disc"]


def draw(path: Path, boxes: list[tuple[int, int, int, int, int]], size: tuple[int, int],
         seed: int) -> None:
    """An image of ``size`` (w, h): noise, a filled square or disc per box (class 0 / 1)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(60, 120, (size[1], size[0], 3), dtype=np.uint8))
    pen = ImageDraw.Draw(img)
    for x0, y0, x1, y1, c in boxes:
        colour = (230, 40, 40) if c == 0 else (40, 40, 230)
        (pen.rectangle if c == 0 else pen.ellipse)([x0, y0, x1 - 1, y1 - 1], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def scenes(n: int, seed: int, size: tuple[int, int] = (96, 80)
           ) -> list[tuple[str, list[tuple[int, int, int, int, int]]]]:
    """``n`` images' names and boxes: one to three non-overlapping shapes each."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        boxes: list[tuple[int, int, int, int, int]] = []
        for k in range(int(rng.integers(1, 4))):
            side = int(rng.integers(14, 26))
            x0 = int(rng.integers(0, size[0] - side)) if k == 0 else (boxes[-1][2] + 2)
            if x0 + side > size[0]:
                break
            y0 = int(rng.integers(0, size[1] - side))
            boxes.append((x0, y0, x0 + side, y0 + side, int(rng.integers(0, 2))))
        out.append((f"img{i:03d}.png", boxes))
    return out


def write_coco(folder: Path, n: int = 24, seed: int = 0, size: tuple[int, int] = (96, 80),
               edit: Any = None) -> Path:
    """A COCO folder (category ids 7 and 9, so ids are not class indices)."""
    images, annotations = [], []
    for i, (name, boxes) in enumerate(scenes(n, seed, size)):
        draw(folder / "images" / name, boxes, size, seed + i)
        images.append({"id": 100 + i, "file_name": name, "width": size[0], "height": size[1]})
        for x0, y0, x1, y1, c in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i,
                                "category_id": (7, 9)[c], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "iscrowd": 0})
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": 7, "name": "square"}, {"id": 9, "name": "disc"}]}
    if edit is not None:
        edit(doc)
    (folder / "annotations.json").write_text(json.dumps(doc))
    return folder


def write_yolo(folder: Path, n: int = 24, seed: int = 0, size: tuple[int, int] = (96, 80),
               classes_file: bool = True) -> Path:
    for i, (name, boxes) in enumerate(scenes(n, seed, size)):
        draw(folder / "images" / name, boxes, size, seed + i)
        lines = [f"{c} {(x0 + x1) / 2 / size[0]:.6f} {(y0 + y1) / 2 / size[1]:.6f} "
                 f"{(x1 - x0) / size[0]:.6f} {(y1 - y0) / size[1]:.6f}"
                 for x0, y0, x1, y1, c in boxes]
        if i % 6 == 5:
            continue  # no labels file: an image without boxes (a valid negative)
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        (folder / "labels" / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")
    if classes_file:
        (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return folder


def dm_for(tmp_path: Path, *overrides: str) -> Any:
    cfg = compose_cfg(["task=object_detection", *overrides], tmp_path)
    return config_datamodule(cfg, tmp_path / "cache")


def test_coco_folder_letterboxed_with_boxes_scaled(tmp_path: Path) -> None:
    folder = write_coco(tmp_path / "coco")
    dm = dm_for(tmp_path, "data=coco", f"data.path={folder}", "data.image_size=48")
    spec = dm.prepare()
    assert spec.class_names == ["square", "disc"] and spec.input_shape == [3, 48, 48]
    assert sum(spec.profile["splits"].values()) == 24
    # 96x80 -> 48x40 (scale 0.5), padded below: every box halves.
    doc = json.loads((folder / "annotations.json").read_text())
    first = dm.files["train"][0]
    image_id = next(im["id"] for im in doc["images"] if im["file_name"] == first)
    expected = sorted([a["bbox"][0] / 2, a["bbox"][1] / 2, (a["bbox"][0] + a["bbox"][2]) / 2,
                       (a["bbox"][1] + a["bbox"][3]) / 2, (7, 9).index(a["category_id"])]
                      for a in doc["annotations"] if a["image_id"] == image_id)
    assert np.allclose(sorted(dm.boxes["train"][0].tolist()), expected)
    assert dm.images["train"][0][:, 40:, :].float().mean() == pytest.approx(114.0)  # the padding


def test_yolo_folder_with_negatives_and_a_kept_split(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    write_yolo(root / "train", n=18, seed=1)
    write_yolo(root / "val", n=6, seed=2, classes_file=False)
    (root / "classes.txt").write_text("square\ndisc\n")
    (root / "train" / "classes.txt").unlink()
    dm = dm_for(tmp_path, "data=yolo", f"data.path={root}", "data.image_size=64")
    spec = dm.prepare()
    assert spec.profile["split_from_folders"]
    assert spec.profile["splits"]["val"] == 6  # kept; test carved from train
    assert spec.profile["splits"]["train"] + spec.profile["splits"]["test"] == 18
    assert spec.profile["boxes"]["images_without_boxes"] >= 3
    # the same images through data.classes instead of classes.txt
    (root / "classes.txt").unlink()
    with pytest.raises(ConfigError, match=r"data.classes: no class names"):
        dm_for(tmp_path, "data=yolo", f"data.path={root}").prepare()
    again = dm_for(tmp_path, "data=yolo", f"data.path={root}", "data.classes=[square,disc]")
    assert again.prepare().class_names == CLASSES


def _inverted(doc: dict[str, Any]) -> None:
    doc["annotations"][0]["bbox"][2] = -5


def _outside(doc: dict[str, Any]) -> None:
    doc["annotations"][1]["bbox"] = [90, 10, 30, 20]


def _unknown(doc: dict[str, Any]) -> None:
    doc["annotations"][2]["category_id"] = 3


def _missing(doc: dict[str, Any]) -> None:
    doc["images"][3]["file_name"] = "gone.png"


@pytest.mark.parametrize(("edit", "line"), [
    (_inverted, r"data: images/img\d+\.png: box \[.*\] is inverted"),
    (_outside, r"data: images/img\d+\.png: box \[90.0, 10.0, 120.0, 30.0\] lies outside the image "
               r"\(96x80\)"),
    (_unknown, r"data: images/img\d+\.png: category id\(s\) \[3\] are not in the categories"),
    (_missing, r"data: images/gone\.png: image file not found"),
])
def test_bad_annotations_name_the_file_in_one_line_or_are_skipped(
        tmp_path: Path, edit: Any, line: str) -> None:
    folder = write_coco(tmp_path / "coco", edit=edit)
    with pytest.raises(DataError, match=line) as info:
        dm_for(tmp_path, "data=coco", f"data.path={folder}").prepare()
    assert "\n" not in str(info.value) and "data.skip_bad=true" in str(info.value)
    spec = dm_for(tmp_path, "data=coco", f"data.path={folder}", "data.skip_bad=true").prepare()
    assert spec.profile["skipped_count"] == 1
    assert sum(spec.profile["splits"].values()) == 23


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    folder = write_yolo(tmp_path / "yolo")
    (folder / "images" / "img004.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"data: images/img004\.png: unreadable image"):
        dm_for(tmp_path, "data=yolo", f"data.path={folder}").prepare()


def test_augmentation_moves_the_boxes_with_the_pixels(tmp_path: Path) -> None:
    folder = write_coco(tmp_path / "coco", n=12)
    dm = dm_for(tmp_path, "data=coco", f"data.path={folder}", "data.image_size=96")
    dm.prepare()
    dm.for_trial(None, batch_size=4, num_workers=0, augment=0.0, flip=True)
    collate = dm.collate(train=True)
    torch.manual_seed(3)
    image, box = dm.split_dataset("train")[0]
    flipped = [collate([(image, box)]) for _ in range(12)]
    plain = dm.collate(train=False)([(image, box)])
    seen = {tuple(b["target"][0, : len(box)].round().tolist()[0]) for b in flipped}
    x0, y0, x1, y1, c = plain["target"][0, 0].tolist()
    mirrored = (round(96 - x1), round(y0), round(96 - x0), round(y1), round(c))
    assert tuple(round(v) for v in (x0, y0, x1, y1, c)) in seen and mirrored in seen
    # the pixels inside a mirrored box are the original box's pixels, mirrored
    for b in flipped:
        if tuple(b["target"][0, 0].round().tolist()) == mirrored:
            assert torch.allclose(b["inputs"]["x"][0].flip(-1), plain["inputs"]["x"][0])
            break


def test_map_orders_perfect_partial_and_empty_detections() -> None:
    boxes = torch.tensor([[[10.0, 10, 30, 30, 0], [50, 50, 70, 80, 1]]])
    perfect = pad_detections([(boxes[0, :, :4], torch.tensor([0.9, 0.8]), boxes[0, :, 4])])
    shifted = perfect.clone()
    shifted[0, 0, :4] += 8.0
    none = pad_detections([(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0))])
    values = [float(mean_average_precision(p, boxes)["map"]) for p in (perfect, shifted, none)]
    assert values[0] == pytest.approx(1.0) and 0.0 < values[1] < values[0] and values[2] <= 0.0


@pytest.mark.study
def test_detection_study_registers_a_model_that_answers_mlflow_models_predict(
        tmp_path: Path) -> None:
    from archselect.run import run

    folder = write_coco(tmp_path / "coco", n=80, seed=5, size=(96, 96))
    cfg = compose_cfg(["task=object_detection", "data=coco", f"data.path={folder}",
                       "data.image_size=64", "selector.candidates=[yolo_style]",
                       "search.n_trials=1", "search.max_epochs=25", "search.patience=25",
                       "search.refit=false",
                       "arch.yolo_style.model.score_threshold=0.01", "export.onnx=true"],
                      tmp_path / "runs")
    result = run(cfg)
    assert set(result.test_metrics) >= {"map", "map_50", "map_75"}
    assert result.onnx_uri is None  # refused in one line (data-dependent shapes), not attempted
    assert result.baseline_name == "no detections" and result.baseline_metrics["map"] == 0.0
    store, uri = str(cfg.tracking.uri), "models:/archselect-object_detection@champion"
    from PIL import Image

    files = sorted((folder / "images").glob("*.png"))[:3]
    images = [np.asarray(Image.open(p)) for p in files]
    frame = pd.DataFrame({"image": [im.tolist() for im in images]})
    request = tmp_path / "in.json"
    request.write_text(json.dumps({"dataframe_split": frame.to_dict(orient="split")}))
    answer = mlflow_models_predict(store, uri, request)
    assert list(answer.columns) == ["image_index", "label", "score", "x_min", "y_min", "x_max",
                                    "y_max"]
    assert set(answer["image_index"]) <= {0, 1, 2} and set(answer["label"]) <= set(CLASSES)
    # boxes in the input image's pixels (96x96, letterboxed to 64 for the model)
    assert answer[["x_min", "x_max", "y_min", "y_max"]].to_numpy().max() <= 96.0
    assert (answer["x_max"] >= answer["x_min"]).all() and (answer["score"] > 0).all()


def test_without_a_gpu_only_light_detectors_and_smaller_images(make_cfg) -> None:
    from helpers import select_for

    from archselect.data.base import DataSpec
    from archselect.hardware import HardwareProfile

    cpu = HardwareProfile(cpu_cores=2, torch_threads=2, memory_gb=8.0)
    gpu = HardwareProfile(cpu_cores=8, torch_threads=8, memory_gb=64.0,
                          gpus=[{"name": "X", "memory_gb": 24.0, "bf16": True}],
                          accelerator="gpu", precision="bf16-mixed")
    spec = DataSpec(kind="detection", num_classes=2, class_names=CLASSES,
                    input_shape=[3, 320, 320], max_boxes=3,
                    profile={"splits": {"train": 700, "val": 150, "test": 150}})
    cfg = make_cfg("task=object_detection")
    on_cpu = select_for(cfg, spec, cpu)
    assert [c.name for c in on_cpu.candidates] == ["yolo_style", "ssdlite"]
    assert set(on_cpu.dropped) == {"fcos", "retinanet", "faster_rcnn"}
    assert all(c.data["image_size"] == 256 for c in on_cpu.candidates)
    assert any("trained on 256x256 images instead of 320x320" in r
               for r in on_cpu.candidates[0].reasons)
    assert on_cpu.folds == 1  # detection is not cross-validated
    on_gpu = select_for(cfg, spec, gpu)
    assert [c.name for c in on_gpu.candidates] == ["yolo_style", "ssdlite", "fcos", "retinanet",
                                                   "faster_rcnn"]
    assert "image_size" not in on_gpu.candidates[0].data
