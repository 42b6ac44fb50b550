"""Encoder-decoders for translation. The contract (input kind ``pairs``):

- ``forward(src, src_mask, tgt_in)``: teacher forcing, log-probabilities ``[B, L, V]`` of the
  next target subword at every position of ``tgt_in`` (``[BOS] + target``);
- ``forward(src, src_mask)`` (or ``generate``): the translation's ids ``[B, max_len + 1]`` by
  beam search (``beam_size``; 1: greedy), ending at EOS and padded with 0.

A model supplies ``start`` (encode the source into a decoding state) and ``step`` (the next
subword's log-probabilities from the state and the last subword); the beam search here drives
both. Ids: 0 pads, 1 begins, 2 ends (``archselect.data.pairs``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from archselect.architectures.base import architectures
from archselect.config.errors import ConfigError
from archselect.data.base import DataSpec

PAD, BOS, EOS = 0, 1, 2

#: why an encoder-decoder is not exported to ONNX (the registry's ``no_onnx``)
NO_ONNX = ("encoder-decoders are not exported: translating is a loop over output steps (beam "
           "search) whose length depends on the sentence; the traced graph would keep one length")

State = dict[str, torch.Tensor]


class Seq2Seq(nn.Module):
    """Teacher forcing and beam search around a model's ``start`` and ``step``."""

    def __init__(self, width: int, beam_size: int, length_penalty: float,
                 max_length_ratio: float) -> None:
        super().__init__()
        self.width = width  # target rows: max_len subwords and the end
        self.beam_size = beam_size
        self.length_penalty = length_penalty
        self.max_length_ratio = max_length_ratio

    def start(self, src: torch.Tensor, src_mask: torch.Tensor) -> State:
        raise NotImplementedError

    def step(self, state: State, last: torch.Tensor) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def teacher(self, src: torch.Tensor, src_mask: torch.Tensor,
                tgt_in: torch.Tensor) -> torch.Tensor:
        state = self.start(src, src_mask)
        out = []
        for t in range(tgt_in.shape[1]):
            logp, state = self.step(state, tgt_in[:, t])
            out.append(logp)
        return torch.stack(out, 1)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor,
                tgt_in: torch.Tensor | None = None) -> torch.Tensor:
        if tgt_in is not None:
            return self.teacher(src, src_mask, tgt_in)
        return self.generate(src, src_mask)

    @torch.no_grad()
    def generate(self, src: torch.Tensor, src_mask: torch.Tensor,
                 beam_size: int | None = None) -> torch.Tensor:
        """Beam search with a GNMT length penalty (((5 + length) / 6) ** length_penalty); a
        translation ends by EOS or after ``max_length_ratio`` times its source's length plus 4
        subwords (at most ``width - 1``)."""
        k = max(1, beam_size or self.beam_size)
        b, width = src.shape[0], self.width
        device = src.device
        state = {n: t.repeat_interleave(k, 0) for n, t in self.start(src, src_mask).items()}
        limit = (src_mask.sum(1).float() * self.max_length_ratio).ceil().long() + 4
        limit = limit.clamp(max=width - 1).repeat_interleave(k)
        scores = torch.full((b, k), float("-inf"), device=device)
        scores[:, 0] = 0.0
        scores = scores.view(-1)
        seqs = torch.full((b * k, width), PAD, dtype=torch.long, device=device)
        last = torch.full((b * k,), BOS, dtype=torch.long, device=device)
        done = torch.zeros(b * k, dtype=torch.bool, device=device)
        lengths = torch.zeros(b * k, device=device)
        base = (torch.arange(b, device=device) * k)[:, None]
        for t in range(width):
            logp, state = self.step(state, last)
            logp = logp.float()
            v = logp.shape[-1]
            only = torch.full((v,), float("-inf"), device=device)
            logp = torch.where(done[:, None], only.index_fill(0, torch.tensor([PAD], device=device),
                                                              0.0), logp)
            force = ~done & (t >= limit)
            logp = torch.where(force[:, None], only.index_fill(0, torch.tensor([EOS], device=device),
                                                               0.0), logp)
            top, index = (scores[:, None] + logp).view(b, k * v).topk(k, dim=1)
            origin = (base + index // v).view(-1)
            token = (index % v).view(-1)
            state = {n: s[origin] for n, s in state.items()}
            seqs, done, lengths = seqs[origin], done[origin], lengths[origin]
            seqs[:, t] = torch.where(done, torch.full_like(token, PAD), token)
            lengths = lengths + (~done).float()
            done = done | (token == EOS)
            scores, last = top.view(-1), token
            if bool(done.all()):
                break
        norm = scores / (((5.0 + lengths) / 6.0) ** self.length_penalty)
        best = norm.view(b, k).argmax(1)
        return seqs.view(b, k, width)[torch.arange(b, device=device), best]


class LSTMAttention(Seq2Seq):
    """A bidirectional LSTM encoder and an LSTM decoder with Luong (general) attention (Luong et
    al. 2015, without input feeding, so that teacher forcing runs the decoder over the whole
    target at once); with ``copy`` (a shared vocabulary), a pointer-generator (See et al. 2017):
    the next subword is generated or copied from the source, mixed by a learned gate, so names,
    placeholders and markup that a translation keeps pass through."""

    def __init__(self, src_vocab: int, tgt_vocab: int, shared: bool, embed_dim: int,
                 hidden_size: int, num_layers: int, dropout: float, copy: bool,
                 **decoding: Any) -> None:
        super().__init__(**decoding)
        h = hidden_size
        self.src_embed = nn.Embedding(src_vocab, embed_dim, padding_idx=PAD)
        self.tgt_embed = (self.src_embed if shared else
                          nn.Embedding(tgt_vocab, embed_dim, padding_idx=PAD))
        self.encoder = nn.LSTM(embed_dim, h, num_layers, batch_first=True, bidirectional=True,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.bridge = nn.Linear(2 * h, h)
        self.decoder = nn.LSTM(embed_dim, h, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.keys = nn.Linear(2 * h, h, bias=False)
        self.combine = nn.Linear(3 * h, h)
        self.out = nn.Linear(h, tgt_vocab)
        self.copy = copy and shared
        self.gate = nn.Linear(3 * h + embed_dim, 1) if self.copy else None
        self.drop = nn.Dropout(dropout)
        self.layers, self.hidden = num_layers, h

    def start(self, src: torch.Tensor, src_mask: torch.Tensor) -> State:
        lengths = src_mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.drop(self.src_embed(src)), lengths,
                                                   batch_first=True, enforce_sorted=False)
        out, (h_n, c_n) = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                     total_length=src.shape[1])
        b, n = src.shape[0], self.layers

        def bridged(s: torch.Tensor) -> torch.Tensor:  # [2n, B, H] -> [B, n, H]
            both = s.view(n, 2, b, self.hidden).permute(2, 0, 1, 3).reshape(b, n, 2 * self.hidden)
            return torch.tanh(self.bridge(both))

        return {"memory": memory, "keys": self.keys(memory), "mask": src_mask, "src": src,
                "h": bridged(h_n), "c": bridged(c_n)}

    def _output(self, q: torch.Tensor, x: torch.Tensor, state: State) -> torch.Tensor:
        """Log-probabilities [B, T, V] from decoder states ``q`` [B, T, H] and the embedded
        inputs ``x`` [B, T, E]: attention over the source, then generate or copy."""
        score = torch.bmm(q, state["keys"].transpose(1, 2))  # [B, T, S]
        score = score.masked_fill(~state["mask"][:, None, :], float("-inf"))
        attn = torch.softmax(score, -1)
        context = torch.bmm(attn, state["memory"])
        feed = torch.tanh(self.combine(torch.cat([context, q], -1)))
        logits = self.out(self.drop(feed)).float()
        if self.gate is None:
            return torch.log_softmax(logits, -1)
        p_gen = torch.sigmoid(self.gate(torch.cat([context, q, x], -1))).float()
        src = state["src"][:, None, :].expand(-1, q.shape[1], -1)
        dist = (p_gen * torch.softmax(logits, -1)).scatter_add(2, src, (1 - p_gen) * attn.float())
        return torch.log(dist.clamp_min(1e-12))

    def _hc(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        return (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())

    def teacher(self, src: torch.Tensor, src_mask: torch.Tensor,
                tgt_in: torch.Tensor) -> torch.Tensor:
        state = self.start(src, src_mask)
        x = self.drop(self.tgt_embed(tgt_in))
        q, _ = self.decoder(x, self._hc(state))
        return self._output(q, x, state)

    def step(self, state: State, last: torch.Tensor) -> tuple[torch.Tensor, State]:
        x = self.drop(self.tgt_embed(last))[:, None]
        q, (h, c) = self.decoder(x, self._hc(state))
        new = dict(state)
        new.update(h=h.transpose(0, 1), c=c.transpose(0, 1))
        return self._output(q, x, state)[:, 0], new


def sinusoids(n: int, d: int) -> torch.Tensor:
    """Sinusoidal positions [n, d] (Vaswani et al. 2017)."""
    position = torch.arange(n).float()[:, None]
    freq = torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)[:, : d // 2]
    return pe


class TransformerSeq2Seq(Seq2Seq):
    """``torch.nn`` Transformer encoder-decoder (pre-norm, sinusoidal positions); the output
    layer tied to the target embeddings, and with ``share_embeddings`` (a shared vocabulary)
    one embedding table for both sides."""

    positions: torch.Tensor

    def __init__(self, src_vocab: int, tgt_vocab: int, shared: bool, d_model: int, nhead: int,
                 num_layers: int, dim_feedforward: int, dropout: float, share_embeddings: bool,
                 **decoding: Any) -> None:
        super().__init__(**decoding)
        self.src_embed = nn.Embedding(src_vocab, d_model, padding_idx=PAD)
        self.tgt_embed = (self.src_embed if shared and share_embeddings else
                          nn.Embedding(tgt_vocab, d_model, padding_idx=PAD))
        enc = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                         batch_first=True, norm_first=True)
        dec = nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout,
                                         batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, num_layers, norm=nn.LayerNorm(d_model),
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, num_layers, norm=nn.LayerNorm(d_model))
        for table in {self.src_embed, self.tgt_embed}:
            # N(0, 1/d): the tied output layer starts with logits of unit scale (the default
            # N(0, 1) gives logits ~sqrt(d) times too large; the first loss is then ~100)
            nn.init.normal_(table.weight, std=d_model ** -0.5)
            with torch.no_grad():
                table.weight[PAD].zero_()
        self.out = nn.Linear(d_model, tgt_vocab, bias=False)
        self.out.weight = self.tgt_embed.weight
        self.register_buffer("positions", sinusoids(max(self.width, 512) + 1, d_model),
                             persistent=False)
        self.scale = math.sqrt(d_model)
        self.drop = nn.Dropout(dropout)

    def _embed(self, table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        return self.drop(table(ids) * self.scale + self.positions[: ids.shape[1]])

    def _decode(self, memory: torch.Tensor, src_mask: torch.Tensor,
                prefix: torch.Tensor) -> torch.Tensor:
        n = prefix.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=prefix.device).triu(1)
        h = self.decoder(self._embed(self.tgt_embed, prefix), memory, tgt_mask=causal,
                         tgt_key_padding_mask=prefix == PAD,
                         memory_key_padding_mask=~src_mask)
        return torch.log_softmax(self.out(h).float(), -1)

    def start(self, src: torch.Tensor, src_mask: torch.Tensor) -> State:
        memory = self.encoder(self._embed(self.src_embed, src), src_key_padding_mask=~src_mask)
        return {"memory": memory, "mask": src_mask,
                "prefix": torch.zeros(src.shape[0], 0, dtype=torch.long, device=src.device)}

    def teacher(self, src: torch.Tensor, src_mask: torch.Tensor,
                tgt_in: torch.Tensor) -> torch.Tensor:
        state = self.start(src, src_mask)
        return self._decode(state["memory"], src_mask, tgt_in)

    def step(self, state: State, last: torch.Tensor) -> tuple[torch.Tensor, State]:
        prefix = torch.cat([state["prefix"], last[:, None]], 1)
        logp = self._decode(state["memory"], state["mask"], prefix)[:, -1]
        new = dict(state)
        new["prefix"] = prefix
        return logp, new


