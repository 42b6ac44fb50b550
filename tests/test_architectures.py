"""Registry-driven: every registered architecture builds from its YAML defaults, for every
input and target kind it claims, and gives the right output shape. A new architecture is
covered as soon as it is registered and configured."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from archselect.architectures import architectures, build, check_hparams
from archselect.data.base import DataSpec


def tokens(spec: DataSpec) -> dict[str, torch.Tensor]:
    ids = torch.randint(2, 400, (4, 24))
    mask = torch.ones(4, 24, dtype=torch.bool)
    mask[1, 10:] = False
    ids[1, 10:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def features(spec: DataSpec) -> dict[str, torch.Tensor]:
    if spec.input_shape:  # images reach the MLP as [B, C, H, W], series as [B, T, C]
        return {"x": torch.randn(4, *spec.input_shape)}
    return {"x": torch.randn(4, spec.n_features)}


def series(spec: DataSpec) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(4, *spec.input_shape)}


SERIES_SPECS = [DataSpec(kind="series", n_features=24, input_shape=[24, 1], horizon=6),
                DataSpec(kind="series", n_features=30, input_shape=[10, 3], horizon=1),
                DataSpec(kind="sequences", num_classes=4, class_names=list("abcd"),
                         n_features=600, input_shape=[100, 6])]


def outputs(spec: DataSpec) -> int:
    return spec.num_classes or spec.horizon or 1


def images(spec: DataSpec) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(4, *spec.input_shape)}


IMAGE_SPECS = [DataSpec(kind="image", num_classes=10, class_names=[str(i) for i in range(10)],
                        n_features=c * h * w, input_shape=[c, h, w])
               for c, h, w in ((1, 8, 8), (1, 28, 28), (3, 32, 32))]


# input kind -> (specs it claims, a batch of 4 for a spec)
INPUTS: dict[str, tuple[list[DataSpec], Any]] = {
    "tokens": ([DataSpec(kind="text", num_classes=3, class_names=["a", "b", "c"],
                         vocab_size=500, pad_id=0, max_len=24)], tokens),
    "pretrained": ([DataSpec(kind="text", num_classes=3, class_names=["a", "b", "c"])], tokens),
    "features": ([DataSpec(kind="tabular", num_classes=3, class_names=["a", "b", "c"],
                           n_features=7),
                  DataSpec(kind="tabular", num_classes=0, n_features=5), *IMAGE_SPECS,
                  *SERIES_SPECS], features),
    "image": (IMAGE_SPECS, images),
    "series": (SERIES_SPECS, series),
}


@pytest.mark.parametrize("name", architectures.names())
def test_builds_from_yaml_defaults_with_right_output_shape(make_cfg, name: str) -> None:
    cfg = make_cfg()
    assert name in cfg.arch, f"conf/arch/{name}.yaml is missing"
    model_kw = OmegaConf.to_container(cfg.arch[name].model, resolve=True)
    assert isinstance(model_kw, dict)
    check_hparams(name, model_kw, f"arch.{name}.model")
    kind = architectures.meta(name)["input"]
    assert kind in INPUTS, f"no test inputs for input kind {kind!r}"
    specs, make_inputs = INPUTS[kind]
    for spec in specs:
        model = build(name, spec, **model_kw).eval() if kind == "image" else build(
            name, spec, **model_kw)
        out = model(**make_inputs(spec))
        assert out.shape == (4, outputs(spec))
        assert torch.isfinite(out).all()
        out.sum().backward()


def test_pretrained_trains_only_top_layers_when_asked() -> None:
    spec = DataSpec(kind="text", num_classes=2, class_names=["a", "b"])
    model = build("pretrained", spec, encoder="minilm", pooling="cls", trainable_layers=1,
                  dropout=0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("layer.5." in n for n in trainable)
    assert not any("layer.0." in n for n in trainable)
    assert "head.weight" in trainable
