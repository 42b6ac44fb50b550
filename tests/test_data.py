from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import datamodule

from archselect.config.errors import ConfigError, DataError
from archselect.data.base import BaseDataModule, stratified_split


def dm(tmp_path: Path, **cfg: object) -> BaseDataModule:
    base = {"source": "file", "name": "csv", "path": str(tmp_path / "reviews.csv"),
            "format": "auto", "text_column": "review", "target": "stars", "max_samples": None,
            "val_fraction": 0.2, "test_fraction": 0.2, "vocab_size": 500, "min_frequency": 1,
            "lowercase": True, "max_len": None, "max_len_percentile": 95, "max_len_cap": 64}
    base.update(cfg)
    return datamodule("text", base, tmp_path / "cache")


def test_csv_loads_splits_stratified_and_profiles(text_csv: Path, tmp_path: Path) -> None:
    spec = dm(tmp_path).prepare()
    assert spec.class_names == ["neg", "pos"]
    prof = spec.profile
    assert prof["samples"] == 240
    assert prof["splits"] == {"train": 144, "val": 48, "test": 48}
    assert prof["balance"]["counts"] == {"neg": 120, "pos": 120}
    assert prof["words_per_text"]["p50"] == 7


def test_jsonl_loads_the_same_rows(text_csv: Path, tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "reviews.jsonl"
    pd.read_csv(text_csv).to_json(path, orient="records", lines=True)
    spec = dm(tmp_path, path=str(path)).prepare()
    assert spec.profile["samples"] == 240
    assert spec.data_hash == dm(tmp_path).prepare().data_hash


def test_tokenisation_is_cached_by_data_hash(text_csv: Path, tmp_path: Path) -> None:
    first = dm(tmp_path).encode()
    files = list((tmp_path / "cache" / "text").glob("*/encoded.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = dm(tmp_path).encode()
    assert files[0].stat().st_mtime_ns == mtime
    assert [t.tolist() for t in again.ids["val"]] == [t.tolist() for t in first.ids["val"]]
    assert first.vocab_size <= 500 and first.pad_id == 0
    dm(tmp_path, vocab_size=300).encode()
    assert len(list((tmp_path / "cache" / "text").glob("*/encoded.pt"))) == 2
    # fastText's n-grams and their weights come back from the cache (one flat tensor a split
    # on disk) exactly as they were encoded, text by text
    option = "ngrams:4096:2:4:2"
    made, read = dm(tmp_path).encode(option), dm(tmp_path).encode(option)
    assert made.weights is not None and read.weights is not None
    for split in ("train", "val", "test"):
        assert len(read.ids[split]) == len(made.ids[split])
        assert all(torch.equal(a, b) for a, b in zip(made.ids[split], read.ids[split], strict=True))
        assert all(torch.equal(a, b) for a, b in zip(made.weights[split], read.weights[split],
                                                     strict=True))


def test_split_is_seeded_and_stratified() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    a = stratified_split(labels, val_fraction=0.2, test_fraction=0.2, seed=3)
    b = stratified_split(labels, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert all((a[k] == b[k]).all() for k in a)
    assert labels[a["test"]].mean() == pytest.approx(0.2, abs=0.05)
    assert len(set(a["train"]) & set(a["test"])) == 0


@pytest.mark.parametrize(("content", "cfg", "error", "pattern"), [
    (None, {"path": "missing.csv"}, ConfigError, r"data.path: file not found; given 'missing.csv'"),
    ("", {}, DataError, r"data.path: .*reviews.csv is empty"),
    ("review,stars\n", {}, DataError, r"header but no rows"),
    ("text,label\na,b\n", {}, ConfigError, r"data.text_column: no such column.*given 'review'.*"
     r"expected one of: label, text"),
    ("review,stars\n" + "fine film,5\n" * 30, {}, DataError,
     r"data.target: column 'stars' has a single class '5'"),
    ("review,stars\n" + "ok,1\n" * 10 + "bad,2\n", {}, DataError, r"a class has only 1 row"),
    (b"review,stars\n\xff\xfe bad bytes,1\n", {}, DataError, r"is not UTF-8 text"),
    ("review,stars\na,1\nb,2,3,4\n", {}, DataError, r"cannot parse"),
])
def test_bad_data_gives_one_clear_error(tmp_path: Path, content: str | bytes | None,
                                        cfg: dict[str, object], error: type,
                                        pattern: str) -> None:
    if content is not None:
        path = tmp_path / "reviews.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if "path" in cfg:
        cfg = {**cfg, "path": str(cfg["path"])}
    with pytest.raises(error, match=pattern):
        dm(tmp_path, **cfg).prepare()


def test_numeric_labels_keep_their_spelling_and_sort_as_numbers(tmp_path: Path) -> None:
    rows = ["review,stars"]
    for i in range(60):
        rows.append(f"review number {i} of the film,{['2', '10', '05'][i % 3]}")
    rows.append("NA,2")  # "NA" is a text here, not a missing value
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n")
    spec = dm(tmp_path).prepare()
    assert spec.class_names == ["2", "05", "10"]
    assert spec.profile["samples"] == 61


def test_fasttext_character_ngrams_summed_per_word_equal_scikit_learns() -> None:
    # The encoder hashes each distinct word's char_wb n-grams once and sums them per text: the
    # counts must be exactly those of HashingVectorizer(analyzer="char_wb") on the whole texts.
    import random

    from archselect.data.text import NgramEncoder

    rng = random.Random(0)
    words = ["Film", "PLOT", "naïve", "été", "İstanbul", "x", "a\tb", "c\nd", "great!", "it's"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 25))) for _ in range(300)]
    texts += ["", "   ", "\u00a0x\u2003y"]
    encoder = NgramEncoder.from_option(NgramEncoder.option(buckets=4096, min_n=2, max_n=5,
                                                           word_ngrams=2))
    rows = encoder.fit_encode(texts)
    ours, theirs = encoder._char_counts(texts).tocsr(), encoder.chars.transform(texts)
    assert ours.shape == theirs.shape and (ours != theirs).nnz == 0
    again = encoder.encode(texts)  # encoding the training texts later gives the same rows
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all()
               for a, b in zip(rows, again, strict=True))
