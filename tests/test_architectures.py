"""Registry-driven: every registered architecture builds from its YAML defaults, for every
input and target kind it claims, and gives the right output shape. A new architecture is
covered as soon as it is registered and configured."""

from __future__ import annotations

import math
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


def weighted_ngrams(spec: DataSpec) -> dict[str, torch.Tensor]:
    """fastText's inputs: ids with a weight each (0 where padded)."""
    ids = torch.randint(2, 400, (4, 24))
    weights = torch.rand(4, 24)
    ids[1, 10:] = 0
    weights[1, 10:] = 0.0
    return {"input_ids": ids, "weights": weights}


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


def vectors(spec: DataSpec) -> dict[str, torch.Tensor]:
    return {"x": torch.nn.functional.normalize(torch.randn(4, spec.n_features), dim=-1)}


def table_rows(spec: DataSpec) -> dict[str, torch.Tensor]:
    """Encoded rows as the tabular kind makes them: numbers, then one-hot blocks."""
    x = torch.randn(4, spec.n_features)
    start = spec.n_numeric
    for card in spec.cat_cardinalities:
        block = torch.zeros(4, card)
        block[torch.arange(4), torch.randint(0, card, (4,))] = 1.0
        x[:, start : start + card] = block
        start += card
    return {"x": x}


TABLE_SPECS = [
    # numbers and categories, one with more levels than an embedding's width
    DataSpec(kind="tabular", num_classes=3, class_names=["a", "b", "c"], n_features=7 + 3 + 40,
             n_numeric=7, cat_cardinalities=[3, 40]),
    DataSpec(kind="tabular", num_classes=0, n_features=5, n_numeric=5),  # numbers, regression
    DataSpec(kind="tabular", num_classes=2, class_names=["a", "b"], n_features=6, n_numeric=0,
             cat_cardinalities=[2, 4]),  # categories only
]


def detection_images(spec: DataSpec) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(4, *spec.input_shape)}


DETECTION_SPECS = [DataSpec(kind="detection", num_classes=3, class_names=["a", "b", "c"],
                            input_shape=[3, 64, 64], max_boxes=4)]


PAIRS_SPECS = [DataSpec(kind="text_pairs", vocab_size=60, pad_id=0, max_len=12,
                        profile={"target_vocab": 60, "shared_vocab": True}),
               DataSpec(kind="text_pairs", vocab_size=50, pad_id=0, max_len=12,
                        profile={"target_vocab": 70, "shared_vocab": False})]


def sentence_pairs(spec: DataSpec) -> dict[str, torch.Tensor]:
    src = torch.randint(4, spec.vocab_size, (4, 9))
    mask = torch.ones(4, 9, dtype=torch.bool)
    src[1, 5:], mask[1, 5:] = 0, False
    tgt_in = torch.randint(4, int(spec.profile["target_vocab"]), (4, 7))
    tgt_in[:, 0] = 1
    return {"src": src, "src_mask": mask, "tgt_in": tgt_in}


AUDIO_SPECS = [DataSpec(kind="audio", num_classes=3, class_names=["a", "b", "c"],
                         input_shape=[1, 40, 101]),
               DataSpec(kind="audio", num_classes=2, class_names=["a", "b"],
                        input_shape=[1, 32, 57])]
GENERATION_SPECS = [DataSpec(kind="image_generation", num_classes=10, input_shape=[1, 8, 8],
                             profile={"conditional": False}),
                    DataSpec(kind="image_generation", num_classes=2, input_shape=[3, 12, 12],
                             profile={"conditional": True})]


def spectrograms(spec: DataSpec) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(4, *spec.input_shape)}


