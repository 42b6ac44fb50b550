"""ONNX export of the best model, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class OnnxExport:
    """What one export did: the file, the input names and the largest output difference."""

    path: Path
    input_names: list[str]
    max_abs_diff: float
    example: dict[str, np.ndarray]
    output: np.ndarray
    dynamic_axes: dict[str, dict[int, str]]

    def signature(self) -> Any:
        """The MLflow signature of the file: -1 on every axis that varies (batch, tokens)."""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        def spec(name: str, array: np.ndarray) -> TensorSpec:
            axes = self.dynamic_axes.get(name, {})
            shape = tuple(-1 if i in axes else int(n) for i, n in enumerate(array.shape))
            return TensorSpec(array.dtype, shape, name)

        return ModelSignature(Schema([spec(k, v) for k, v in self.example.items()]),
                              Schema([spec("output", self.output)]))


SHORTER = "a shorter token length"


class _Positional(nn.Module):
    """The model called as ``model(**inputs)``, seen by the exporter as positional tensors."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True)))


def _dynamic_axes(inputs: dict[str, torch.Tensor]) -> dict[str, dict[int, str]]:
    """Batch size varies for every input; so does the length of token sequences (2-D integer or
    boolean inputs, and a float input of their shape: per-token weights). Feature widths and
    image sizes stay fixed."""
    axes: dict[str, dict[int, str]] = {"output": {0: "batch"}}
    token_shapes = {tuple(t.shape) for t in inputs.values()
                    if t.dim() == 2 and not torch.is_floating_point(t)}
    for name, t in inputs.items():
        axes[name] = {0: "batch"}
        if t.dim() == 2 and tuple(t.shape) in token_shapes:
            axes[name][1] = "tokens"
    return axes


def _check_batches(inputs: dict[str, torch.Tensor], axes: dict[str, dict[int, str]]
                   ) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """The batches the file must reproduce: the test batch, one row (another batch size) and,
    where token length varies, the batch cut to half its length (another length)."""
    out = [("the test batch", inputs), ("a single row", {k: v[:1] for k, v in inputs.items()})]
    tokens = [k for k in inputs if 1 in axes.get(k, {})]
    if tokens:
        half = max(int(inputs[tokens[0]].shape[1]) // 2, 1)
        out.append((SHORTER,
                    {k: v[:, :half] if k in tokens else v for k, v in inputs.items()}))
    return out


def export_onnx(model: nn.Module, inputs: dict[str, torch.Tensor], path: Path,
                tolerance: float) -> OnnxExport:
    """Export ``model`` (called as ``model(**inputs)``) to ``path`` and check it.

    onnxruntime runs the file on ``inputs``, on their first row alone (another batch size) and,
    for token inputs, on a shorter length; each must match PyTorch within ``tolerance``
    (absolute).

    Raises:
        RuntimeError: the export failed or its outputs differ from PyTorch's.
    """
    model = model.to("cpu").eval()
    inputs = {k: v.to("cpu") for k, v in inputs.items()}
    names = list(inputs)
    wrapper = _Positional(model, names).eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # The fused inference kernel of nn.TransformerEncoderLayer has no ONNX form; its plain
    # computation (the same numbers) has.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return _export_and_check(wrapper, inputs, names, path, tolerance)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _export_and_check(wrapper: nn.Module, inputs: dict[str, torch.Tensor], names: list[str],
                      path: Path, tolerance: float) -> OnnxExport:
    import onnxruntime as ort

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        try:
            # dynamo=False: the TorchScript exporter needs no onnxscript and handles every
            # architecture here; the dynamo exporter would add a dependency for the same file.
            # The exporter prints the whole graph when it fails: the reason below is the line.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                torch.onnx.export(wrapper, tuple(inputs.values()), str(path), input_names=names,
                                  output_names=["output"], dynamic_axes=_dynamic_axes(inputs),
                                  dynamo=False)
        except Exception as exc:
            raise RuntimeError(f"torch.onnx.export failed ({type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0][:200]})") from None
        worst = 0.0
        for what, batch in _check_batches(inputs, _dynamic_axes(inputs)):
            expected = wrapper(*batch.values()).float().numpy()
            try:
                options = ort.SessionOptions()
                options.log_severity_level = 4  # its own error log would repeat the line below
                session = ort.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
                got = session.run(None, {k: v.numpy() for k, v in batch.items()})[0]
            except Exception as exc:  # onnxruntime raises its own types
                if what == SHORTER:
                    raise RuntimeError("the exported graph keeps the token length it was traced "
                                       "with: onnxruntime fails on a shorter one") from None
                raise RuntimeError(f"onnxruntime cannot run the exported file on {what} "
                                   f"({type(exc).__name__}: "
                                   f"{str(exc).strip().splitlines()[0][:160]})") from None
            if got.shape != expected.shape:
                raise RuntimeError(f"ONNX output shape {got.shape} differs from PyTorch's "
                                   f"{expected.shape} on {what}")
            worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= tolerance:
        raise RuntimeError(f"ONNX outputs differ from PyTorch's by up to {worst:.2e}, more than "
                           f"export.onnx_tolerance={tolerance:g}")
    example = {k: v[:2].numpy() for k, v in inputs.items()}
    return OnnxExport(path=path, input_names=names, max_abs_diff=worst, example=example,
                      output=wrapper(*(torch.as_tensor(v) for v in example.values())).detach().numpy(),
                      dynamic_axes=_dynamic_axes(inputs))
