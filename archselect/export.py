"""ONNX export of the best model, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

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
    boolean inputs). Feature widths and image sizes stay fixed."""
    axes: dict[str, dict[int, str]] = {"output": {0: "batch"}}
    for name, t in inputs.items():
        axes[name] = {0: "batch"}
        if t.dim() == 2 and not torch.is_floating_point(t):
            axes[name][1] = "tokens"
    return axes


def export_onnx(model: nn.Module, inputs: dict[str, torch.Tensor], path: Path,
                tolerance: float) -> OnnxExport:
    """Export ``model`` (called as ``model(**inputs)``) to ``path`` and check it.

    onnxruntime runs the file on ``inputs`` and on their first row alone (a different batch
    size); both must match PyTorch within ``tolerance`` (absolute).

    Raises:
        RuntimeError: the export failed or its outputs differ from PyTorch's.
    """
    import onnxruntime as ort

    model = model.to("cpu").eval()
    inputs = {k: v.to("cpu") for k, v in inputs.items()}
    names = list(inputs)
    wrapper = _Positional(model, names).eval()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        try:
            # dynamo=False: the TorchScript exporter needs no onnxscript and handles every
            # architecture here; the dynamo exporter would add a dependency for the same file.
            torch.onnx.export(wrapper, tuple(inputs.values()), str(path), input_names=names,
                              output_names=["output"], dynamic_axes=_dynamic_axes(inputs),
                              dynamo=False)
        except Exception as exc:
            raise RuntimeError(f"torch.onnx.export failed ({type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0][:200]})") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        worst = 0.0
        for batch in (inputs, {k: v[:1] for k, v in inputs.items()}):
            expected = wrapper(*batch.values()).float().numpy()
            got = session.run(None, {k: v.numpy() for k, v in batch.items()})[0]
            if got.shape != expected.shape:
                raise RuntimeError(f"ONNX output shape {got.shape} differs from PyTorch's "
                                   f"{expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= tolerance:
        raise RuntimeError(f"ONNX outputs differ from PyTorch's by up to {worst:.2e}, more than "
                           f"export.onnx_tolerance={tolerance:g}")
    example = {k: v[:2].numpy() for k, v in inputs.items()}
    return OnnxExport(path=path, input_names=names, max_abs_diff=worst, example=example,
                      output=wrapper(*(torch.as_tensor(v) for v in example.values())).detach().numpy())
