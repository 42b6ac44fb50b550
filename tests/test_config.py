from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from archselect.config.compose import precheck
from archselect.config.errors import ConfigError
from archselect.config.validate import check_row
from archselect.run import run

CONF = Path(__file__).resolve().parents[1] / "archselect" / "conf"
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))


def test_conf_link_points_at_the_packaged_conf() -> None:
    top = Path(__file__).resolve().parents[1] / "conf"
    assert top.resolve() == CONF


@pytest.mark.parametrize("task", TASKS)
def test_every_task_composes_and_is_in_the_table(make_cfg, task: str) -> None:
    cfg = make_cfg(f"task={task}", cheap=task == "text_classification")
    assert cfg.task.name == task
    assert task in cfg.selector.table


@pytest.mark.parametrize("data", DATA)
def test_every_data_choice_composes(make_cfg, data: str) -> None:
    cfg = make_cfg(f"data={data}",
                   "data.path=x" if data in ("csv", "jsonl", "image_folder") else "seed=1")
    assert cfg.data.source
    OmegaConf.to_container(cfg, resolve=True)


def test_table_declares_all_rows_of_the_design(make_cfg) -> None:
    table = make_cfg().selector.table
    expected = {"image_classification", "text_classification", "time_series_forecasting",
                "time_series_classification", "object_detection", "machine_translation",
                "image_generation", "audio_classification", "tabular_classification",
                "tabular_regression"}
    assert set(table) == expected
    assert set(TASKS) == expected
    for name, row in table.items():
        assert row.candidates, name


def test_available_rows_have_arch_configs_and_builders(make_cfg) -> None:
    from archselect.architectures import architectures

    cfg = make_cfg()
    for task, row in cfg.selector.table.items():
        if row.available:
            for cand in row.candidates:
                assert cand in cfg.arch, (task, cand)
                assert cand in architectures, (task, cand)


TABLE = OmegaConf.load(CONF / "selector" / "default.yaml").table
BUILT = sorted(name for name, row in TABLE.items() if row.available)


def test_rows_not_built_yet_fail_clearly(make_cfg) -> None:
    # Every row is built: one switched off in the table stands for a row not built yet.
    task, off = "audio_classification", "selector.table.audio_classification.available=false"
    built = [t for t in BUILT if t != task]
    msg = precheck([f"task={task}", off, "data.max_samples=10"])
    assert msg is not None and "not available yet" in msg
    cfg = make_cfg(f"task={task}", off, cheap=False)
    with pytest.raises(ConfigError, match=rf"task: task '{task}' is declared in the table but "
                       f"not available yet.*expected one of: {', '.join(built)}"):
        run(cfg)
    with pytest.raises(ConfigError):
        check_row(task, cfg.selector.table)


def test_misspelt_key_names_the_full_key_and_suggests() -> None:
    msg = precheck(["search.n_trails=3"])
    assert msg is not None
    assert msg.startswith("search.n_trails: unknown key")
    assert "did you mean search.n_trials?" in msg


@pytest.mark.parametrize(("override", "key"), [
    ("search.n_trials=many", "search.n_trials:"),
    ("arch.lstm.model=wide", "arch.lstm.model:"),
    ("arch.mlp.optim.lr=fast", "arch.mlp.optim.lr:"),
    ("selector.rules.small_data.min_train_samples=few", "selector.rules.small_data.min_train_samples:"),
])
def test_wrong_type_names_the_key(override: str, key: str) -> None:
    msg = precheck([override])
    assert msg is not None and msg.startswith(key), msg


@pytest.mark.parametrize(("override", "expected"), [
    ("arch.mlp.optim.lrr=0.1", "arch.mlp.optim.lrr: unknown key; expected one of: batch_size, "
     "label_smoothing, lr, optimizer, schedule, weight_decay (did you mean arch.mlp.optim.lr?)"),
    ("selector.rules.small_data.min_train_sample=9", "selector.rules.small_data.min_train_sample: "
     "unknown key"),
    ("selector.rules.few_window.drop=[]", "selector.rules.few_window: unknown key"),
])
def test_misspelt_arch_and_rule_keys_fail_in_one_line(override: str, expected: str) -> None:
    msg = precheck([override])
    assert msg is not None and msg.startswith(expected), msg


def test_unknown_group_choice_lists_options() -> None:
    msg = precheck(["task=text_clasification"])
    assert msg is not None
    assert "task: unknown choice 'text_clasification'" in msg
    assert "did you mean 'text_classification'" in msg


def test_export_switch_is_typed() -> None:
    msg = precheck(["export.onnx=maybe"])
    assert msg is not None and msg.startswith("export.onnx:")


