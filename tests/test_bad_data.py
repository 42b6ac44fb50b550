"""Data files that used to train on something else than the user meant: repeated header names,
classes spelt like missing values, infinite or huge numbers, a constant target, other delimiters,
a folder given as a file, images skipped without a word. Each now loads as meant or fails in one
line (``prepare()`` only: no training).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import datamodule
from PIL import Image

from archselect.config.errors import ConfigError, DataError
from archselect.config.schema import ImageFolderSourceConfig
from archselect.data.sources import load_folder

NA_CLASSES = ["NA", "None", "N/A", "null", "?", "-"]
SERIES_KEYS = {"time_column": "month", "time_format": None, "covariates": None, "lookback": 12,
               "horizon": 6, "stride": 1, "season_length": None, "resample": None,
               "fill_missing": "none", "normalise": "window", "max_samples": None,
               "val_fraction": 0.15, "test_fraction": 0.15}


def table_cfg(path: Path, target: str = "label", **extra: Any) -> dict[str, Any]:
    return {"source": "file", "name": "csv", "path": str(path), "format": "auto",
            "target": target, "max_samples": None, "val_fraction": 0.2, "test_fraction": 0.2,
            **extra}


def series_cfg(path: Path, **extra: Any) -> dict[str, Any]:
    return {"source": "file", "name": "csv", "path": str(path), "format": "auto",
            "target": "sales", **SERIES_KEYS, **extra}


def seq_cfg(path: Path, **extra: Any) -> dict[str, Any]:
    return {"source": "file", "name": "csv", "path": str(path), "format": "auto", "target": "label",
            "id_column": "series_id", "time_column": "t", "max_length": None, "fill_missing": "none",
            "max_samples": None, "val_fraction": 0.2, "test_fraction": 0.2, **extra}


def text_cfg(path: Path) -> dict[str, Any]:
    return {"source": "file", "name": "jsonl", "path": str(path), "format": "auto",
            "text_column": "review", "target": "stars", "max_samples": None,
            "val_fraction": 0.2, "test_fraction": 0.2, "vocab_size": 500, "min_frequency": 1,
            "lowercase": True, "max_len": None, "max_len_percentile": 95, "max_len_cap": 64}


def table(n: int = 60, *, label: bool = True) -> pd.DataFrame:
    """Two numeric features and a two-class label that depends on them."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=n).round(4), rng.normal(size=n).round(4)
    frame = pd.DataFrame({"a": a, "b": b})
    if label:
        frame["label"] = np.where(a + b > 0, "up", "down")
    return frame


def write(frame: pd.DataFrame, path: Path, **kwargs: Any) -> Path:
    frame.to_csv(path, index=False, **kwargs)
    return path


def monthly(tmp_path: Path, n: int = 120) -> pd.DataFrame:
    t = np.arange(n)
    return pd.DataFrame({
        "month": pd.date_range("2010-01-01", periods=n, freq="MS").strftime("%Y-%m-%d"),
        "sales": (100 + 0.5 * t + 10 * np.sin(2 * np.pi * t / 12)).round(6),
        "price": (5 + np.cos(2 * np.pi * t / 12)).round(6),
    })


