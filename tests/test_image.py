"""The image row: loaders (bundled and folder, with a corrupt file) and a short study."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from helpers import datamodule
from PIL import Image

from archselect.config.errors import ConfigError, DataError
from archselect.data.sources import FASHION_DIR
from archselect.run import run


def folder_cfg(path: Path, **extra: object) -> dict[str, object]:
    return {"source": "image_folder", "name": "image_folder", "path": str(path), "image_size": 12,
            "channels": 3, "max_samples": None, "val_fraction": 0.2, "test_fraction": 0.2, **extra}


def write_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / label).mkdir(parents=True)
        for i in range(15):
            size = (10 + i % 7, 14 + i % 5)  # any size: resized by config
            arr = np.clip(np.array(colour) + rng.integers(-20, 20, (*size, 3)), 0, 255)
            Image.fromarray(arr.astype(np.uint8)).save(root / label / f"{i}.png")
    (root / "red" / "broken.png").write_bytes(b"not a png at all")
    return root


def test_folder_loader_resizes_and_reports_unreadable_files(tmp_path: Path) -> None:
    dm = datamodule("image", folder_cfg(write_folder(tmp_path / "imgs")), tmp_path)
    spec = dm.prepare()
    assert spec.input_shape == [3, 12, 12] and spec.class_names == ["blue", "red"]
    assert spec.profile["unreadable_count"] == 1
    assert spec.profile["unreadable"][0].endswith("broken.png")
    assert any(label == "unreadable" for label, _ in dm.profile_lines())
    dm.for_trial(None, batch_size=8, num_workers=0, augment=0.2)
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"]["x"].shape == (8, 3, 12, 12)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.path: folder not found"):
        datamodule("image", folder_cfg(tmp_path / "nope"), tmp_path).prepare()
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no readable images"):
        datamodule("image", folder_cfg(tmp_path / "empty"), tmp_path).prepare()


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_reads_the_debian_idx_files(tmp_path: Path) -> None:
    cfg = {"source": "fashion_mnist", "name": "fashion_mnist", "max_samples": 2000,
           "val_fraction": 0.1, "test_fraction": 0.1}
    spec = datamodule("image", cfg, tmp_path).prepare()
    assert spec.input_shape == [1, 28, 28] and spec.num_classes == 10
    assert "ankle boot" in spec.class_names


@pytest.mark.study
def test_image_study_on_digits_trains_cnn_and_serves_raw_arrays(make_cfg, tmp_path: Path) -> None:
    result = run(make_cfg("task=image_classification", "data.max_samples=600",
                          "selector.candidates=[mlp,cnn,resnet,efficientnet]", "search.n_trials=4",
                          "search.max_epochs=3"))
    archs = [r.arch for r in result.outcome.records]
    assert archs == ["mlp", "cnn", "resnet", "efficientnet"]
    assert result.test_metrics["accuracy"] > 0.5
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/archselect-image_classification/1")
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = [(digits.images[i] * 16).clip(0, 255).astype(np.uint8) for i in range(5)]
    out = model.predict(pd.DataFrame({"image": raw}))
    assert len(out) == 5 and set(out["label"]) <= {str(i) for i in range(10)}
    from mlflow.tracking import MlflowClient

    assert result.parent_run_id
    plots = {a.path for a in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(
        result.parent_run_id, "plots")}
    assert "plots/confusion_matrix.png" in plots
