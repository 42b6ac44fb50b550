"""The image generation row: the distance and its order (real < a trained model < the per-pixel
Gaussian < noise), seeded generators, the served codec, and a short real study on an image folder
written here whose registered model draws images through ``mlflow models predict``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import compose_cfg, config_datamodule, mlflow_models_predict, one_error_line

DIGITS = ["task=image_generation", "data=digits"]


def digits_dm(tmp_path: Path, *overrides: str) -> Any:
    cfg = compose_cfg([*DIGITS, *overrides], tmp_path)
    dm = config_datamodule(cfg, tmp_path / "cache")
    return dm, dm.for_trial(None, batch_size=64, num_workers=0)


def test_the_distance_orders_real_a_trained_model_the_gaussian_and_noise(tmp_path: Path) -> None:
    """The metric must order what it judges: held-back real images, a VAE trained for a few
    hundred steps, per-pixel Gaussian samples, uniform noise."""
    from archselect.architectures import build
    from archselect.data.generation import distances

    dm, spec = digits_dm(tmp_path)
    test, path = dm.images["test"], str(spec.profile["feature_net"])
    torch.manual_seed(0)
    vae: Any = build("vae", spec, latent_dim=16, width=32, kl_weight=1.0)
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    train = dm.images["train"].float() / 127.5 - 1.0
    for _step in range(500):
        rows = torch.randint(0, len(train), (64,))
        loss = vae.loss(train[rows], None)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        drawn = vae(torch.arange(len(test))) * 255.0
    pixels = dm.images["train"].float()
    gaussian = (pixels.mean(0) + pixels.std(0) * torch.randn((len(test), *pixels.shape[1:]),
                generator=torch.Generator().manual_seed(1))).round().clamp(0, 255)
    noise = torch.randint(0, 256, tuple(test.shape), generator=torch.Generator().manual_seed(2))
    fid = {name: distances(images, test, path)["fid"] for name, images in
           (("real", dm.images["val"]), ("vae", drawn), ("gaussian", gaussian), ("noise", noise))}
    assert fid["real"] < fid["vae"] < fid["gaussian"] < fid["noise"], fid


def test_the_same_seed_draws_the_same_image_and_classes_go_in(tmp_path: Path) -> None:
    from archselect.architectures import build

    _dm, spec = digits_dm(tmp_path, "task.conditional=true")
    assert spec.kind == "image_generation" and spec.profile["conditional"]
    for name, kwargs in (("vae", {"latent_dim": 8, "width": 16, "kl_weight": 1.0}),
                         ("dcgan", {"latent_dim": 8, "width": 16, "spectral_norm": True}),
                         ("ddpm", {"width": 16, "layers_per_block": 1, "train_steps": 100,
                                   "sample_steps": 4})):
        model: Any = build(name, spec, **kwargs).eval()
        seeds = torch.tensor([3, 4, 3])
        with torch.no_grad():
            a = model(seeds, torch.tensor([1, 1, 1]))
            b = model(seeds, torch.tensor([2, 2, 2]))
        assert a.shape == (3, 1, 8, 8) and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
        assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1]), name
        assert not torch.equal(a[0], b[0]), name  # the class changes the image


def test_the_codec_reads_whole_numbers_however_they_come_and_says_what_is_wrong() -> None:
    from archselect.data.generation import GenerationCodec

    codec = GenerationCodec(class_names=["cat", "dog"], shape=[1, 4, 4], conditional=True)
    _batches, keys = codec.encode(pd.DataFrame({"n": [2.0, 1], "seed": [5, np.nan],
                                               "label": ["dog", None]}))
    request, seeds, labels = keys
    assert request == [0, 0, 1] and seeds == [5, 6, 1000] and labels == [1, 1, 0]
    out = codec.decode(torch.full((3, 1, 4, 4), 0.5), keys, None)
    assert list(out.columns) == ["request", "seed", "label", "image"]
    assert np.asarray(out["image"][0]).shape == (4, 4) and out["image"][0][0][0] == 128
    for frame, message in ((pd.DataFrame({"n": [1.5]}), "whole number"),
                           (pd.DataFrame({"count": [1]}), "no 'n' column"),
                           (pd.DataFrame({"n": [1], "label": ["bird"]}), "unknown label"),
                           (pd.DataFrame({"n": [5000]}), "n must be 0 to")):
        with pytest.raises(ValueError, match=message):
            codec.encode(frame)


def test_conditional_is_for_the_generation_row_only(tmp_path: Path) -> None:
    from helpers import archselect

    proc = archselect("task=text_classification", "task.conditional=true", f"runs_dir={tmp_path}",
                      cwd=tmp_path)
    line = one_error_line(proc)
    assert "task.conditional" in line and "image_generation" in line


def write_folder(root: Path, n: int = 40) -> Path:
    """Two classes of 12x12 colour images: a bright square, or a bright ring, on noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:12, :12]
    for cls in ("square", "ring"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 60, (12, 12, 3)).astype(np.uint8)
            cy, cx = rng.integers(4, 8, 2)
            if cls == "square":
                mask = (abs(yy - cy) <= 2) & (abs(xx - cx) <= 2)
            else:
                mask = abs(np.hypot(yy - cy, xx - cx) - 3) < 0.8
            img[mask] = rng.integers(180, 255, 3)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return root


