"""The machine translation row: pair files written here (TSV without a header, CSV, JSON lines),
the built-in Django pairs, the translation memory, byte-level subwords, and a short real study
whose registered model translates raw strings through ``mlflow models predict``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import compose_cfg, config_datamodule, mlflow_models_predict

from archselect.config.errors import ConfigError

LEXICON = {"red": "rouge", "green": "vert", "blue": "bleu", "big": "grand", "small": "petit",
           "house": "maison", "car": "voiture", "dog": "chien", "cat": "chat", "tree": "arbre",
           "the": "le", "a": "un", "and": "et", "old": "vieux", "new": "neuf"}


def pairs(n: int, seed: int = 0) -> pd.DataFrame:
    """English phrases and a word-for-word "French" of them (a learnable mapping)."""
    rng = np.random.default_rng(seed)
    words = list(LEXICON)
    rows = []
    for _ in range(n):
        phrase = [str(w) for w in rng.choice(words, int(rng.integers(2, 6)))]
        rows.append((" ".join(phrase), " ".join(LEXICON[w] for w in phrase)))
    return pd.DataFrame(rows, columns=["en", "fr"]).drop_duplicates("en")


def dm_for(tmp_path: Path, *overrides: str) -> Any:
    cfg = compose_cfg(["task=machine_translation", *overrides], tmp_path)
    return config_datamodule(cfg, tmp_path / "cache")


def test_a_tsv_without_header_csv_and_jsonl_read_alike(tmp_path: Path) -> None:
    frame = pairs(200)
    tsv, csv, jsonl = tmp_path / "p.tsv", tmp_path / "p.csv", tmp_path / "p.jsonl"
    frame.to_csv(tsv, sep="\t", index=False, header=False)
    frame.to_csv(csv, index=False)
    frame.to_json(jsonl, orient="records", lines=True)
    sizes = []
    for path, cols in ((tsv, []), (csv, ["data.source_column=en", "data.target_column=fr"]),
                       (jsonl, ["data.source_column=en", "data.target_column=fr"])):
        dm = dm_for(tmp_path, "data=pairs", f"data.path={path}", *cols)
        sizes.append(dm.prepare().profile["samples"])
        assert set(dm.sources["train"]) <= set(frame["en"])
    assert sizes == [len(frame)] * 3


def test_empty_sides_dropped_repeated_sources_kept_once(tmp_path: Path) -> None:
    frame = pairs(120)
    extra = pd.DataFrame([["", "vide"], ["lonely", ""], [frame.iloc[0, 0], "autre"]],
                         columns=["en", "fr"])
    path = tmp_path / "p.csv"
    pd.concat([frame, extra]).to_csv(path, index=False)
    dm = dm_for(tmp_path, "data=pairs", f"data.path={path}", "data.source_column=en",
                "data.target_column=fr")
    prof = dm.prepare().profile
    assert prof["dropped_empty"] == 2 and prof["dropped_duplicate_sources"] == 1
    assert prof["samples"] == len(frame)


def test_a_missing_column_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    pairs(50).to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"data.target_column: no such column in the data; "
                       r"given 'target'; expected one of: en, fr"):
        dm_for(tmp_path, "data=pairs", f"data.path={path}", "data.source_column=en").prepare()


def test_django_pairs_and_subwords_that_never_lose_a_character(tmp_path: Path) -> None:
    from archselect.data.pairs import decode_ids, encode_targets

    dm = dm_for(tmp_path, "data=django_ui", "data.language=de")
    spec = dm.prepare()
    assert 500 < spec.profile["samples"] < 1000
    assert all(s != t for s, t in zip(dm.sources["train"], dm.targets_text["train"], strict=True))
    trial = dm.for_trial(None, batch_size=8, num_workers=0, tokenizer="separate")
    assert not trial.profile["shared_vocab"]
    odd = ["Größe: 3 € — 東京 🙂", "naïve façade"]  # characters the training text lacks
    path = str(trial.profile["target_tokenizer"])
    assert decode_ids(encode_targets(odd, path, 64), path) == odd


def test_the_memory_never_finds_a_training_pair_itself(tmp_path: Path) -> None:
    from archselect.data.pairs import Memory

    memory = Memory(["delete the item", "delete the items", "save changes"],
                    ["supprimer", "supprimer tout", "enregistrer"])
    found = memory.nearest(["delete the item", "delete the items", "save changes"],
                           skip_self=True)
    assert found.tolist()[:2] == [1, 0]
    assert memory.matches(["save the changes"]) == ["enregistrer"]


def test_a_match_is_repaired_where_the_sources_differ_by_a_placeholder_or_a_glossary_word(
        ) -> None:
    from archselect.data.pairs import Memory

    memory = Memory(["Delete %(object)s", "Enter a valid date.", "Date", "Email", "Save",
                     "Save and add another"],
                    ["Supprimer %(object)s", "Saisissez une date valide.", "Date", "Courriel",
                     "Enregistrer", "Enregistrer et ajouter un nouveau"])
    answers, sims = memory.answers(["Delete %(name)s", "Enter a valid email.",
                                    "Save and add %(model)s", "Delete it"])
    assert answers[0] == "Supprimer %(name)s"  # the placeholder the query has
    assert answers[1] == "Saisissez une courriel valide."  # the glossary, in the match's case
    # a word for a placeholder, or a stretch the target does not hold once: left as it is
    assert answers[2] == "Enregistrer et ajouter un nouveau"
    assert answers[3] == "Supprimer %(object)s"
    assert sims.shape == (4,) and (sims > 0).all()


def test_the_output_rule_falls_back_on_the_memory_and_tests_look_up_train_and_val(
        tmp_path: Path) -> None:
    """A model that answers nothing: the rule hands every sentence to the memory, which is then
    retrieval; test sentences look up train + val pairs, validation ones train."""
    from archselect.data.pairs import decode_ids
    from archselect.tasks.seq2seq import Seq2SeqModule

    path = tmp_path / "p.csv"
    pairs(300).to_csv(path, index=False)
    dm = dm_for(tmp_path, "data=pairs", f"data.path={path}", "data.source_column=en",
                "data.target_column=fr")
    spec = dm.for_trial(None, batch_size=8, num_workers=0)
    targets = dm.targets("val")
    nothing = torch.zeros_like(targets)
    setting, line = dm.output_rule(nothing.float(), targets, Seq2SeqModule)
    assert "replace the model's output (100% of validation" in line
    out = decode_ids(dm.apply_output_rule(nothing, "val", setting),
                     str(spec.profile["target_tokenizer"]))
    assert out == dm.memory().answers(dm.sources["val"])[0]
    pool = dm.memory(pool=True)
    assert len(pool.sources) == len(dm.sources["train"]) + len(dm.sources["val"])
    test = decode_ids(dm.apply_output_rule(torch.zeros_like(dm.targets("test")), "test", 0.0),
                      str(spec.profile["target_tokenizer"]))
    assert test == pool.answers(dm.sources["test"])[0]


@pytest.mark.study
def test_translation_study_serves_raw_strings(tmp_path: Path) -> None:
    from archselect.run import run

    path = tmp_path / "train.tsv"
    pairs(400, seed=1).to_csv(path, sep="\t", index=False)
    cfg = compose_cfg(["task=machine_translation", "data=pairs", f"data.path={path}",
                       "data.source_column=en", "data.target_column=fr", "data.vocab_size=300",
                       "data.max_len=16", "selector.candidates=[lstm_attention]",
                       "search.n_trials=1", "search.max_epochs=12", "search.patience=12",
                       "search.refit=true", "arch.lstm_attention.model.hidden_size=128",
                       "arch.lstm_attention.model.embed_dim=64"], tmp_path / "runs")
    result = run(cfg)
    assert set(result.test_metrics) == {"chrf", "bleu"}
    assert result.baseline_name == "copy the source"
    assert result.test_metrics["chrf"] > result.baseline_metrics["chrf"]
    assert "on validation, the model alone" in result.output_rule \
        or "do not beat the model" in result.output_rule  # the rule was chosen, either way
    store, uri = str(cfg.tracking.uri), "models:/archselect-machine_translation@champion"
    long = " ".join(["red big house"] * 12)  # 36 words: over data.max_len subwords
    request = tmp_path / "in.json"
    request.write_text(json.dumps({"dataframe_split": {
        "columns": ["text"], "data": [["the red car"], ["a small dog and a cat"], [long]]}}))
    answer = mlflow_models_predict(store, uri, request)
    assert list(answer.columns) == ["translation", "truncated"]
    assert answer["truncated"].tolist() == [False, False, True]
    assert all(isinstance(t, str) for t in answer["translation"])
    assert torch.tensor([len(t) for t in answer["translation"]]).min() > 0
