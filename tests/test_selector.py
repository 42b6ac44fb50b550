from __future__ import annotations

from typing import Any

import pytest
from helpers import select_for

from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec
from archselect.hardware import HardwareProfile

CPU = HardwareProfile(cpu_cores=2, torch_threads=2, memory_gb=8.0)
GPU = HardwareProfile(cpu_cores=8, torch_threads=8, memory_gb=64.0,
                      gpus=[{"name": "X", "memory_gb": 24.0, "bf16": True}], accelerator="gpu",
                      precision="bf16-mixed")


def spec(n_train: int) -> DataSpec:
    return DataSpec(kind="text", num_classes=3, class_names=["a", "b", "c"], profile={
        "splits": {"train": n_train, "val": 100, "test": 100},
        "words_per_text": {"p50": 19, "p90": 36, "p95": 69, "p99": 188, "max": 900},
    })


def test_text_selection_runs_simple_to_recommended_with_reasons(make_cfg) -> None:
    cfg = make_cfg("selector.rules.small_data.min_train_samples=1500")
    sel = select_for(cfg, spec(9000), CPU)
    assert [c.name for c in sel.candidates] == ["fasttext", "lstm", "transformer",
                                                "pretrained"]
    assert "sentence_embeddings" in sel.dropped  # 9,000 texts on CPU: fine-tuned
    assert sel.candidates[0].reasons[0].startswith("baseline (start simple)")
    assert all(c.reasons for c in sel.candidates)
    assert "median 19 words" in sel.candidates[1].reasons[0]
    assert sel.task.family == "classification"


def test_no_gpu_caps_the_pretrained_encoder(make_cfg) -> None:
    cfg = make_cfg()
    cpu = {c.name: c for c in select_for(cfg, spec(9000), CPU).candidates}["pretrained"]
    gpu = {c.name: c for c in select_for(cfg, spec(9000), GPU).candidates}["pretrained"]
    assert cpu.model["trainable_layers"] == 2 and cpu.max_epochs == 2
    assert any("no GPU" in r for r in cpu.reasons)
    assert gpu.model["trainable_layers"] == -1
    assert gpu.max_epochs == cfg.search.max_epochs
    assert cpu.option and cpu.option.endswith("model")


def test_small_data_drops_transformer_with_a_reason(make_cfg) -> None:
    cfg = make_cfg("selector.rules.small_data.min_train_samples=1500")
    sel = select_for(cfg, spec(800), CPU)
    assert "transformer" not in [c.name for c in sel.candidates]
    assert "800 training samples" in sel.dropped["transformer"]


def test_candidates_restrict_and_order(make_cfg) -> None:
    cfg = make_cfg("selector.candidates=[transformer,lstm]")
    sel = select_for(cfg, spec(9000), CPU)
    assert [c.name for c in sel.candidates] == ["transformer", "lstm"]
    assert "restricts" in sel.notes[0]


def test_unknown_candidate_lists_known(make_cfg) -> None:
    cfg = make_cfg("selector.candidates=[lstm,bert]")
    with pytest.raises(ConfigError, match=r"selector.candidates: unknown architecture 'bert'.*"
                       r"expected one of: fasttext, lstm, pretrained, sentence_embeddings, transformer"):
        select_for(cfg, spec(9000), CPU)


def test_baseline_defaults_are_in_their_space(make_cfg) -> None:
    sel = select_for(make_cfg(), spec(9000), CPU)
    for c in sel.candidates:
        for k, v in c.defaults().items():
            assert c.space[k].contains(v), (c.name, k, v)


@pytest.mark.parametrize(("n_train", "hw", "kept", "why"), [
    (600, CPU, "sentence_embeddings", "only 600 training texts (< 1500) on CPU"),
    (9000, CPU, "pretrained", "9000 training texts on CPU (1500 to 30000)"),
    (50000, CPU, "sentence_embeddings", "50000 training texts (> 30000) on CPU"),
    (600, GPU, "pretrained", "a GPU fine-tunes the encoder"),
])
def test_the_encoder_is_offered_one_way_by_data_size_and_hardware(
        make_cfg, n_train: int, hw: Any, kept: str, why: str) -> None:
    sel = select_for(make_cfg(), spec(n_train), hw)
    names = [c.name for c in sel.candidates]
    other = ({"sentence_embeddings", "pretrained"} - {kept}).pop()
    assert kept in names and other not in names
    assert sel.dropped[other].startswith(why)


def test_the_encoder_rule_leaves_an_explicit_choice_alone(make_cfg) -> None:
    cfg = make_cfg("selector.candidates=[sentence_embeddings,pretrained]")
    assert [c.name for c in select_for(cfg, spec(600), CPU).candidates] == [
        "sentence_embeddings", "pretrained"]


def test_small_models_run_one_trial_per_core_on_one_thread_each(make_cfg) -> None:
    tab = DataSpec(kind="tabular", num_classes=3, class_names=["a", "b", "c"], n_features=4,
                   n_numeric=4, profile={"splits": {"train": 500, "val": 100, "test": 100}})
    auto = ["task=tabular_classification", "search.n_workers=null"]
    sel = select_for(make_cfg(*auto), tab, CPU)
    assert (sel.workers, sel.threads) == (2, 1)
    assert sel.parallel == ("small models (tabular data) on 2 CPU cores: 2 trials side by side, "
                            "one torch thread each (selector.rules.parallel)")
    # Text (embeddings, an LSTM, a pretrained encoder): one trial at a time on every core.
    text = select_for(make_cfg("search.n_workers=null"), spec(9000), CPU)
    assert (text.workers, text.threads) == (1, 2) and text.parallel.startswith("larger models")
    # OMP_NUM_THREADS (a scheduler's or a shared machine's cap) bounds the threads a trial takes.
    capped = select_for(make_cfg("search.n_workers=null"), spec(9000),
                        HardwareProfile(cpu_cores=2, torch_threads=2, memory_gb=16.0,
                                        thread_cap=1))
    assert (capped.workers, capped.threads) == (1, 1)
    assert capped.parallel.endswith("; 1 thread(s): OMP_NUM_THREADS")
    # What the user sets wins; a one-trial study, little memory or GPUs change the answer.
    assert (lambda s: (s.workers, s.threads))(
        select_for(make_cfg(*auto, "search.n_workers=1"), tab, CPU)) == (1, 2)
    assert (lambda s: (s.workers, s.threads))(
        select_for(make_cfg(*auto, "search.threads=1"), tab, CPU)) == (2, 1)
    assert select_for(make_cfg(*auto, "search.n_trials=1"), tab, CPU).workers == 1
    same = select_for(make_cfg(*auto, "trainer.deterministic=true"), tab, CPU)
    assert (same.workers, same.threads) == (1, 1) and "deterministic" in same.parallel
    small_ram = HardwareProfile(cpu_cores=8, torch_threads=8, memory_gb=4.0)
    assert (lambda s: (s.workers, s.threads))(select_for(make_cfg(*auto), tab, small_ram)) == (1, 1)
    two_gpus = HardwareProfile(cpu_cores=8, torch_threads=8, memory_gb=64.0,
                               gpus=[{"name": "X", "memory_gb": 24.0, "bf16": True}] * 2,
                               accelerator="gpu", precision="bf16-mixed")
    on_gpus = select_for(make_cfg(*auto), tab, two_gpus)
    assert (on_gpus.workers, on_gpus.threads) == (2, 4) and "one trial per GPU" in on_gpus.parallel
    assert select_for(make_cfg(*auto), tab, GPU).workers == 1
