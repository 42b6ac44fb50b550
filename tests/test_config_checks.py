"""Checks that run with the rest of the config, before any store: values that used to fail only
after the whole search (MLflow's registry names, the seed range, a NaN budget), the unknown-key
hint of the task and data the user chose, an override Hydra cannot parse, and a run that makes
no folder of its own."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from helpers import archselect
from hydra.core.override_parser.overrides_parser import OverridesParser

from archselect.config.compose import precheck
from archselect.config.errors import ConfigError
from archselect.run import run


@pytest.mark.parametrize(("override", "pattern"), [
    ("tracking.model_name=my/model:name%",
     r"^tracking.model_name: refused by MLflow's registry: .*cannot contain '/' or ':'.*; "
     r"fix: a name without '/', ':' or '%'"),
    ("tracking.model_name=model%1",
     r"^tracking.model_name: refused by MLflow's registry: .*cannot contain '%'"),
    ("tracking.champion_alias=v1",
     r"^tracking.champion_alias: refused by MLflow's registry: Version alias name 'v1' is "
     r"reserved; fix: .*not 'latest' nor v<digits>"),
    ("tracking.champion_alias=latest",
     r"^tracking.champion_alias: refused by MLflow's registry: 'latest' alias name"),
    ("tracking.champion_alias=best model",
     r"^tracking.champion_alias: refused by MLflow's registry: Invalid alias name"),
    ("seed=8589934592", r"^seed: must lie in 0\.\.\d+ \(each trial seeds with seed \+ its "
     r"number, which must stay below 2\*\*32\); given 8589934592; fix: e.g. seed=42$"),
    ("seed=-1", r"^seed: must lie in 0\.\..*; given -1;"),
    ("seed=4294967295", r"^seed: must lie in 0\.\.\d+ .*; given 4294967295;"),
    ("search.timeout=nan", r"^search.timeout: must be a positive number of seconds, or null; "
     r"given nan"),
    ("search.trial_timeout=nan", r"^search.trial_timeout: must be a positive number of seconds"),
    ("tracking.system_metrics_interval=nan", r"^tracking.system_metrics_interval: must be a "
     r"positive number of seconds"),
    ("export.onnx_tolerance=nan", r"^export.onnx_tolerance: must be a positive number"),
])
def test_late_failures_fail_before_any_store(make_cfg, tmp_path: Path, override: str,
                                             pattern: str) -> None:
    cfg = make_cfg(override, "data.max_samples=120")
    with pytest.raises(ConfigError, match=pattern) as info:
        run(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "optuna.db").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_seed_bound_leaves_room_for_every_trial(make_cfg) -> None:
    from archselect.config.validate import check_seed, typed

    top = 2**32 - 1 - 5
    check_seed(typed(make_cfg(f"seed={top}", "search.n_trials=5")))
    with pytest.raises(ConfigError, match=rf"must lie in 0\.\.{top - 1} "):
        check_seed(typed(make_cfg(f"seed={top}", "search.n_trials=6")))


def test_names_are_not_checked_when_nothing_is_registered(make_cfg) -> None:
    from archselect.config.validate import check_tracking, typed

    check_tracking(typed(make_cfg("tracking.register=false", "tracking.champion_alias=v1")))


def test_unknown_key_lists_the_keys_of_the_chosen_task() -> None:
    msg = precheck(["task=tabular_classification", "data.text_colum=x"])
    assert msg is not None and msg.startswith("data.text_colum: unknown key; expected one of: ")
    listed = msg.split("expected one of: ", 1)[1].split(";", 1)[0]
    assert "text_column" not in listed and "vocab_size" not in listed, msg  # the text task's
    assert "target" in listed, msg
    assert "did you mean" not in msg, msg


def test_unknown_data_key_lists_the_keys_of_the_chosen_task_and_data() -> None:
    msg = precheck(["task=tabular_classification", "data=csv", "data.path=a.csv",
                    "data.targt=species"])
    assert msg is not None and msg.startswith("data.targt: unknown key; expected one of: "), msg
    listed = msg.split("expected one of: ", 1)[1].split(" (did you mean", 1)[0].split(", ")
    assert {"path", "format", "target"} <= set(listed), msg  # data=csv's own keys
    assert "text_column" not in listed and "vocab_size" not in listed, msg
    assert "(did you mean data.target?)" in msg


def test_unknown_key_of_the_default_task_still_hints() -> None:
    msg = precheck(["data.text_colum=x"])
    assert msg is not None and "(did you mean data.text_column?)" in msg, msg


@pytest.mark.parametrize(("override", "key"), [
    ("data.path=café.csv", "data.path"),
    ("tracking.experiment=déjà", "tracking.experiment"),
    ("data.path=l'été.csv", "data.path"),
])
def test_non_ascii_override_says_to_quote_the_value(override: str, key: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the files exist: the quoted form then passes every check
    for name in ("x.csv", "café.csv", "l'été.csv"):
        (tmp_path / name).write_text("text,label\nfine,1\n")
    msg = precheck(["data=csv", override])
    assert msg is not None and "\n" not in msg
    assert msg.startswith(f"{key}: cannot parse the override (a character outside ASCII must be "
                          "inside quotes); given "), msg
    assert override in msg
    example = msg.split("fix: quote the value, e.g. ", 1)[1]
    # the example, once the shell has removed its quotes, is an override Hydra parses back to
    # the value given
    (typed,) = shlex.split(example)
    parsed = OverridesParser.create().parse_overrides([typed])[0]
    assert parsed.key_or_group == key
    assert parsed.value() == override.split("=", 1)[1]
    assert precheck(["data=csv", "data.path=x.csv", typed]) is None


def test_non_ascii_override_example_is_the_double_quoted_form() -> None:
    msg = precheck(["data=csv", "data.path=café.csv"])
    assert msg is not None and msg.endswith("""fix: quote the value, e.g. 'data.path="café.csv"'""")


def test_parse_error_is_described_alongside_hydra_flags() -> None:
    msg = precheck(["-m", "hydra.verbose=true", "seed=1,2", "tracking.experiment=déjà"])
    assert msg is not None and msg.startswith("tracking.experiment: cannot parse the override")


def test_dry_run_creates_no_folder(tmp_path: Path) -> None:
    proc = archselect("dry_run=true", f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "outputs").exists()
    assert not (tmp_path / ".hydra").exists()
