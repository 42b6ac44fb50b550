"""The audio row: WAV files written here (several sample rates, bit depths, mono and stereo,
broken files), the built-in spoken words split by voice, and a short real study whose registered
model classifies raw sample arrays through ``mlflow models predict``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import compose_cfg, config_datamodule, mlflow_models_predict

RATES = [8000, 16000, 22050, 44100]
SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"]


def clip(kind: str, rate: int, rng: Any, seconds: float = 0.6) -> np.ndarray:
    """A low hum, a high whistle or a rising chirp, at a random loudness, with a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    if kind == "low":
        wave = np.sin(2 * np.pi * rng.uniform(150, 300) * t)
    elif kind == "high":
        wave = np.sin(2 * np.pi * rng.uniform(1500, 2500) * t)
    else:
        f0 = rng.uniform(300, 600)
        wave = np.sin(2 * np.pi * (f0 * t + 1500 * t ** 2))
    return (rng.uniform(0.2, 0.8) * wave + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def write_folder(root: Path, per_class: int = 30) -> Path:
    import soundfile

    rng = np.random.default_rng(0)
    for kind in ("low", "high", "chirp"):
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            rate = RATES[i % len(RATES)]
            samples = clip(kind, rate, rng, seconds=float(rng.uniform(0.4, 0.9)))
            if i % 3 == 0:  # stereo: the same sound, quieter on the right
                samples = np.stack([samples, 0.5 * samples], 1)
            soundfile.write(root / kind / f"{i}.wav", samples, rate,
                            subtype=SUBTYPES[i % len(SUBTYPES)])
    (root / "low" / "broken.wav").write_bytes(b"RIFF0000WAVEnot really")
    (root / "high" / "empty.wav").write_bytes(b"")
    return root


def test_an_audio_folder_of_mixed_rates_and_depths_reads_and_lists_broken_files(
        tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "sounds", per_class=10)
    cfg = compose_cfg(["task=audio_classification", "data=audio_folder", f"data.path={folder}"],
                      tmp_path)
    dm: Any = config_datamodule(cfg, tmp_path / "cache")
    spec = dm.prepare()
    prof = spec.profile
    assert prof["samples"] == 30 and prof["unreadable_count"] == 2
    assert any("broken.wav" in b for b in prof["unreadable"])
    assert any("empty.wav" in b for b in prof["unreadable"])
    assert prof["sample_rates"] == RATES
    # data.max_seconds=null: the clips (0.4 to 0.9 s) are read 0.9 s long, 10 ms a frame
    assert prof["max_seconds"] == 0.9 and spec.input_shape == [1, 40, 91]
    lines = dict(dm.profile_lines())
    assert "-> 16000 Hz mono" in lines["clips"] and "unreadable" in lines


def test_the_served_codec_reads_arrays_wav_bytes_and_paths_alike(tmp_path: Path) -> None:
    import soundfile

    from archselect.data.audio import AudioCodec

    rng = np.random.default_rng(1)
    samples = clip("chirp", 22050, rng)
    path = tmp_path / "a.wav"
    soundfile.write(path, samples, 22050, subtype="FLOAT")
    codec = AudioCodec(class_names=["a", "b"], sample_rate=16000, max_seconds=1.0, n_mels=40,
                       mean=0.0, std=1.0)
    import pandas as pd

    frame = pd.DataFrame({"audio": [samples.tolist(), path.read_bytes(), str(path)],
                          "sample_rate": [22050, None, None]})
    (batch,), _ = codec.encode(frame)
    x = batch["x"]
    assert x.shape == (3, 1, 40, 101)
    assert float((x[0] - x[1]).abs().max()) < 1e-3 and float((x[1] - x[2]).abs().max()) < 1e-6
    with pytest.raises(ValueError, match="empty"):
        codec.encode(pd.DataFrame({"audio": [[]], "sample_rate": [8000]}))


def test_spoken_words_are_split_by_voice(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:  # make installs it where it runs as root
        message = "espeak-ng is not installed (apt-get install espeak-ng)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run it")
        pytest.skip(message)
    cfg = compose_cfg(["task=audio_classification", "data.words=[yes,stop]"], tmp_path)
    dm: Any = config_datamodule(cfg, tmp_path / "cache")
    spec = dm.prepare()
    assert spec.class_names == ["stop", "yes"]
    assert spec.profile["split_by"] == "voice" and spec.profile["samples"] == 36 * 2 * 2
    assert spec.profile["groups"] == {"train": 26, "val": 5, "test": 5}


def test_spoken_words_without_espeak_say_how_to_get_it(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from archselect.config.errors import DataError
    from archselect.config.schema import SpokenWordsSourceConfig
    from archselect.data.audio import load_spoken_words

    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without espeak-ng
    source = SpokenWordsSourceConfig(source="spoken_words", name="spoken_words", words=["go"],
                                     folder=str(tmp_path / "words"))
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        load_spoken_words(source)


@pytest.mark.study
def test_an_audio_folder_study_serves_raw_sample_arrays(tmp_path: Path) -> None:
    from archselect.run import run

    folder = write_folder(tmp_path / "sounds", per_class=30)
    cfg = compose_cfg(["task=audio_classification", "data=audio_folder", f"data.path={folder}",
                       "selector.candidates=[mfcc_mlp,cnn_logmel]", "search.n_trials=2",
                       "search.max_epochs=3"], tmp_path / "runs")
    result = run(cfg)
    assert result.reference_name.startswith("MFCC statistics + logistic regression")
    assert result.test_metrics["accuracy"] > 0.5
    rng = np.random.default_rng(7)
    rows = [[clip(kind, rate, rng).tolist(), rate]
            for kind, rate in (("low", 8000), ("high", 44100), ("chirp", 16000))]
    request = tmp_path / "in.json"
    request.write_text(json.dumps({"dataframe_split": {"columns": ["audio", "sample_rate"],
                                                       "data": rows}}))
    answer = mlflow_models_predict(str(cfg.tracking.uri),
                                   "models:/archselect-audio_classification@champion", request)
    assert list(answer.columns) == ["label", "probability"]
    assert set(answer["label"]) <= {"low", "high", "chirp"} and len(answer) == 3
