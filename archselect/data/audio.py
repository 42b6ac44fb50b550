"""Sound clips to classify: a folder of WAV files (one sub-folder per class) or a CSV of
``path,label`` rows, and the built-in spoken command words synthesised with espeak-ng; log-mel
features, SpecAugment-style augmentation, and the served model's codec.

Every clip is read with ``soundfile`` (any sample rate, mono or stereo, 8 to 32 bits, float),
mixed to mono, resampled to ``data.sample_rate`` (torchaudio), padded with silence or cropped
(centred) to ``data.max_seconds``, then turned into a log-mel spectrogram (torchaudio's
MelSpectrogram, 25 ms windows every 10 ms, and AmplitudeToDB), computed once and cached by data
hash. A batch is ``{"inputs": {"x": [B, 1, n_mels, frames]}, "target": labels}``, standardised
with the training split's mean and spread.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, TensorDataset

from archselect.config.errors import ConfigError, DataError
from archselect.config.schema import (
    AudioDataConfig,
    AudioFolderSourceConfig,
    SourceConfig,
    SpokenWordsSourceConfig,
)
from archselect.data.base import (
    SPLITS,
    BaseDataModule,
    DataSpec,
    ServingBundle,
    augment_setting,
    class_balance,
    classes_line,
    data_sources,
    datamodules,
    encode_labels,
    splits_text,
    stratified_split,
)
from archselect.hashing import stable_hash
from archselect.serving import Batch, Codec

#: a source's output: each clip's samples (float32, [channels, n]), sample rate and label, the
#: group it belongs to (a voice: held out whole) or None, and the files that could not be read
Clips = tuple[list[np.ndarray], list[int], list[str], list[str] | None, list[str]]
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
#: the built-in voices: espeak-ng accents x voice variants (36 speakers), each word twice
ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan"]
VARIANTS = ["m1", "m3", "f2", "f4", "klatt", "Alicia"]
RENDITIONS = [(140, 40), (180, 65)]  # words per minute, pitch
#: the longest clip length (s) read; data.max_seconds=null picks the clips' 95th percentile up to it
MAX_SECONDS = 30.0


# -- reading clips ---------------------------------------------------------------------------------
def read_clip(source: Any) -> tuple[np.ndarray, int]:
    """A sound file (a path, or its bytes) as float32 samples ``[channels, n]`` and its rate."""
    import soundfile

    data, rate = soundfile.read(io.BytesIO(source) if isinstance(source, bytes) else source,
                                dtype="float32", always_2d=True)
    if data.size == 0:
        raise ValueError("no samples")
    return np.ascontiguousarray(data.T), int(rate)


def fixed_length(samples: np.ndarray, rate: int, target_rate: int, seconds: float
                 ) -> torch.Tensor:
    """Mono, resampled to ``target_rate``, padded (silence at the end) or cropped (the middle)
    to ``seconds``: ``[n]``."""
    import torchaudio.functional as F

    x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    x = x.mean(0) if x.ndim == 2 else x
    if rate != target_rate:
        x = F.resample(x, rate, target_rate)
    n = round(seconds * target_rate)
    if len(x) >= n:
        start = (len(x) - n) // 2
        return x[start : start + n]
    return torch.nn.functional.pad(x, (0, n - len(x)))


def log_mel(waves: torch.Tensor, rate: int, n_mels: int) -> torch.Tensor:
    """``[N, n]`` samples -> ``[N, 1, n_mels, frames]`` log-mel decibels (25 ms windows, 10 ms
    hop)."""
    import torchaudio.transforms as T

    mel = T.MelSpectrogram(sample_rate=rate, n_fft=int(0.025 * rate), hop_length=int(0.010 * rate),
                           n_mels=n_mels)
    db = T.AmplitudeToDB(top_db=80.0)
    out = [db(mel(waves[i : i + 256])) for i in range(0, len(waves), 256)]
    return torch.cat(out)[:, None] if out else torch.zeros(0, 1, n_mels, 1)


def mfcc_stats(x: torch.Tensor, n_mfcc: int = 20) -> torch.Tensor:
    """Log-mel ``[B, 1, M, T]`` -> the mean and spread over time of its first ``n_mfcc`` MFCCs
    (the DCT-II of the log-mel bands): ``[B, 2 * n_mfcc]``."""
    import torchaudio.functional as F

    m = x.shape[-2]
    dct = F.create_dct(min(n_mfcc, m), m, "ortho").to(x.dtype).to(x.device)  # [M, n_mfcc]
    c = torch.einsum("bmt,mk->bkt", x[:, 0], dct)
    return torch.cat([c.mean(-1), c.std(-1)], 1)


@data_sources.register("audio_folder", kind="audio", schema=AudioFolderSourceConfig)
def load_audio_folder(source: AudioFolderSourceConfig) -> Clips:
    """A folder with one sub-folder of sound files per class, or a CSV with ``path,label``
    columns (paths relative to the CSV's folder)."""
    root = Path(str(source.path)).expanduser()
    if not root.exists():
        raise ConfigError("data.path", "not found", given=str(source.path),
                          fix="give a folder with one sub-folder of WAV files per class, or a "
                              "CSV with path,label columns")
    if root.is_file():
        frame = pd.read_csv(root)
        missing = [c for c in ("path", "label") if c not in frame.columns]
        if missing:
            raise ConfigError("data.path", f"the CSV lacks column(s) {', '.join(missing)}",
                              given=str(root), allowed=["path", "label"])
        files = [(root.parent / str(p), str(lab)) for p, lab in zip(frame["path"], frame["label"],
                                                                      strict=True)]
    else:
        files = [(p, folder.name) for folder in sorted(d for d in root.iterdir() if d.is_dir())
                 for p in sorted(folder.iterdir())
                 if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
    waves, rates, labels, bad = [], [], [], []
    for path, label in files:
        try:
            samples, rate = read_clip(str(path))
        except Exception as exc:  # unreadable or empty: listed in the profile by name
            bad.append(f"{path} ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})")
            continue
        waves.append(samples)
        rates.append(rate)
        labels.append(label)
    if not waves:
        raise DataError(f"data.path: no readable sound files (.wav, .flac, .ogg) in {root}"
                        + (f" ({len(bad)} unreadable, e.g. {bad[0]})" if bad else ""))
    return waves, rates, labels, None, bad


@data_sources.register("spoken_words", kind="audio", schema=SpokenWordsSourceConfig)
def load_spoken_words(source: SpokenWordsSourceConfig) -> Clips:
    """Command words spoken by 36 synthetic voices (espeak-ng: 6 accents x 6 voice variants, two
    speeds and pitches each), synthesised once into ``data.folder``; a clip's group is its
    voice, so that test voices are never heard in training."""
    folder = Path(str(source.folder)).expanduser() / "v1"
    voices = [f"{accent}+{variant}" for accent in ACCENTS for variant in VARIANTS]
    wanted = [(voice, word, k) for voice in voices for word in source.words
              for k in range(len(RENDITIONS))]
    missing = [w for w in wanted if not (folder / w[0] / f"{w[1]}-{w[2]}.wav").is_file()]
    if missing:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise DataError("data=spoken_words: the words are synthesised with espeak-ng, which "
                            "is not installed; fix: apt-get install espeak-ng (the README's "
                            "set-up does this where it runs as root)")
        for voice, word, k in missing:
            speed, pitch = RENDITIONS[k]
            path = folder / voice / f"{word}-{k}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_suffix(".part.wav")
            subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w",
                            str(part), word], check=True, capture_output=True, timeout=60)
            part.replace(path)  # whole, or not there
    waves, rates, labels, groups, bad = [], [], [], [], []
    for voice, word, k in wanted:
        path = folder / voice / f"{word}-{k}.wav"
        try:
            samples, rate = read_clip(str(path))
        except Exception:
            bad.append(str(path))
            continue
        waves.append(samples)
        rates.append(rate)
        labels.append(word)
        groups.append(voice)
    return waves, rates, labels, groups, bad