def long_rows(labels: tuple[str, str] = ("up", "down")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        label = labels[i % 2]
        for step in range(20):
            rows.append({"series_id": f"s{i}", "t": step, "a": step * (1 if i % 2 else -1)
                         + rng.normal(0, 0.1), "label": label})
    return pd.DataFrame(rows)


# -- 1. repeated header names --------------------------------------------------------------------
def test_a_repeated_target_column_is_refused_not_trained_on(tmp_path: Path) -> None:
    frame = table()
    path = tmp_path / "x.csv"
    path.write_text("a,b,label,label\n" + "".join(
        f"{r.a},{r.b},{r.label},{r.label}\n" for r in frame.itertuples()))
    with pytest.raises(DataError, match=r"^data\.path: column 'label' appears twice in the header "
                       r"of x\.csv \(columns 3 and 4\); fix: rename or drop one copy$"):
        datamodule("tabular", table_cfg(path), tmp_path).prepare()


def test_a_repeated_feature_name_is_refused_not_renamed(tmp_path: Path) -> None:
    frame = table()
    path = tmp_path / "x.csv"
    path.write_text("a,label,a\n" + "".join(
        f"{r.a},{r.label},{r.b}\n" for r in frame.itertuples()))
    with pytest.raises(DataError, match=r"column 'a' appears twice .*\(columns 1 and 3\)"):
        datamodule("tabular", table_cfg(path), tmp_path).prepare()


# -- 2. classes spelt like missing values ----------------------------------------------------------
def test_classes_named_like_missing_values_are_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    names = [*NA_CLASSES, "yes"]
    labels = [names[i % len(names)] for i in range(140)]
    x = [names.index(s) + rng.normal(0, 0.1) for s in labels]
    colour = ["NA" if i % 5 == 0 else ("red", "blue")[i % 2] for i in range(140)]  # a feature's NA
    frame = pd.DataFrame({"x": np.round(x, 4), "colour": colour, "label": labels})
    frame.loc[len(frame)] = [1.0, "red", None]  # empty cells are still rows without a target
    frame.loc[len(frame)] = [2.0, "blue", None]
    spec = datamodule("tabular", table_cfg(write(frame, tmp_path / "t.csv")), tmp_path).prepare()
    assert set(NA_CLASSES) <= set(spec.class_names) and len(spec.class_names) == 7
    assert spec.profile["samples"] == 140 and spec.profile["dropped_rows"] == 2
    # In a feature column, NA is still a missing value (imputed as a level of its own).
    assert spec.profile["missing_share"] > 0


def test_dropped_rows_count_only_rows_without_a_target(tmp_path: Path) -> None:
    frame = table(100)
    frame.loc[[3, 50], "label"] = None
    cfg = table_cfg(write(frame, tmp_path / "t.csv"), max_samples=40)
    spec = datamodule("tabular", cfg, tmp_path).prepare()
    assert spec.profile["samples"] == 40 and spec.profile["dropped_rows"] == 2


def test_text_and_labels_are_kept_as_written_and_only_empty_ones_dropped(tmp_path: Path) -> None:
    rows = [{"review": f"{w} film {i}", "stars": s}
            for i in range(60) for w, s in [(("great", "None"), ("dull", "NA"))[i % 2]]]
    rows += [{"review": "NA", "stars": "None"}, {"review": "fine film", "stars": ""},
             {"review": "good film", "stars": None}, {"review": "  ", "stars": "NA"}]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = datamodule("text", text_cfg(path), tmp_path / "cache").prepare()
    assert spec.class_names == ["NA", "None"]
    assert spec.profile["samples"] == 61 and spec.profile["dropped_rows"] == 3


def test_series_labels_like_missing_values_are_classes_and_blank_ones_refused(
        tmp_path: Path) -> None:
    path = write(long_rows(("NA", "None")), tmp_path / "long.csv")
    spec = datamodule("sequences", seq_cfg(path), tmp_path).prepare()
    assert spec.class_names == ["NA", "None"]
    rows = long_rows()
    rows.loc[45, "label"] = " "
    with pytest.raises(DataError, match=r"data\.target: column 'label' has empty labels \(first "
                       r"in row 47\)"):
        datamodule("sequences", seq_cfg(write(rows, tmp_path / "blank.csv")), tmp_path).prepare()


def test_a_regression_target_spelt_na_is_named_with_its_row(tmp_path: Path) -> None:
    frame = table(label=False)
    frame["y"] = (frame["a"] * 3).astype(object)
    frame.loc[4, "y"] = "NA"
    with pytest.raises(DataError, match=r"data\.target: column 'y' holds 'NA' \(row 6\), which is "
                       r"not a number; .*fix: leave the cells"):
        datamodule("tabular", table_cfg(write(frame, tmp_path / "r.csv"), "y"), tmp_path,
                   target_kind="continuous").prepare()


# -- 3. infinite and huge numbers -------------------------------------------------------------
@pytest.mark.parametrize("cell", ["inf", "-inf", "1e999"])
def test_an_infinite_feature_names_its_column_and_row(tmp_path: Path, cell: str) -> None:
    frame = table().astype({"a": object})
    frame.loc[5, "a"] = cell
    with pytest.raises(DataError, match=r"^data: column 'a' holds an infinite value \(row 7\); "
                       r"fix: replace it with an empty cell \(missing values are imputed\)"):
        datamodule("tabular", table_cfg(write(frame, tmp_path / "t.csv")), tmp_path).prepare()


def test_a_feature_too_large_to_standardise_is_refused(tmp_path: Path) -> None:
    frame = table()
    frame.loc[9, "b"] = 1e200
    with pytest.raises(DataError, match=r"data: column 'b' holds 1e\+200 \(row 11\), too large"):
        datamodule("tabular", table_cfg(write(frame, tmp_path / "t.csv")), tmp_path).prepare()


@pytest.mark.parametrize(("cell", "problem"), [("inf", r"holds an infinite value \(row 5\)"),
                                               ("1e308", r"holds 1e\+308 \(row 5\), too large"),
                                               ("-3e20", r"holds -3e\+20 \(row 5\), too large")])
def test_a_regression_target_that_would_overflow_is_refused(tmp_path: Path, cell: str,
                                                            problem: str) -> None:
    frame = table(label=False)
    frame["y"] = (frame["a"] * 3 + 1).round(4).astype(object)
    frame.loc[3, "y"] = cell
    with pytest.raises(DataError, match=rf"^data\.target: column 'y' {problem}"):
        datamodule("tabular", table_cfg(write(frame, tmp_path / "r.csv"), "y"), tmp_path,
                   target_kind="continuous").prepare()


@pytest.mark.parametrize(("column", "key"), [("sales", "data.target"), ("price", "data.covariates")])
def test_an_infinite_series_value_names_its_column_and_row(tmp_path: Path, column: str,
                                                           key: str) -> None:
    frame = monthly(tmp_path).astype({column: object})
    frame.loc[30, column] = "-inf"
    with pytest.raises(DataError, match=rf"^{key}: column '{column}' holds an infinite value "
                       r"\(row 32\); fix: replace it with an empty cell and set data\.fill_missing"):
        datamodule("series", series_cfg(write(frame, tmp_path / "s.csv")), tmp_path).prepare()


def test_an_infinite_sequence_value_names_its_channel(tmp_path: Path) -> None:
    rows = long_rows()
    rows.loc[7, "a"] = np.inf
    with pytest.raises(DataError, match=r"^data: column 'a' holds an infinite value \(row 9\)"):
        datamodule("sequences", seq_cfg(write(rows, tmp_path / "long.csv")), tmp_path).prepare()


# -- 4. a constant target --------------------------------------------------------------------------
def test_a_constant_regression_target_is_refused(tmp_path: Path) -> None:
    frame = table(label=False)
    frame["y"] = 3
    with pytest.raises(DataError, match=r"^data\.target: column 'y' holds one value \(3\.0\) in "
                       r"every row; nothing to learn; fix: "):
        datamodule("tabular", table_cfg(write(frame, tmp_path / "r.csv"), "y"), tmp_path,
                   target_kind="continuous").prepare()


def test_a_constant_forecasting_target_is_refused(tmp_path: Path) -> None:
    frame = monthly(tmp_path)
    frame["sales"] = 7.5
    with pytest.raises(DataError, match=r"\['sales'\] are constant over the training span"):
        datamodule("series", series_cfg(write(frame, tmp_path / "s.csv")), tmp_path).prepare()


# -- 5. other delimiters ---------------------------------------------------------------------------
@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_semicolon_tab_and_pipe_files_are_read_as_tables(tmp_path: Path, sep: str) -> None:
    dm = datamodule("tabular", table_cfg(write(table(), tmp_path / "t.csv", sep=sep)), tmp_path)
    spec = dm.prepare()
    assert dm.numeric == ["a", "b"] and spec.class_names == ["down", "up"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("sep", "problem"), [
    (";", r"the header of s\.csv is one column \('sales'\) but its rows split into 2 columns at "
          r"';'; fix: separate the header's names with ';' too"),
    # decimal commas: pandas would take "1" of "1,5" as a row label and keep 5 as the value
    (",", r"the header of s\.csv is one column \('sales'\) but its rows split into 2 columns at "
          r"','; .*a point: 1\.5")])
def test_a_one_column_header_over_split_rows_is_refused(tmp_path: Path, sep: str,
                                                        problem: str) -> None:
    path = tmp_path / "s.csv"
    path.write_text("sales\n" + "".join(f"{i}{sep}{i % 7}\n" for i in range(40)))
    with pytest.raises(DataError, match=rf"^data\.path: {problem}"):
        datamodule("series", series_cfg(path, time_column=None), tmp_path).prepare()


def test_rows_longer_than_the_header_are_not_taken_for_row_labels(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,label\n" + "".join(f"{i},{i * 2},{('x', 'y')[i % 2]}\n" for i in range(40)))
    with pytest.raises(DataError, match=r"the first row of t\.csv has 3 fields but its header "
                       r"names 2 column\(s\)"):
        datamodule("tabular", table_cfg(path), tmp_path).prepare()


# -- 6. a folder given as the file -----------------------------------------------------------------
def test_a_folder_given_as_the_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match=r"^data\.path: is a folder, not a file; given '.*data'; "
                       r"fix: give the CSV / JSONL file$"):
        datamodule("tabular", table_cfg(tmp_path / "data"), tmp_path).prepare()


# -- 7. image folders --------------------------------------------------------------------------------
def image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / label).mkdir(parents=True)
        for i in range(12):
            arr = np.clip(np.array(colour) + rng.integers(-20, 20, (10, 10, 3)), 0, 255)
            suffix = (".png", ".tif", ".tiff")[i % 3]
            Image.fromarray(arr.astype(np.uint8)).save(root / label / f"{i}{suffix}")
    (root / "red" / "notes.txt").write_text("shot on a cloudy day\n")
    (root / "blue" / "raw").mkdir()
    return root


