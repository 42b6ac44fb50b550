"""ONNX export: checked against PyTorch with onnxruntime; what cannot export says why in a line."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from torch import nn

from archselect.export import export_onnx


class MeanOfEmbeddings(nn.Module):
    """Token ids and their mask in, class scores out (as the text row's baseline)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16, padding_idx=0)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1))


def test_token_inputs_export_with_dynamic_batch_and_length(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MeanOfEmbeddings().eval()
    ids = torch.randint(1, 50, (6, 12))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool)}
    done = export_onnx(model, inputs, tmp_path / "m.onnx", tolerance=1e-4)
    assert done.input_names == ["input_ids", "attention_mask"] and done.max_abs_diff < 1e-4
    signature = done.signature()
    assert [t.shape for t in signature.inputs.inputs] == [(-1, -1), (-1, -1)]
    assert signature.outputs.inputs[0].shape == (-1, 3)
    other = torch.randint(1, 50, (2, 20))  # another batch size and another length
    mask = torch.ones_like(other, dtype=torch.bool)
    got = ort.InferenceSession(str(done.path)).run(
        None, {"input_ids": other.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.as_tensor(got), model(other, mask), atol=1e-4)


class TokenEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(input_ids)).mean(1))


def test_a_graph_that_fixes_the_token_length_is_refused_in_one_line(tmp_path: Path) -> None:
    # nn.MultiheadAttention under the TorchScript exporter keeps the traced length: the file
    # would fail on other lengths, so it is not handed on.
    with pytest.raises(RuntimeError, match=r"keeps the token length it was traced with") as info:
        export_onnx(TokenEncoder().eval(), {"input_ids": torch.randint(0, 50, (4, 10))},
                    tmp_path / "m.onnx", tolerance=1e-4)
    assert "\n" not in str(info.value)
    assert torch.backends.mha.get_fastpath_enabled()  # restored after the export


class Spectrum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x).abs()


def test_a_model_that_cannot_export_says_which_operator_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"torch.onnx.export failed .*'aten::fft_rfft'") as info:
        export_onnx(Spectrum(), {"x": torch.randn(4, 8)}, tmp_path / "m.onnx", tolerance=1e-4)
    assert "\n" not in str(info.value)