def test_valid_overrides_pass_precheck(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("text,label\nfine,1\n")
    assert precheck(["search.n_trials=3", "data=csv", f"data.path={tmp_path / 'a.csv'}"]) is None
    # a candidate of another row of the same data kind: the selector decides (a rule may switch)
    assert precheck(["task=tabular_classification", "selector.candidates=[mlp,tabm]"]) is None


@pytest.mark.parametrize(("overrides", "expected"), [
    (["data=csv", "data.path=nope.csv"], "data.path: file not found; given 'nope.csv'"),
    (["task=image_classification", "data=image_folder", "data.path=no/photos"],
     "data.path: folder not found; given 'no/photos'"),
    (["task=image_classification", "selector.candidates=[resnt]"],
     "selector.candidates: unknown architecture 'resnt' for image_classification"),
    (["output=jsn"], "output: unknown output mode; given 'jsn'"),
    (["seed=-1"], "seed: must lie in 0.."),
])
def test_mistakes_are_answered_before_torch_lightning_or_mlflow_load(
        tmp_path: Path, overrides: list[str], expected: str) -> None:
    # A fresh interpreter: this one has torch loaded already.
    import json
    import subprocess
    import sys

    code = ("import json, sys\nfrom archselect.config.compose import precheck\n"
            f"line = precheck({overrides!r})\n"
            "print(json.dumps([line, [m for m in ('torch', 'lightning', 'mlflow') "
            "if m in sys.modules]]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, check=True)
    line, heavy = json.loads(done.stdout)
    assert line is not None and line.startswith(expected), line
    assert heavy == []


def test_unknown_data_key_fails_with_full_key(make_cfg) -> None:
    cfg = make_cfg("+data.txt_column=review")
    with pytest.raises(ConfigError, match=r"data.txt_column: unknown key.*text_column"):
        run(cfg)


@pytest.mark.parametrize(("override", "pattern"), [
    ("search.n_trials=0", r"search.n_trials: must be at least 1"),
    ("search.timeout=-5", r"search.timeout: must be a positive number"),
    ("search.max_epochs=0", r"search.max_epochs: must be at least 1"),
    ("data.val_fraction=1.5", r"data.val_fraction: must be between 0 and 1"),
    ("arch.lstm.space.hidden_size.low=512", r"arch.lstm.space.hidden_size.low: is greater than high"),
    ("arch.lstm.space.lr.type=uniform", r"arch.lstm.space.lr.type: unknown range type"),
    ("arch.lstm.model.hidden_size=1000", r"arch.lstm.space.hidden_size: range .* does not contain"),
    ("+arch.lstm.model.width=3", r"arch.lstm.model.width: unknown hyperparameter of 'lstm'"),
    ("selector.candidates=[lstm,resnt]", r"selector.candidates: unknown architecture 'resnt'"),
    ("trainer.precision=fp8", r"trainer.precision: unknown precision"),
    ("arch.lstm.optim.schedule=linear", r"arch.lstm.optim.schedule: unknown learning-rate schedule"),
    ("arch.lstm.optim.optimizer=adam", r"arch.lstm.optim.optimizer: unknown optimizer; given "
     "'adam'; expected one of: adagrad, adamw \\(did you mean 'adamw'\\?\\)"),
    ("arch.lstm.optim.label_smoothing=1.5", r"arch.lstm.optim.label_smoothing: must lie in \[0, 1\)"),
    ("arch.fasttext.optim.weight_decay=0.1", r"arch.fasttext.optim.weight_decay: must be 0 and not "
     "searched with optimizer adagrad"),
    ("selector.candidates=[pretrained] arch.pretrained.model.encoder=no-such-org/no-such-model",
     r"arch.pretrained.model.encoder: cannot be loaded offline"),
    ("data=iris", r"data.source: not a source of text data; given 'sklearn'"),
    ("tracking.system_metrics_interval=0", r"tracking.system_metrics_interval: must be a positive"),
    ("export.onnx_tolerance=-1", r"export.onnx_tolerance: must be a positive number"),
])
def test_invalid_configs_fail_before_any_store(make_cfg, tmp_path: Path, override: str,
                                               pattern: str) -> None:
    cfg = make_cfg(*override.split(" "), "data.max_samples=120")
    with pytest.raises(ConfigError, match=pattern):
        run(cfg)
    assert not (tmp_path / "optuna.db").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_the_fast_yaml_reader_gives_what_omegaconf_reads(tmp_path: Path) -> None:
    from archselect.config.schema import CONF_DIR, arch_configs

    (tmp_path / "odd.yaml").write_text("odd:\n  lr: 1e-3\n  big: 1_000\n  day: 2024-01-02\n"
                                       "  inf: .inf\n  ref: ${seed}\n  word: 'yes'\n  on: no\n")
    for folder in (CONF_DIR / "arch", tmp_path):
        read = arch_configs(folder)
        assert read == {p.stem: OmegaConf.to_container(OmegaConf.load(p))[p.stem]
                        for p in sorted(folder.glob("*.yaml"))}
    odd = arch_configs(tmp_path)["odd"]
    assert odd["lr"] == 1e-3 and odd["day"] == "2024-01-02" and odd["ref"] == "${seed}"