def test_tiff_images_are_read_and_skipped_files_listed(tmp_path: Path) -> None:
    cfg = {"source": "image_folder", "name": "image_folder", "path": str(image_folder(
        tmp_path / "imgs")), "image_size": 8, "channels": 3, "max_samples": None,
        "val_fraction": 0.2, "test_fraction": 0.2}
    dm = datamodule("image", cfg, tmp_path)
    spec = dm.prepare()
    assert spec.profile["samples"] == 24  # 8 of each class are .tif / .tiff
    assert spec.profile["not_images_count"] == 2
    assert [Path(p.rstrip("/")).name for p in spec.profile["not_images"]] == ["raw", "notes.txt"]
    line = dict(dm.profile_lines())["not images"]
    assert line.startswith("2 skipped (not image files)") and "notes.txt" in line


def test_sixteen_bit_tiffs_are_scaled_not_clipped(tmp_path: Path) -> None:
    for label, level in (("dark", 8000), ("light", 50000)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 6), level + i, dtype=np.uint16)).save(
                tmp_path / label / f"{i}.tif")
    Image.fromarray(np.full((6, 6), 0.5, dtype=np.float32)).save(tmp_path / "dark" / "f.tif")
    source = ImageFolderSourceConfig(source="image_folder", name="image_folder",
                                     path=str(tmp_path), image_size=6, channels=1)
    images, labels, bad, *_ = load_folder(source)
    assert labels[:3] == ["dark"] * 3 and abs(int(images[0].mean()) - 8000 // 257) <= 1
    assert abs(int(images[-1].mean()) - 50000 // 257) <= 1  # PIL alone would give 255 for both
    assert len(bad) == 1 and "floating-point pixels" in bad[0]
