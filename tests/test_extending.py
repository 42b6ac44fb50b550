"""Adding to archselect costs what CONTRIBUTING.md says: a new architecture is one builder
function and one YAML file (plus its name in a table row); nothing else lists it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import compose_cfg
from torch import nn

from archselect.architectures import architectures
from archselect.config.schema import CONF_DIR, arch_configs
from archselect.data.base import DataSpec
from archselect.run import run

TOY_YAML = """\
toy_linear:
  description: one linear layer over the features, its inputs scaled
  why: "a toy: {n_features} features straight to the classes"
  model:
    scale: 1.0
  optim:
    lr: 0.05
    weight_decay: 0.0
    batch_size: 16
  space:
    scale: {type: float, low: 0.5, high: 2.0}
"""


class _Scaled(nn.Module):
    def __init__(self, n_in: int, n_out: int, scale: float) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1) * self.scale)


@pytest.fixture
def toy_architecture(tmp_path: Path) -> Iterator[Path]:
    """A builder registered for the test, and its YAML in a config folder of its own."""

    @architectures.register("toy_linear", input="features")
    def toy_linear(spec: DataSpec, *, scale: float) -> nn.Module:
        return _Scaled(spec.n_features, spec.num_classes, scale)

    folder = tmp_path / "my_conf"
    (folder / "arch").mkdir(parents=True)
    (folder / "arch" / "toy_linear.yaml").write_text(TOY_YAML)
    try:
        yield folder
    finally:
        architectures.unregister("toy_linear")


@pytest.mark.study
def test_a_toy_architecture_from_a_function_and_a_yaml_runs_a_study(toy_architecture: Path,
                                                                    tmp_path: Path) -> None:
    cfg = compose_cfg([
        "task=tabular_classification", "data=iris", "search.n_trials=1", "search.max_epochs=30",
        "search.patience=30",
        # An architecture kept outside the package: its folder on the search path, and its file
        # added to every packaged one; then its name in the table's row.
        f"hydra.searchpath=[file://{toy_architecture}]", "arch=[all,toy_linear]",
        "selector.table.tabular_classification.candidates=[toy_linear]",
    ], tmp_path / "runs")
    result = run(cfg)
    assert [c.name for c in result.selection.candidates] == ["toy_linear"]
    assert result.selection.candidates[0].reasons[0] == (
        "baseline (start simple): a toy: 4 features straight to the classes")
    assert result.outcome is not None and result.outcome.best is not None
    assert result.outcome.best.arch == "toy_linear"
    # Iris is separable enough that one linear layer beats the majority class by far.
    assert result.test_metrics["accuracy"] > result.baseline_metrics["accuracy"] + 0.3
    assert result.model_version == 1


def test_every_file_of_an_arch_folder_is_an_architecture(tmp_path: Path) -> None:
    (tmp_path / "toy_linear.yaml").write_text(TOY_YAML)
    assert list(arch_configs(tmp_path)) == ["toy_linear"]
    packaged = sorted(p.stem for p in (CONF_DIR / "arch").glob("*.yaml"))
    assert sorted(arch_configs()) == packaged
    # ...and every packaged file has its builder: the registry finds them by itself.
    assert set(packaged) <= set(architectures.names())


def test_a_file_whose_key_is_not_its_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "toy.yaml").write_text(TOY_YAML)
    with pytest.raises(ValueError, match=r"toy\.yaml must hold one top-level key, 'toy'"):
        arch_configs(tmp_path)