@pytest.mark.study
def test_an_image_folder_study_serves_images_of_a_class(tmp_path: Path) -> None:
    from archselect.run import run

    folder = write_folder(tmp_path / "shapes")
    cfg = compose_cfg([*DIGITS[:1], "data=image_folder", f"data.path={folder}",
                       "data.image_size=12", "task.conditional=true",
                       "selector.candidates=[vae,dcgan]", "search.n_trials=2",
                       "search.max_epochs=2"], tmp_path / "runs")
    result = run(cfg)
    assert set(result.test_metrics) == {"fid", "kid"}
    assert result.baseline_name == "uniform noise"
    store, uri = str(cfg.tracking.uri), "models:/archselect-image_generation@champion"
    request = tmp_path / "in.json"
    request.write_text(json.dumps({"dataframe_split": {
        "columns": ["n", "seed", "label"], "data": [[2, 7, "ring"], [1, None, "square"]]}}))
    answer = mlflow_models_predict(store, uri, request)
    assert answer["request"].tolist() == [0, 0, 1]
    assert answer["label"].tolist() == ["ring", "ring", "square"]
    images = [np.asarray(img) for img in answer["image"]]
    assert all(img.shape == (12, 12, 3) and img.min() >= 0 and img.max() <= 255 for img in images)
    # the run holds a grid of samples per epoch on each trial, and the final panels
    import mlflow

    client = mlflow.MlflowClient(store)
    parent = client.get_run(result.parent_run_id)
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/samples.png", "plots/nearest_training.png"} <= names
    trial_runs = client.search_runs([parent.info.experiment_id],
                                    f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert any(client.list_artifacts(r.info.run_id, "images") for r in trial_runs)


def test_without_a_gpu_the_diffusion_model_is_left_to_small_images(tmp_path: Path) -> None:
    from dataclasses import replace

    from helpers import select_for

    cfg = compose_cfg(DIGITS, tmp_path, cheap=False)  # the default budget's epochs
    _dm, spec = digits_dm(tmp_path)
    small = select_for(cfg, spec)
    assert [c.name for c in small.candidates] == ["vae", "dcgan", "ddpm"]
    assert next(c for c in small.candidates if c.name == "ddpm").max_epochs == 12
    large = select_for(cfg, replace(spec, input_shape=[1, 28, 28]))
    assert [c.name for c in large.candidates] == ["vae", "dcgan"]
    assert "28x28 images (784 pixels > 256" in large.dropped["ddpm"]