def check_generator(name: str, model_kw: dict[str, Any], specs: list[DataSpec]) -> None:
    """A generator's two sides: four images in [0, 1] of the data's shape from four seeds (of
    a class where conditional), and finite losses that backpropagate."""
    for spec in specs:
        torch.manual_seed(0)
        model: Any = build(name, spec, **model_kw)
        model.eval()
        with torch.no_grad():
            out = model(torch.arange(4), torch.tensor([0, 1, 0, 1]))
        assert out.shape == (4, *spec.input_shape)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        model.train()
        x = torch.rand(4, *spec.input_shape) * 2 - 1
        label = torch.tensor([0, 1, 0, 1]) if spec.profile["conditional"] else None
        if model.adversarial:
            loss = model.discriminator_loss(x, label) + model.generator_loss(4, label)
        else:
            loss = model.loss(x, label)["loss"]
        assert torch.isfinite(loss)
        loss.backward()


# input kind -> (specs it claims, a batch of 4 for a spec)
INPUTS: dict[str, tuple[list[DataSpec], Any]] = {
    "tokens": ([DataSpec(kind="text", num_classes=3, class_names=["a", "b", "c"],
                         vocab_size=500, pad_id=0, max_len=24)], tokens),
    "pretrained": ([DataSpec(kind="text", num_classes=3, class_names=["a", "b", "c"])], tokens),
    "ngrams": ([DataSpec(kind="text", num_classes=3, class_names=["a", "b", "c"],
                         vocab_size=500, pad_id=0, max_len=24)], weighted_ngrams),
    "features": ([DataSpec(kind="tabular", num_classes=3, class_names=["a", "b", "c"],
                           n_features=7),
                  DataSpec(kind="tabular", num_classes=0, n_features=5), *IMAGE_SPECS,
                  *SERIES_SPECS], features),
    "image": (IMAGE_SPECS, images),
    "series": (SERIES_SPECS, series),
    "tabular": (TABLE_SPECS, table_rows),
    "vectors": ([DataSpec(kind="text", num_classes=3, class_names=["a", "b", "c"],
                          n_features=384)], vectors),
    "detection": (DETECTION_SPECS, detection_images),
    "pairs": (PAIRS_SPECS, sentence_pairs),
    "audio": (AUDIO_SPECS, spectrograms),
    "generation": (GENERATION_SPECS, lambda spec: {"seed": torch.arange(4)}),
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
    if kind == "detection":
        check_detector(name, model_kw, specs)
        return
    if kind == "pairs":
        check_seq2seq(name, model_kw, specs)
        return
    if kind == "generation":
        check_generator(name, model_kw, specs)
        return
    for spec in specs:
        model = build(name, spec, **model_kw).eval() if kind == "image" else build(
            name, spec, **model_kw)
        out = model(**make_inputs(spec))
        assert out.shape == (4, outputs(spec))
        assert torch.isfinite(out).all()
        out.sum().backward()


def check_detector(name: str, model_kw: dict[str, Any], specs: list[DataSpec]) -> None:
    """A detector's two sides: detections ``[B, K, 6]`` in eval mode (boxes inside the image,
    classes in range or -1), and finite named losses that backpropagate in train mode."""
    from archselect.tasks.detection import MAX_DETECTIONS

    for spec in specs:
        torch.manual_seed(0)
        model = build(name, spec, **model_kw)
        x = detection_images(spec)["x"]
        model.eval()
        with torch.no_grad():
            out = model(x)
        assert out.shape == (4, MAX_DETECTIONS, 6)
        assert ((out[..., 5] >= -1) & (out[..., 5] < spec.num_classes)).all()
        model.train()
        targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 28.0], [33.0, 30.0, 60.0, 62.0]]),
                    "labels": torch.tensor([0, 2])} for _ in range(4)]
        targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
        losses = model.detection_loss(x, targets)
        total = torch.stack(list(losses.values())).sum()
        assert torch.isfinite(total) and total > 0
        total.backward()


