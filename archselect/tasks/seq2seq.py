"""The sequence-to-sequence family (translation): teacher-forced cross-entropy (label smoothing
searched) on the decoder's log-probabilities; chrF and BLEU from sacrebleu on decoded sentences.

A model's outputs: with ``tgt_in`` (training), log-probabilities ``[B, L, V]``; without (greedy
or beam search), the target ids ``[B, L]`` (ending at EOS, padded with 0). Targets are id rows of
the same fixed length, so predictions of a split concatenate like any other family's. Sentences
come back through the target tokenizer the data kind names in the spec's profile.
"""

from __future__ import annotations

from typing import Any

import torch

from archselect.data.base import DataSpec
from archselect.tasks.base import FamilyModule, families

#: validation sentences decoded (greedily) each epoch for chrF and BLEU
VAL_SAMPLE = 400


def trimmed(batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The batch's decoder input and target cut to its longest target (the fixed width is for
    stored predictions; teacher forcing need not run over the padding)."""
    target = batch["target"]
    n = max(int((target != 0).sum(1).max()), 1)
    inputs = dict(batch["inputs"])
    inputs["tgt_in"] = inputs["tgt_in"][:, :n]
    return inputs, target[:, :n]


def sentence_scores(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec
                    ) -> dict[str, float]:
    """Corpus chrF and BLEU (sacrebleu, default settings) of predicted id rows against target
    id rows, both decoded by the target tokenizer."""
    from sacrebleu.metrics import BLEU, CHRF

    from archselect.data.pairs import decode_ids

    path = str(spec.profile["target_tokenizer"])
    hyps, refs = decode_ids(preds, path), decode_ids(targets, path)
    if not hyps:
        return {"chrf": 0.0, "bleu": 0.0}
    return {"chrf": float(CHRF().corpus_score(hyps, [refs]).score),
            "bleu": float(BLEU().corpus_score(hyps, [refs]).score)}


def smoothed_nll(logp: torch.Tensor, target: torch.Tensor, smoothing: float,
                 pad: int = 0) -> torch.Tensor:
    """Mean token cross-entropy of log-probabilities ``[B, L, V]``, label smoothing spreading
    ``smoothing`` of the mass over the vocabulary; padding left out."""
    keep = target != pad
    logp, target = logp[keep], target[keep]
    nll = -logp.gather(-1, target[:, None])[:, 0]
    if smoothing > 0:
        nll = (1 - smoothing) * nll - smoothing * logp.mean(-1)
    return nll.mean()


@families.register("seq2seq")
class Seq2SeqModule(FamilyModule):
    """Any registered encoder-decoder (see ``archselect.architectures.seq2seq``), trained with
    teacher forcing; validated by the teacher-forced loss and, on up to 400 validation
    sentences decoded greedily each epoch, by chrF and BLEU (see FamilyModule for the args)."""

    target_kind = "sequence"
    test_metric = "chrf"
    test_direction = "maximize"
    #: sentences do not average across models: the final model is one trial
    ensembles = False

    def __init__(self, arch: str, arch_kwargs: dict[str, Any], optim: dict[str, Any],
                 spec: dict[str, Any], max_epochs: int,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(arch, arch_kwargs, optim, spec, max_epochs, data)
        self.smoothing = float(optim.get("label_smoothing", 0.0))
        self.decoded: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        inputs, target = trimmed(batch)
        loss = smoothed_nll(self(**inputs).float(), target, self.smoothing)
        self.check_loss(loss)
        self.add_means(len(target), train_loss=loss)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        inputs, short = trimmed(batch)
        self.add_means(len(short), val_loss=smoothed_nll(self(**inputs).float(), short, 0.0))
        target = batch["target"]
        if sum(len(t) for _, t in self.decoded) < VAL_SAMPLE:
            ids = self.model.generate(inputs["src"], inputs["src_mask"],  # type: ignore[operator]
                                      beam_size=1)
            self.decoded.append((ids.cpu(), target.cpu()))

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.decoded:
            return
        found = sentence_scores(torch.cat([p for p, _ in self.decoded]),
                                torch.cat([t for _, t in self.decoded]), self.spec)
        self.decoded = []
        self.log("val_chrf", found["chrf"])
        self.log("val_bleu", found["bleu"])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        inputs = {k: v for k, v in batch["inputs"].items() if k != "tgt_in"}
        ids = self(**inputs)
        return {"preds": ids, "targets": batch["target"], "scores": ids.float()}

    @staticmethod
    def decode(outputs: torch.Tensor) -> torch.Tensor:
        return outputs.long()

    @staticmethod
    def evaluate(preds: torch.Tensor, targets: torch.Tensor, spec: DataSpec) -> dict[str, float]:
        return sentence_scores(preds, targets, spec)

    @staticmethod
    def monitor_value(scores: torch.Tensor, targets: torch.Tensor, spec: DataSpec,
                      monitor: str) -> float:
        if monitor not in ("val_chrf", "val_bleu"):
            raise ValueError(f"task.monitor: {monitor!r} cannot be computed from translations "
                             "(val_chrf, val_bleu)")
        return sentence_scores(scores.long(), targets, spec)[monitor.removeprefix("val_")]

    @staticmethod
    def trivial(train_targets: torch.Tensor, n: int, spec: DataSpec) -> tuple[str, torch.Tensor]:
        raise NotImplementedError("translation takes its baseline (copy) from the data kind")