def _vocab(spec: DataSpec, key: str) -> tuple[int, int, bool, int]:
    if spec.kind != "text_pairs":
        raise ConfigError(key, "encoder-decoders need sentence pairs", given=spec.kind,
                          fix="use it in task=machine_translation")
    prof = spec.profile
    return (spec.vocab_size, int(prof.get("target_vocab", spec.vocab_size)),
            bool(prof.get("shared_vocab", True)), spec.max_len + 1)


def _decoding(key: str, width: int, beam_size: int, length_penalty: float,
              max_length_ratio: float) -> dict[str, Any]:
    if beam_size < 1:
        raise ConfigError(f"{key}.beam_size", "must be at least 1 (1: greedy)", given=beam_size)
    if max_length_ratio <= 0:
        raise ConfigError(f"{key}.max_length_ratio", "must be positive", given=max_length_ratio)
    return {"width": width, "beam_size": beam_size, "length_penalty": length_penalty,
            "max_length_ratio": max_length_ratio}


@architectures.register("lstm_attention", input="pairs", no_onnx=NO_ONNX)
def lstm_attention(spec: DataSpec, *, embed_dim: int, hidden_size: int, num_layers: int,
                   dropout: float, copy: bool, beam_size: int, length_penalty: float,
                   max_length_ratio: float) -> nn.Module:
    """Bidirectional LSTM encoder, attentional LSTM decoder, optional copying (pointer-
    generator; with a shared vocabulary)."""
    src, tgt, shared, width = _vocab(spec, "arch.lstm_attention")
    return LSTMAttention(src, tgt, shared, embed_dim, hidden_size, num_layers, dropout, copy,
                         **_decoding("arch.lstm_attention.model", width, beam_size,
                                     length_penalty, max_length_ratio))


@architectures.register("transformer_seq2seq", input="pairs", no_onnx=NO_ONNX)
def transformer_seq2seq(spec: DataSpec, *, d_model: int, nhead: int, num_layers: int,
                        dim_feedforward: int, dropout: float, share_embeddings: bool,
                        beam_size: int, length_penalty: float,
                        max_length_ratio: float) -> nn.Module:
    """Transformer encoder-decoder (pre-norm), tied output layer, optionally one embedding
    table for both languages."""
    src, tgt, shared, width = _vocab(spec, "arch.transformer_seq2seq")
    if d_model % nhead or d_model % 2:
        raise ConfigError("arch.transformer_seq2seq.model.d_model", "must be even and divisible "
                          "by nhead", given={"d_model": d_model, "nhead": nhead})
    return TransformerSeq2Seq(src, tgt, shared, d_model, nhead, num_layers, dim_feedforward,
                              dropout, share_embeddings,
                              **_decoding("arch.transformer_seq2seq.model", width, beam_size,
                                          length_penalty, max_length_ratio))
