"""Translation data: (source, target) sentence pairs from a user's file (TSV / CSV / JSONL) or the
built-in Django user-interface strings; byte-level BPE subwords (shared by both sides or one
tokenizer per side), cached by data hash; and the served translator's codec.

Ids: 0 pads, 1 begins and 2 ends a sentence, 3 separates a source from its translation-memory
match. A source keeps at most ``max_len`` subwords; a target ``max_len`` plus its end. Byte-level
BPE turns any character into bytes it knows: nothing becomes an unknown token.

Translation memory (a trial's ``memory`` setting; after "neural fuzzy repair", Bulte and Tezcan
2019): each source is followed by the most similar training pair, its source and its target
(cosine of TF-IDF character 2-4 grams; a training pair never finds itself), so a model can copy
and edit the translation of a near-identical string, as user-interface catalogs are full of.
"""

from __future__ import annotations

import gettext
import importlib.metadata
import re
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from archselect.config.errors import ConfigError, DataError
from archselect.config.schema import DjangoSourceConfig, PairsDataConfig, SourceConfig
from archselect.data.base import (
    SPLITS,
    BaseDataModule,
    DataSpec,
    ServingBundle,
    check_fractions,
    data_sources,
    datamodules,
    empty_cells,
    splits_text,
)
from archselect.hashing import stable_hash
from archselect.serving import Batch, Codec, first_present

PAD, BOS, EOS, SEP = 0, 1, 2, 3
SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[SEP]"]
#: the column of sentences the served model reads when the training column's name is not given
TEXT_COLUMN = "text"
#: similarities from which the translation memory's match replaces the model's output
#: (the output rule picks one on validation, or none)
FALLBACK_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
#: the tokenizer layouts a trial may use (``arch.<name>.data.tokenizer``)
TOKENIZERS = ("shared", "separate")


# -- the built-in pairs ----------------------------------------------------------------------------
@data_sources.register("django_ui", kind="text_pairs", schema=DjangoSourceConfig)
def load_django_ui(source: DjangoSourceConfig) -> pd.DataFrame:
    """English -> ``data.language`` user-interface strings of Django (its gettext catalogs,
    the ``.mo`` files inside the wheel, read with the standard library's ``gettext``; Django is
    not imported): plural forms, strings with a context, empty and untranslated entries left
    out, each English string once."""
    try:
        root = Path(str(importlib.metadata.distribution("django").locate_file("django")))
    except importlib.metadata.PackageNotFoundError:
        root = Path("/nonexistent")
    if not root.is_dir():
        raise DataError("data=django_ui: the built-in pairs ship in the Django wheel, which is "
                        "not installed; fix: pip install --no-deps django==5.2.20 (the README's "
                        "set-up does this)")
    files = sorted(root.rglob(f"locale/{source.language}/LC_MESSAGES/*.mo"))
    if not files:
        known = sorted({p.parent.parent.name for p in root.glob("conf/locale/*/LC_MESSAGES")})
        raise ConfigError("data.language", "Django has no catalog for this language",
                          given=source.language, allowed=known)
    pairs: dict[str, str] = {}
    for path in files:
        with path.open("rb") as fh:
            catalog = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
        for key, value in catalog.items():
            if (isinstance(key, tuple) or not key or not value or key == value or "\x04" in key
                    or key in pairs):
                continue
            pairs[str(key)] = str(value)
    return pd.DataFrame({"source": list(pairs), "target": list(pairs.values())})


# -- the translation memory -------------------------------------------------------------------------
#: the words of a sentence for fuzzy-match repair: a placeholder (%(name)s, %s, {name}) or a markup
#: tag as one token, then words and single punctuation marks
_PLACEHOLDER = r"%\(\w+\)[a-z]|%[a-z]|\{\w*\}|<[^>]+>"
_WORDS = re.compile(_PLACEHOLDER + r"|\w+|[^\w\s]")
#: the longest differing stretch (in tokens, on either side) that repair rewrites
REPAIR_SPAN = 3