def group_split(groups: list[str], *, val_fraction: float, test_fraction: float, seed: int
                ) -> dict[str, np.ndarray]:
    """Rows split by group (a voice is in one split only), the groups shuffled by seed."""
    names = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    n_test = max(1, round(len(names) * test_fraction))
    n_val = max(1, round(len(names) * val_fraction))
    if len(names) - n_test - n_val < 1:
        raise DataError(f"data: only {len(names)} voices; a split by voice needs at least 3")
    which = {names[i]: ("test" if j < n_test else "val" if j < n_test + n_val else "train")
             for j, i in enumerate(order)}
    rows = np.arange(len(groups))
    return {s: rows[[which[g] == s for g in groups]] for s in SPLITS}


@datamodules.register("audio", schema=AudioDataConfig)
class AudioDataModule(BaseDataModule):
    """Sound clips as standardised log-mel spectrograms (see the module docstring), with
    searchable augmentation (``augment``: time and frequency masking, time shift, gain and
    noise, all scaled by it)."""

    cfg: AudioDataConfig

    def __init__(self, options: AudioDataConfig, source: SourceConfig, *, seed: int,
                 cache_dir: str | Path, target_kind: str = "classes") -> None:
        super().__init__(options, source, seed=seed, cache_dir=cache_dir, target_kind=target_kind)
        self.features: dict[str, torch.Tensor] = {}
        self.labels: dict[str, np.ndarray] = {}
        self.mean = 0.0
        self.std = 1.0
        self.augment = 0.0
        #: the length every clip is padded or cropped to (``data.max_seconds``, or found)
        self.seconds = 1.0

    def _check(self) -> None:
        c = self.cfg
        if c.sample_rate < 4000:
            raise ConfigError("data.sample_rate", "must be at least 4000 Hz", given=c.sample_rate)
        if c.max_seconds is not None and not 0.1 <= c.max_seconds <= MAX_SECONDS:
            raise ConfigError("data.max_seconds", f"must be 0.1 to {MAX_SECONDS:g} seconds, or "
                              "null (the clips' 95th percentile)", given=c.max_seconds)
        if not 8 <= c.n_mels <= 128:
            raise ConfigError("data.n_mels", "must be 8 to 128", given=c.n_mels)

    def prepare(self) -> DataSpec:
        if self.spec is not None:
            return self.spec
        self._check()
        c = self.cfg
        waves, rates, label_str, groups, bad = self.load_frame()
        names = sorted(set(label_str))
        if len(names) < 2:
            raise DataError(f"data: only one class ({names[0]!r}); classification needs at least 2")
        labels = encode_labels(label_str, names)
        keep = np.arange(len(labels))
        if c.max_samples is not None and c.max_samples < len(keep):
            keep = np.sort(np.random.default_rng(self.seed).choice(len(keep), c.max_samples,
                                                                   replace=False))
        waves = [waves[i] for i in keep]
        rates = [rates[i] for i in keep]
        labels = labels[keep]
        groups = [groups[i] for i in keep] if groups is not None else None
        split = (group_split(groups, val_fraction=c.val_fraction, test_fraction=c.test_fraction,
                             seed=self.seed) if groups is not None else
                 stratified_split(labels, val_fraction=c.val_fraction,
                                  test_fraction=c.test_fraction, seed=self.seed))
        seconds = np.array([w.shape[-1] / r for w, r in zip(waves, rates, strict=True)])
        # null: long enough for 95 % of the clips (whole tenths of a second), at most MAX_SECONDS
        self.seconds = (float(c.max_seconds) if c.max_seconds is not None else
                        min(MAX_SECONDS, max(0.1, float(np.ceil(np.percentile(seconds, 95) * 10)
                                                        / 10))))
        data_hash = stable_hash([stable_hash(w.tobytes()) for w in waves], rates, labels.tolist(),
                                {k: v.tolist() for k, v in split.items()}, c.sample_rate,
                                self.seconds, c.n_mels, "logmel-v1")
        cached = self.cache_dir / "audio" / f"{data_hash[:20]}.pt"
        if cached.is_file():
            feats = torch.load(cached, weights_only=True)
        else:
            fixed = torch.stack([fixed_length(w, r, c.sample_rate, self.seconds)
                                 for w, r in zip(waves, rates, strict=True)])
            feats = log_mel(fixed, c.sample_rate, c.n_mels)
            cached.parent.mkdir(parents=True, exist_ok=True)
            part = cached.with_suffix(".part")
            torch.save(feats, part)
            part.replace(cached)
        for s in SPLITS:
            self.features[s] = feats[torch.as_tensor(split[s])]
            self.labels[s] = labels[split[s]]
        self.mean = round(float(self.features["train"].mean()), 4)
        self.std = round(float(self.features["train"].std()) or 1.0, 4)
        shape = [int(d) for d in feats.shape[1:]]
        profile = {
            "source": self.cfg.name, "samples": len(labels),
            "splits": {s: len(self.labels[s]) for s in SPLITS}, "classes": len(names),
            "balance": class_balance(labels, names), "unreadable": bad[:20],
            "unreadable_count": len(bad), "features": shape,
            "seconds": {f"p{q}": round(float(np.percentile(seconds, q)), 2)
                        for q in (0, 50, 100)},
            "sample_rates": sorted({int(r) for r in rates}),
            "cropped": int((seconds > self.seconds).sum()), "max_seconds": self.seconds,
            "split_by": "voice" if groups is not None else "class (stratified)",
            "groups": ({s: len({groups[i] for i in split[s]}) for s in SPLITS}
                       if groups is not None else None),
            "mean": self.mean, "std": self.std,
        }
        self.spec = DataSpec(kind="audio", num_classes=len(names), class_names=names,
                             input_shape=shape, n_features=shape[1] * shape[2],
                             data_hash=data_hash, profile=profile)
        return self.spec

    def for_trial(self, option: str | None, *, batch_size: int, num_workers: int,
                  **data_opts: Any) -> DataSpec:
        self.augment = augment_setting(data_opts, "audio")
        self.batch_size, self.num_workers = batch_size, num_workers
        return self.prepare()

    def targets(self, split: str) -> torch.Tensor:
        self.prepare()
        return torch.as_tensor(self.labels[split])

    def split_dataset(self, split: str) -> Dataset[Any]:
        self.prepare()
        return TensorDataset(self.features[split], torch.as_tensor(self.labels[split]))

    def collate(self, train: bool) -> Any:
        return _Collate(self.mean, self.std, self.augment if train else 0.0, self.seed)

    def profile_lines(self) -> list[tuple[str, str]]:
        prof = self.prepare().profile
        sec = prof["seconds"]
        n_mels, frames = prof["features"][1:]
        split = str(prof["split_by"])
        if prof["groups"]:
            split += " (voices: " + ", ".join(f"{s} {n}" for s, n in prof["groups"].items()) + ")"
        lines = [
            ("source", str(prof["source"])),
            ("samples", f"{prof['samples']} ({splits_text(prof['splits'])}); split by {split}"),
            ("clips", f"{sec['p0']} to {sec['p100']} s (median {sec['p50']}); sample rates "
             f"{', '.join(map(str, prof['sample_rates']))} Hz -> {self.cfg.sample_rate} Hz mono; "
             f"{prof['cropped']} longer than {prof['max_seconds']:g} s cropped"
             + ("" if self.cfg.max_seconds is not None else
                " (data.max_seconds=null: the clips' 95th percentile)")
             + ("; lengths differ more than 4x: check data.max_seconds"
                if sec["p0"] and sec["p100"] / max(sec["p0"], 1e-9) > 4 else "")),
            ("features", f"log-mel {n_mels} bands x {frames} frames (10 ms)"),
            classes_line(prof),
        ]
        if prof["unreadable_count"]:
            lines.append(("unreadable", f"{prof['unreadable_count']} skipped, e.g. "
                          + ", ".join(prof["unreadable"][:3])))
        return lines

    def serving_bundle(self, checkpoint: str, folder: Path) -> ServingBundle:
        from mlflow.types.schema import AnyType, ColSpec, Schema

        spec = self.prepare()
        c = self.cfg
        codec = AudioCodec(class_names=spec.class_names, sample_rate=c.sample_rate,
                           max_seconds=self.seconds, n_mels=c.n_mels, mean=self.mean,
                           std=self.std)
        t = np.arange(int(0.2 * c.sample_rate)) / c.sample_rate
        tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        example = pd.DataFrame({"audio": [tone.tolist()], "sample_rate": [c.sample_rate]})
        output = pd.DataFrame({"label": [spec.class_names[0]], "probability": [1.0]})
        return ServingBundle(codec=codec, artifacts={}, input_example=example,
                             output_example=output,
                             input_schema=Schema([ColSpec(AnyType(), "audio"),
                                                  ColSpec(AnyType(), "sample_rate",
                                                          required=False)]))

    def extra_figures(self, preds: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Eight test spectrograms with their true and predicted labels (wrong ones first)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = self.prepare().class_names
        wrong = torch.nonzero(preds != targets).flatten().tolist()
        right = torch.nonzero(preds == targets).flatten().tolist()
        shown = (wrong + right)[:8]
        if not shown:
            return {}
        fig, axes = plt.subplots(2, 4, figsize=(12, 5), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, i in zip(axes.flat, shown, strict=False):
            ax.imshow(self.features["test"][i, 0].numpy(), origin="lower", aspect="auto",
                      cmap="magma")
            ok = int(preds[i]) == int(targets[i])
            ax.set_title(f"{names[int(targets[i])]} -> {names[int(preds[i])]}", fontsize=9,
                         color="black" if ok else "red")
        fig.suptitle("Test log-mel spectrograms (true -> predicted; wrong in red)")
        fig.tight_layout()
        return {"plots/spectrograms.png": fig}


class _Collate:
    """Log-mel rows -> standardised batches; in training, with ``augment`` > 0: a random gain
    (up to 12 dB x augment), a time shift (up to augment of the frames), one frequency and one
    time mask (up to augment of the bands / frames) and a little noise."""

    def __init__(self, mean: float, std: float, augment: float, seed: int) -> None:
        self.mean, self.std, self.augment = mean, std, augment
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        x = torch.stack([r[0] for r in rows]).float()
        a = self.augment
        if a > 0:
            b, _, m, t = x.shape
            g = self.gen
            x = x + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 24.0 * a
            shifts = ((torch.rand(b, generator=g) - 0.5) * 2 * a * t).long().tolist()
            x = torch.stack([torch.roll(xi, s, dims=-1) for xi, s in zip(x, shifts, strict=True)])
            floor = float(x.min())
            for i in range(b):
                fw = int(torch.randint(0, max(1, int(a * m)) + 1, (1,), generator=g))
                f0 = int(torch.randint(0, max(1, m - fw) + 1, (1,), generator=g))
                tw = int(torch.randint(0, max(1, int(a * t)) + 1, (1,), generator=g))
                t0 = int(torch.randint(0, max(1, t - tw) + 1, (1,), generator=g))
                x[i, :, f0 : f0 + fw, :] = floor
                x[i, :, :, t0 : t0 + tw] = floor
            x = x + torch.randn(x.shape, generator=g) * a
        x = (x - self.mean) / self.std
        return {"inputs": {"x": x}, "target": torch.stack([r[1] for r in rows])}


class AudioCodec(Codec):
    """The served classifier's side: an ``audio`` column of float sample arrays with a
    ``sample_rate`` column (default: the training rate), or of WAV bytes or file paths (their
    own rate); read as in training (mono, resampled, padded or cropped, log-mel,
    standardised)."""

    def __init__(self, *, class_names: list[str], sample_rate: int, max_seconds: float,
                 n_mels: int, mean: float, std: float) -> None:
        self.class_names = class_names
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.n_mels = n_mels
        self.mean = mean
        self.std = std

    def _clip(self, value: Any, rate: Any, row: int) -> torch.Tensor:
        if isinstance(value, bytes | str):
            samples, found = read_clip(value)
        else:
            samples = np.asarray(value, dtype=np.float32)
            if samples.ndim == 2 and samples.shape[0] > samples.shape[1]:
                samples = samples.T  # [n, channels] as sound files lay it out
            given = None if rate is None or pd.isna(rate) else rate
            found = int(given) if given is not None else self.sample_rate
            if samples.size == 0:
                raise ValueError(f"row {row}: the audio is empty")
        return fixed_length(samples, found, self.sample_rate, self.max_seconds)

    def encode(self, frame: pd.DataFrame) -> tuple[list[Batch], Any]:
        column = "audio" if "audio" in frame.columns else frame.columns[0]
        rates = frame["sample_rate"].tolist() if "sample_rate" in frame.columns else \
            [None] * len(frame)
        waves = [self._clip(v, r, i) for i, (v, r) in enumerate(zip(frame[column].tolist(), rates,
                                                                     strict=True))]
        if not waves:
            return [], None
        x = (log_mel(torch.stack(waves), self.sample_rate, self.n_mels) - self.mean) / self.std
        return [{"x": x[i : i + 128]} for i in range(0, len(x), 128)], None