def check_seq2seq(name: str, model_kw: dict[str, Any], specs: list[DataSpec]) -> None:
    """An encoder-decoder's two sides: teacher-forced log-probabilities ``[B, T, V]`` that
    backpropagate, and greedy and beam translations ``[B, max_len + 1]`` of target ids."""
    for spec in specs:
        torch.manual_seed(0)
        model = build(name, spec, **model_kw)
        batch = sentence_pairs(spec)
        logp = model(**batch)
        v = int(spec.profile["target_vocab"])
        assert logp.shape == (4, 7, v)
        assert torch.allclose(logp.exp().sum(-1), torch.ones(4, 7), atol=1e-4)
        (-logp[..., 5].mean()).backward()
        model.eval()
        with torch.no_grad():  # teacher forcing computes what decoding step by step does
            forced = model(**batch)
            state = model.start(batch["src"], batch["src_mask"])
            for t in range(batch["tgt_in"].shape[1]):
                stepped, state = model.step(state, batch["tgt_in"][:, t])
                assert torch.allclose(stepped, forced[:, t], atol=1e-4)
        for beam in (1, 3):
            ids = model.generate(batch["src"], batch["src_mask"], beam_size=beam)
            assert ids.shape == (4, spec.max_len + 1)
            assert ((ids >= 0) & (ids < v)).all()


def test_beam_search_finds_the_likeliest_sequence_of_a_known_model() -> None:
    """A decoder whose next-token distribution is fixed (from its last token): beam search with
    no length penalty returns the sequence of highest probability, which greedy misses."""
    from archselect.architectures.seq2seq import Seq2Seq

    table = torch.full((6, 6), -30.0)
    table[1, 4], table[1, 5] = math.log(0.55), math.log(0.45)  # BOS -> 4 (0.55) or 5 (0.45)
    table[4, 2], table[4, 3] = math.log(0.5), math.log(0.5)  # after 4: end or 3, even
    table[5, 2] = 0.0  # after 5: surely the end
    table[3, 2] = 0.0

    class Fixed(Seq2Seq):
        def start(self, src: torch.Tensor, src_mask: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"src": src}

        def step(self, state: dict[str, torch.Tensor], last: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            return torch.log_softmax(table[last], -1), state

    model = Fixed(width=6, beam_size=2, length_penalty=0.0, max_length_ratio=4.0)
    src, mask = torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool)
    assert model.generate(src, mask, beam_size=1)[0, :2].tolist() == [4, 2]  # 0.55 * 0.5
    assert model.generate(src, mask, beam_size=2)[0, :2].tolist() == [5, 2]  # 0.45 * 1.0


def test_pretrained_trains_only_top_layers_when_asked() -> None:
    spec = DataSpec(kind="text", num_classes=2, class_names=["a", "b"])
    model = build("pretrained", spec, encoder="minilm", pooling="cls", trainable_layers=1,
                  dropout=0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("layer.5." in n for n in trainable)
    assert not any("layer.0." in n for n in trainable)
    assert "head.weight" in trainable


#: architectures whose exported graph cannot serve other token lengths (said in one line)
NOT_EXPORTABLE = {"transformer": r"keeps the token length it was traced with"}


@pytest.mark.parametrize("name", architectures.names())
def test_exports_to_onnx_matching_pytorch(make_cfg, tmp_path, name: str) -> None:
    """Every architecture, at its defaults, exports to ONNX and onnxruntime gives PyTorch's
    outputs (another batch size and token length included), or it is refused in one line."""
    from archselect.export import export_onnx

    cfg = make_cfg()
    model_kw = OmegaConf.to_container(cfg.arch[name].model, resolve=True)
    assert isinstance(model_kw, dict)
    specs, make_inputs = INPUTS[architectures.meta(name)["input"]]
    torch.manual_seed(0)
    model = build(name, specs[0], **model_kw).eval()
    inputs = make_inputs(specs[0])
    if architectures.meta(name).get("no_onnx"):
        # Refused up front, in one line (the finish step does not attempt it).
        assert "\n" not in architectures.meta(name)["no_onnx"]
        return
    if name in NOT_EXPORTABLE:
        with pytest.raises(RuntimeError, match=NOT_EXPORTABLE[name]):
            export_onnx(model, inputs, tmp_path / "m.onnx", tolerance=1e-4)
        return
    done = export_onnx(model, inputs, tmp_path / "m.onnx", tolerance=1e-4)
    assert done.max_abs_diff <= 1e-4