class Memory:
    """The training pairs, searchable by source: the nearest training source to a sentence by
    the cosine of TF-IDF character 2-4 grams (within words), and its target; with fuzzy-match
    repair of that target (``answers``)."""

    def __init__(self, sources: list[str], targets: list[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.sources, self.targets = list(sources), list(targets)
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4),
                                          sublinear_tf=True)
        self.matrix = self.vectorizer.fit_transform(sources)
        #: the pairs whose source is a short phrase (at most REPAIR_SPAN words): a glossary
        self.glossary: dict[str, str] = {}
        for src, tgt in zip(self.sources, self.targets, strict=True):
            if len(src.split()) <= REPAIR_SPAN:
                self.glossary.setdefault(src.lower().strip(" .:"), tgt.strip(" .:"))

    def repair(self, query: str, source: str, target: str) -> str:
        """A match's target edited where its source and the query differ by a short stretch
        (fuzzy-match repair, as translation-memory tools do): the stretch's glossary
        translation swapped for the query's, or, where the target keeps the stretch as it is
        (a placeholder, a name, a number), the query's stretch itself. A stretch that is not
        found exactly once in the target is left; so is one that would swap a placeholder for
        a word."""
        q = [(m.group(), m.start(), m.end()) for m in _WORDS.finditer(query)]
        s = [(m.group(), m.start(), m.end()) for m in _WORDS.finditer(source)]
        matcher = SequenceMatcher(a=[w for w, _, _ in s], b=[w for w, _, _ in q], autojunk=False)
        out = target
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "replace" or max(i2 - i1, j2 - j1) > REPAIR_SPAN:
                continue
            old, new = source[s[i1][1]:s[i2 - 1][2]], query[q[j1][1]:q[j2 - 1][2]]
            if bool(re.fullmatch(_PLACEHOLDER, old)) != bool(re.fullmatch(_PLACEHOLDER, new)):
                continue
            said, saying = self.glossary.get(old.lower()), self.glossary.get(new.lower())
            if said and saying:
                out = _swap_once(out, said, saying, fold_case=True)
            else:
                out = _swap_once(out, old, new, fold_case=False)
        return out

    def answers(self, queries: list[str]) -> tuple[list[str], np.ndarray]:
        """Each query's nearest training pair's target, repaired (``repair``), and the
        similarity of the two sources."""
        index, sims = self.search(queries)
        return [self.repair(q, self.sources[i], self.targets[i])
                for q, i in zip(queries, index, strict=True)], sims

    def nearest(self, queries: list[str], *, skip_self: bool = False) -> np.ndarray:
        """The index of each query's nearest training source (``skip_self``: the queries are
        the training sources, in order, and none may find itself)."""
        return self.search(queries, skip_self=skip_self)[0]

    def search(self, queries: list[str], *, skip_self: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's nearest training source and its cosine similarity (0 to 1)."""
        found = np.zeros(len(queries), dtype=np.int64)
        best = np.zeros(len(queries))
        q = self.vectorizer.transform(queries)
        for start in range(0, len(queries), 512):  # [512, n] dense similarities at a time
            sims = (q[start : start + 512] @ self.matrix.T).toarray()
            if skip_self:
                rows = np.arange(sims.shape[0])
                sims[rows, start + rows] = -1.0
            found[start : start + 512] = sims.argmax(1)
            best[start : start + 512] = sims.max(1)
        return found, best

    def matches(self, queries: list[str], *, skip_self: bool = False) -> list[str]:
        """The target of each query's nearest training source."""
        return [self.targets[i] for i in self.nearest(queries, skip_self=skip_self)]

    def pairs(self, queries: list[str], *, skip_self: bool = False) -> list[tuple[str, str]]:
        """The nearest training pair (source, target) of each query."""
        return [(self.sources[i], self.targets[i])
                for i in self.nearest(queries, skip_self=skip_self)]


def _swap_once(text: str, old: str, new: str, *, fold_case: bool) -> str:
    """``text`` with ``old`` (a whole-word occurrence, the only one) replaced by ``new``; where
    ``fold_case``, ``old`` is found in any case and ``new`` takes its first letter's case."""
    pattern = re.compile(r"(?<!\w)" + re.escape(old) + r"(?!\w)", re.I if fold_case else 0)
    found = pattern.findall(text)
    if len(found) != 1 or not new:
        return text
    if fold_case and found[0][:1].islower() != new[:1].islower():
        new = new[:1].swapcase() + new[1:]
    return pattern.sub(lambda _: new, text)


def source_ids(tok: Any, texts: list[str], matches: list[tuple[str, str]] | None,
               max_len: int) -> list[torch.Tensor]:
    """A source's subword ids (at most ``max_len``); with a memory match, then ``[SEP]``, the
    match's source, ``[SEP]`` and the match's target (at most ``max_len`` subwords each): the
    model sees how far the match is from the sentence, and what its translation was."""
    out = [e.ids[:max_len] or [EOS] for e in tok.encode_batch(texts)]
    if matches is not None:
        m_src = tok.encode_batch([m[0] for m in matches])
        m_tgt = tok.encode_batch([m[1] for m in matches])
        out = [[*ids, SEP, *a.ids[:max_len], SEP, *b.ids[:max_len]]
               for ids, a, b in zip(out, m_src, m_tgt, strict=True)]
    return [torch.tensor(ids) for ids in out]


# -- the data kind ---------------------------------------------------------------------------------
@dataclass
class Encoded:
    """Subword ids per split (lists of 1-D tensors) and the tokenizers that made them."""

    src: dict[str, list[torch.Tensor]]
    tgt: dict[str, list[torch.Tensor]]
    src_tokenizer: str
    tgt_tokenizer: str
    src_vocab: int
    tgt_vocab: int


class _Pairs(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, src: list[torch.Tensor], tgt: list[torch.Tensor]) -> None:
        self.src, self.tgt = src, tgt

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.src[i], self.tgt[i]


def pad_sources(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Source ids padded to the longest row, and the mask of real tokens."""
    lengths = torch.tensor([max(len(r), 1) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, torch.arange(ids.shape[1])[None, :] < lengths[:, None]


class _Collate:
    """(source, target) id rows -> ``{"inputs": {src, src_mask, tgt_in}, "target"}``; the
    decoder's input is ``[BOS] + target`` and the target ``target + [EOS]``, both padded to the
    fixed ``width`` (so that predictions of any batch line up)."""

    def __init__(self, width: int) -> None:
        self.width = width

    def __call__(self, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        src, mask = pad_sources([r[0] for r in rows])
        tgt_in = torch.full((len(rows), self.width), PAD, dtype=torch.long)
        target = torch.full((len(rows), self.width), PAD, dtype=torch.long)
        for i, (_, t) in enumerate(rows):
            t = t[: self.width - 1]
            tgt_in[i, 0] = BOS
            tgt_in[i, 1 : len(t) + 1] = t
            target[i, : len(t)] = t
            target[i, len(t)] = EOS
        return {"inputs": {"src": src, "src_mask": mask, "tgt_in": tgt_in}, "target": target}


def train_bpe(texts: list[str], vocab_size: int, path: Path) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (``tokenizers``), saved at ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(path))
    return tok


@lru_cache(maxsize=8)
def load_tokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def decode_ids(rows: torch.Tensor, path: str) -> list[str]:
    """Target id rows (ending at EOS or padding) -> sentences, by the tokenizer at ``path``."""
    tok = load_tokenizer(path)
    out = []
    for row in rows.long().tolist():
        ids = []
        for i in row:
            if i in (PAD, EOS):
                break
            if i != BOS:
                ids.append(i)
        out.append(tok.decode(ids, skip_special_tokens=True))
    return out


def encode_targets(texts: list[str], path: str, width: int) -> torch.Tensor:
    """Sentences -> target id rows (``ids + [EOS]``, padded to ``width``), as the collate makes
    them: what references' and baselines' predictions are stored as."""
    tok = load_tokenizer(path)
    out = torch.full((len(texts), width), PAD, dtype=torch.long)
    for i, enc in enumerate(tok.encode_batch(texts)):
        ids = enc.ids[: width - 1]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        out[i, len(ids)] = EOS
    return out


@datamodules.register("text_pairs", schema=PairsDataConfig)
class PairsDataModule(BaseDataModule):
    """Sentence pairs: loaded, checked, de-duplicated, split by seed, profiled; subword-encoded
    per tokenizer layout (a trial's ``tokenizer`` setting: ``shared`` or ``separate``) and
    cached under the data hash."""

    target_kinds = ("sequence",)
    cfg: PairsDataConfig

    def __init__(self, options: PairsDataConfig, source: SourceConfig, *, seed: int,
                 cache_dir: str | Path, target_kind: str = "sequence") -> None:
        super().__init__(options, source, seed=seed, cache_dir=cache_dir, target_kind=target_kind)
        self.sources: dict[str, list[str]] = {}
        self.targets_text: dict[str, list[str]] = {}
        self.encoded: Encoded | None = None
        self.layout = "shared"
        self.use_memory = False
        self._memory: dict[bool, Memory] = {}
        #: the output rule's similarity threshold (None: the model always answers)
        self.fallback: float | None = None
        self.src_column, self.tgt_column = "", ""
        self.headerless = False

    def _frame(self) -> pd.DataFrame:
        frame = self.load_frame()
        src, tgt = self.cfg.source_column, self.cfg.target_column
        columns = [str(c) for c in frame.columns]
        self.headerless = src not in columns and tgt not in columns and len(columns) == 2
        if self.headerless:
            # A two-column file without a header (neither column named): its first line is a
            # pair, source then target.
            first = pd.DataFrame([columns], columns=[src, tgt])
            frame = pd.concat([first, frame.set_axis([src, tgt], axis=1)], ignore_index=True)
            columns = [src, tgt]
        for key, name in (("data.source_column", src), ("data.target_column", tgt)):
            if name not in columns:
                raise ConfigError(key, "no such column in the data", given=name, allowed=columns,
                                  fix=f"set {key}=<one of the columns>")
        if src == tgt:
            raise ConfigError("data.target_column", "is the same column as data.source_column",
                              given=tgt)
        self.src_column, self.tgt_column = src, tgt
        return frame

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        check_fractions(self.cfg.val_fraction, self.cfg.test_fraction)
        frame = self._frame()
        src, tgt = self.src_column, self.tgt_column
        n_raw = len(frame)
        kept = frame[~(empty_cells(frame[src]) | empty_cells(frame[tgt]))]
        kept = kept[kept[src].astype(str).str.strip().ne("") & kept[tgt].astype(str).str.strip().ne("")]
        empty = n_raw - len(kept)
        kept = kept.drop_duplicates(subset=[src], keep="first")
        duplicates = n_raw - empty - len(kept)
        if len(kept) < 20:
            raise DataError(f"data: only {len(kept)} pair(s) with both sides; translation needs at "
                            "least 20; fix: check data.source_column and data.target_column")
        sources = kept[src].astype(str).tolist()
        targets = kept[tgt].astype(str).tolist()
        n = self.cfg.max_samples
        index = np.arange(len(sources))
        if n is not None and n < len(index):
            index = np.sort(np.random.default_rng(self.seed).choice(len(index), n, replace=False))
        order = np.random.default_rng(self.seed).permutation(index)
        n_test = max(1, round(len(order) * self.cfg.test_fraction))
        n_val = max(1, round(len(order) * self.cfg.val_fraction))
        split = {"test": order[:n_test], "val": order[n_test:n_test + n_val],
                 "train": order[n_test + n_val:]}
        for s in SPLITS:
            self.sources[s] = [sources[i] for i in split[s]]
            self.targets_text[s] = [targets[i] for i in split[s]]
        words = [len(t.split()) for t in self.sources["train"]]
        copies = float(np.mean([a == b for a, b in zip(self.sources["train"],
                                                          self.targets_text["train"],
                                                          strict=True)]))
        profile = {
            "source": self.cfg.name, "samples": len(index),
            "splits": {s: len(self.sources[s]) for s in SPLITS},
            "dropped_empty": int(empty), "dropped_duplicate_sources": int(duplicates),
            "source_words": {f"p{q}": int(np.percentile(words, q)) for q in (50, 90, 99)},
            "identical_share": round(copies, 4), "columns": [src, tgt],
            "headerless": self.headerless,
        }
        c = self.cfg
        self.spec = DataSpec(
            kind="text_pairs", max_len=c.max_len,
            data_hash=stable_hash(sources, targets, {k: v.tolist() for k, v in split.items()},
                                  c.vocab_size, c.max_len),
            profile=profile)
        return self.spec

    # -- encoding ---------------------------------------------------------------------------
    def memory(self, pool: bool = False) -> Memory:
        """The training split as a translation memory, or (``pool``) the training and the
        validation pairs: what the test sentences and the served model look up, as the final
        model has seen both (the retrieval reference's test answers do the same)."""
        if pool not in self._memory:
            splits = ("train", "val") if pool else ("train",)
            self._memory[pool] = Memory([x for s in splits for x in self.sources[s]],
                                        [y for s in splits for y in self.targets_text[s]])
        return self._memory[pool]

    def encode(self, layout: str, memory: bool = False) -> Encoded:
        """Subword ids of every split for one tokenizer layout (with the translation memory's
        matches after each source, or not), cached on disk."""
        spec = self.prepare()
        if layout not in TOKENIZERS:
            raise ConfigError("arch.<name>.data.tokenizer", "unknown tokenizer layout",
                              given=layout, allowed=TOKENIZERS)
        folder = self.cache_dir / "pairs" / stable_hash(spec.data_hash, layout, memory, "bpe-v4")
        blob = folder / "encoded.pt"
        if blob.is_file():
            return Encoded(**torch.load(blob, weights_only=False))
        folder.mkdir(parents=True, exist_ok=True)
        train = self.sources["train"], self.targets_text["train"]
        if layout == "shared":
            train_bpe([*train[0], *train[1]], self.cfg.vocab_size, folder / "shared.json")
            src_path = tgt_path = str(folder / "shared.json")
        else:
            train_bpe(list(train[0]), self.cfg.vocab_size, folder / "source.json")
            train_bpe(list(train[1]), self.cfg.vocab_size, folder / "target.json")
            src_path, tgt_path = str(folder / "source.json"), str(folder / "target.json")
        n = self.cfg.max_len
        src_tok, tgt_tok = load_tokenizer(src_path), load_tokenizer(tgt_path)
        matches = {s: (self.memory(s == "test").pairs(self.sources[s], skip_self=s == "train")
                       if memory else None) for s in SPLITS}
        enc = Encoded(
            src={s: source_ids(src_tok, self.sources[s], matches[s], n) for s in SPLITS},
            tgt={s: [torch.tensor(e.ids[:n]) for e in tgt_tok.encode_batch(
                self.targets_text[s])] for s in SPLITS},
            src_tokenizer=src_path, tgt_tokenizer=tgt_path,
            src_vocab=int(src_tok.get_vocab_size()), tgt_vocab=int(tgt_tok.get_vocab_size()))
        tmp = folder / "encoded.pt.tmp"
        torch.save(enc.__dict__, tmp)
        tmp.replace(blob)
        return enc

    def for_trial(self, option: str | None, *, batch_size: int, num_workers: int,
                  **data_opts: Any) -> DataSpec:
        unknown = sorted(set(data_opts) - {"tokenizer", "memory"})
        if unknown:
            raise ConfigError("arch.<name>.data", "unknown translation data setting",
                              given=unknown, allowed=["memory", "tokenizer"])
        self.prepare()
        self.layout = str(data_opts.get("tokenizer", "shared"))
        self.use_memory = bool(data_opts.get("memory", False))
        self.encoded = self.encode(self.layout, self.use_memory)
        self.batch_size, self.num_workers = batch_size, num_workers
        return self._trial_spec()

    def _trial_spec(self) -> DataSpec:
        """The spec a model of the current encoding is built from and judged with."""
        enc = self._enc()
        spec = self.prepare()
        return replace(spec, vocab_size=enc.src_vocab, pad_id=PAD,
                       profile={**spec.profile, "target_vocab": enc.tgt_vocab,
                                "shared_vocab": enc.src_tokenizer == enc.tgt_tokenizer,
                                "target_tokenizer": enc.tgt_tokenizer})

    def _enc(self) -> Encoded:
        if self.encoded is None:
            self.encoded = self.encode(self.layout, self.use_memory)
        return self.encoded

    def width(self) -> int:
        """The fixed length of target rows: ``max_len`` subwords and the end."""
        return self.cfg.max_len + 1

    def targets(self, split: str) -> torch.Tensor:
        enc = self._enc()
        return self.collate(False)([(torch.zeros(1), t) for t in enc.tgt[split]])["target"]

    def split_dataset(self, split: str) -> Dataset[Any]:
        enc = self._enc()
        return _Pairs(enc.src[split], enc.tgt[split])

    def collate(self, train: bool) -> Any:
        return _Collate(self.width())

    def output_rule(self, scores: torch.Tensor, targets: torch.Tensor,
                    family_cls: Any) -> tuple[Any, str] | None:
        """The translation memory as a fallback (as translation tools use one): where a
        sentence's nearest training source is at least this similar, its translation (repaired
        where the sources differ by a placeholder or a glossary word) replaces the model's. The
        threshold with the best validation chrF, or none."""
        spec = self._trial_spec()

        def chrf(preds: torch.Tensor) -> float:
            return family_cls.monitor_value(preds.float(), targets, spec, "val_chrf")

        alone = chrf(scores)
        tried = {t: chrf(self.apply_output_rule(scores.long(), "val", t))
                 for t in FALLBACK_THRESHOLDS}
        best = max(tried, key=lambda t: (round(tried[t], 6), t))
        if tried[best] <= alone:
            self.fallback = None
            return None, (f"the translation memory's matches do not beat the model on "
                          f"validation at any similarity (chrF {alone:.2f}); the model answers")
        self.fallback = best
        share = float((self._matches("val")[1] >= best).mean())
        return best, (f"translation-memory matches with a similarity of at least {best:g} "
                      f"replace the model's output ({share:.0%} of validation sentences): "
                      f"chrF {tried[best]:.2f} on validation, the model alone {alone:.2f}")

    def _matches(self, split: str) -> tuple[list[str], np.ndarray]:
        """The translation memory's answer (its match's target, repaired) and similarity for
        each validation or test sentence."""
        return self.memory(split == "test").answers(self.sources[split])

    def apply_output_rule(self, preds: torch.Tensor, split: str, setting: Any) -> torch.Tensor:
        if setting is None:
            return preds
        matches, sims = self._matches(split)
        out = preds.long().clone()
        use = np.flatnonzero(sims >= float(setting))
        if len(use):
            out[use] = encode_targets([matches[i] for i in use], self._enc().tgt_tokenizer,
                                      out.shape[1])
        return out

    def baseline(self, split: str) -> tuple[str, torch.Tensor] | None:
        """Copying the source: what a translator must beat (names, placeholders and loan
        words are often the same in both languages)."""
        return "copy the source", encode_targets(self.sources[split],
                                                 self._enc().tgt_tokenizer, self.width())

    def profile_lines(self) -> list[tuple[str, str]]:
        prof = self.prepare().profile
        w = prof["source_words"]
        return [
            ("source", str(prof["source"]) + (" (no header: first line read as a pair, source "
                                              "then target)" if prof["headerless"] else "")),
            ("pairs", f"{prof['samples']} ({splits_text(prof['splits'])}); dropped "
             f"{prof['dropped_empty']} with an empty side, {prof['dropped_duplicate_sources']} "
             "repeated sources"),
            ("source words", f"p50 {w['p50']}, p90 {w['p90']}, p99 {w['p99']}; "
             f"{prof['identical_share']:.1%} of training pairs identical on both sides"),
            ("subwords", f"byte-level BPE, {self.cfg.vocab_size} per tokenizer, at most "
             f"{self.cfg.max_len} per sentence"),
        ]

    def serving_bundle(self, checkpoint: str, folder: Path) -> ServingBundle:
        import joblib
        from mlflow.types.schema import ColSpec, Schema

        enc = self._enc()
        codec = TranslationCodec(column=self.src_column, max_len=self.cfg.max_len,
                                 memory=self.use_memory, fallback=self.fallback)
        artifacts = {"source_tokenizer": enc.src_tokenizer, "target_tokenizer": enc.tgt_tokenizer}
        if self.use_memory or self.fallback is not None:
            joblib.dump(self.memory(pool=True), folder / "memory.joblib")
            artifacts["memory"] = str(folder / "memory.joblib")
        example = pd.DataFrame({self.src_column: self.sources["train"][:3]})
        output = pd.DataFrame({"translation": self.targets_text["train"][:3],
                               "truncated": [False] * min(3, len(self.sources["train"]))})
        schema = Schema([ColSpec("string", c, required=False)
                         for c in dict.fromkeys([self.src_column, TEXT_COLUMN])])
        return ServingBundle(codec=codec, artifacts=artifacts, input_example=example,
                             output_example=output, input_schema=schema)

    def extra_figures(self, preds: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """The test sources, references and outputs, the best and the worst 20 by sentence chrF,
        as a Markdown table (``tables/translations.md``)."""
        from sacrebleu.metrics import CHRF

        outputs = decode_ids(preds, self._enc().tgt_tokenizer)
        refs = self.targets_text["test"]
        chrf = CHRF()
        scores = [chrf.sentence_score(o, [r]).score for o, r in zip(outputs, refs, strict=True)]
        order = np.argsort(scores, kind="stable")
        rows = ["| chrF | source | reference | output |", "|---|---|---|---|"]

        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        picked = [*order[::-1][:20], *order[:20]] if len(order) > 40 else order[::-1]
        for i in picked:
            rows.append(f"| {scores[i]:.1f} | {cell(self.sources['test'][i])} | "
                        f"{cell(refs[i])} | {cell(outputs[i])} |")
        head = ("Test translations: the best 20 and the worst 20 by sentence chrF\n\n"
                if len(order) > 40 else "Test translations by sentence chrF\n\n")
        return {"tables/translations.md": head + "\n".join(rows) + "\n"}


class TranslationCodec(Codec):
    """The served translator's side: a column of sentences in (the training's source column,
    or ``text``, or the only column), subword ids by the training source tokenizer (and, for a
    model trained with the translation memory, its match from the training pairs, artifact
    ``memory``); sentences out by the target tokenizer, in ``translation`` (or, where the
    output rule chose a similarity ``fallback``, the memory match's translation, repaired, for
    sentences at least that similar to a training source), and ``truncated`` where a source was longer than
    the model reads (it is translated from its first ``max_len`` subwords)."""

    def __init__(self, *, column: str, max_len: int, memory: bool = False,
                 fallback: float | None = None) -> None:
        self.class_names: list[str] = []
        self.column = column
        self.max_len = max_len
        self.memory = memory
        self.fallback = fallback
        self.source_path = ""
        self.target_path = ""
        self.store: Memory | None = None

    def load(self, artifacts: dict[str, str]) -> None:
        self.source_path = artifacts["source_tokenizer"]
        self.target_path = artifacts["target_tokenizer"]
        if self.memory or self.fallback is not None:
            import joblib

            self.store = joblib.load(artifacts["memory"])

    def encode(self, frame: pd.DataFrame) -> tuple[list[Batch], Any]:
        column = first_present(frame, [self.column, TEXT_COLUMN], "sentence")
        texts = ["" if pd.isna(x) else str(x) for x in frame[column].tolist()]
        tok = load_tokenizer(self.source_path)
        cut = [len(e.ids) > self.max_len for e in tok.encode_batch(texts)]
        found: list[tuple[str, str]] = []
        fallback: list[str | None] = [None] * len(texts)
        if self.store is not None and texts:
            index, sims = self.store.search(texts)
            found = [(self.store.sources[i], self.store.targets[i]) for i in index]
            if self.fallback is not None:
                fallback = [self.store.repair(t, *m) if s >= self.fallback else None
                            for t, m, s in zip(texts, found, sims, strict=True)]
        ids = source_ids(tok, texts, found if self.memory else None, self.max_len)
        batches = []
        for i in range(0, len(ids), 32):
            src, mask = pad_sources(ids[i : i + 32])
            batches.append({"src": src, "src_mask": mask})
        return batches, (cut, fallback)

    def decode(self, outputs: torch.Tensor, keys: Any, params: dict[str, Any] | None
               ) -> pd.DataFrame:
        cut, fallback = keys if keys is not None else ([], [])
        texts = decode_ids(outputs, self.target_path) if len(outputs) else []
        texts = [f if f is not None else t for t, f in zip(texts, fallback, strict=True)]
        return pd.DataFrame({"translation": texts, "truncated": list(cut)})
