"""The classical reference of each row: not a candidate and not trained by Lightning, but fitted
on the same rows and scored the same way, so that every study answers "is the network worth it?".

- text: TF-IDF of word 1-2 grams and character 2-5 grams + logistic regression
- tabular: HistGradientBoosting (classifier or regressor) on the encoded features
- image: an RBF support vector machine on the normalised pixels (training rows sub-sampled)
- series classification: 1-nearest neighbour (Euclidean) on the standardised series
- forecasting: exponential smoothing (ETS, statsmodels), refitted at every forecast origin
- translation: copying the source, or retrieval (the nearest training source's translation)
- image generation: per-pixel Gaussian samples
- audio: MFCC statistics + logistic regression

Each reference picks its one setting (the regularisation, the learning rate, the trend) on the
validation rows by the task's monitored metric, exactly as trials are scored: on the validation
split, or on the same cross-validation folds. Its validation value stands in the leaderboard; it
is then fitted on train + val (when the final model is refitted) and tested. With
``selector.register_references=true`` a reference that beats the networks on validation is what
is registered, behind the same served-model contract.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archselect.data.base import BaseDataModule, DataSpec, View
from archselect.registry import Registry
from archselect.selector import Task
from archselect.serving import Codec, _Quiet, as_frame

#: reference makers by data kind: ``fn(dm, spec) -> Maker``
references: Registry[Any] = Registry("reference", "selector.references")


@dataclass
class Maker:
    """How one row's reference is built: a name, its settings to pick from on validation, and
    a function that fits one setting on some rows and returns what predicts the others."""

    name: str
    settings: list[Any]
    #: (setting, fit rows, predict rows) -> scores of the predict rows (probabilities or values)
    fit_predict: Callable[[Any, Any, Any], torch.Tensor]
    #: the rows of the pool, the test rows, and their targets (in the family's units)
    pool: Any
    test: Any
    pool_targets: torch.Tensor
    test_targets: torch.Tensor
    #: (setting, fit rows) -> an estimator with ``predict_scores(features)`` (or, forecasting,
    #: ``forecast(history)``) for serving, or None where the reference cannot be served
    fit_model: Callable[[Any, Any], Any] | None = None
    describe: Callable[[Any], str] = str
    #: the spec its scores are judged with, where it differs from the prepared data's (e.g. it
    #: names the tokenizer that turns translations back into sentences)
    spec: DataSpec | None = None


@dataclass
class Reference:
    """A row's reference, fitted and scored.

    Attributes:
        name: what it is.
        setting: its setting picked on validation.
        val_value: the monitored metric on validation (the mean over the folds).
        val_std: its spread over the folds (0 with one validation split).
        test_metrics: the family's test metrics.
        seconds: how long choosing, fitting and testing took.
        model: the fitted estimator (for ``selector.register_references``), or None.
    """

    name: str
    setting: str
    val_value: float
    val_std: float
    test_metrics: dict[str, float]
    seconds: float
    model: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def fit_reference(dm: BaseDataModule, family_cls: Any, task: Task, views: list[View | None],
                  refit: bool) -> Reference | None:
    """The row's reference: its setting picked on ``views`` (the folds trials are scored on, or
    the plain split), fitted on train + val when ``refit`` (else on train), then tested. None
    when the data kind has no reference."""
    spec = dm.prepare()
    if spec.kind not in references:
        return None
    start = time.monotonic()
    maker: Maker = references.get(spec.kind)(dm, spec)
    spec = maker.spec or spec
    n_train, n_val = dm.pool_sizes()
    plain = View(fit=np.arange(n_train), check=np.arange(n_train, n_train + n_val))
    folds = [v or plain for v in views]
    maximize = task.direction == "maximize"

    def value(setting: Any) -> list[float]:
        out = []
        for view in folds:
            scores = maker.fit_predict(setting, _take(maker.pool, view.fit),
                                       _take(maker.pool, view.check))
            out.append(float(family_cls.monitor_value(scores, maker.pool_targets[view.check],
                                                      spec, task.monitor)))
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and statsmodels' warnings
        tried = [(s, value(s)) for s in maker.settings]
        setting, values = (max if maximize else min)(tried, key=lambda sv: float(np.mean(sv[1])))
        rows = np.arange(n_train + n_val) if refit else plain.fit
        fitted = _take(maker.pool, rows)
        scores = maker.fit_predict(setting, fitted, maker.test)
        model = maker.fit_model(setting, fitted) if maker.fit_model is not None else None
    preds = family_cls.decode_scores(scores)
    return Reference(name=maker.name, setting=maker.describe(setting),
                     val_value=float(np.mean(values)), val_std=float(np.std(values)),
                     test_metrics=family_cls.evaluate(preds, maker.test_targets, spec),
                     seconds=time.monotonic() - start, model=model,
                     extra={"setting": setting})


def study_reference(dm: BaseDataModule, family_cls: Any, task: Task, views: list[View | None],
                    refit: bool, folder: Path) -> Reference | None:
    """``fit_reference``, kept in the study's checkpoint folder: a resumed study (its data and
    folds the same, which the study's identity makes sure of) reads it back."""
    import joblib

    path = folder / f"reference-{len(views)}-folds{'-refit' if refit else ''}.joblib"
    if path.is_file():
        try:
            found = joblib.load(path)
            if isinstance(found, Reference):
                return found
        except Exception:  # damaged or from another version: fitted again
            pass
    reference = fit_reference(dm, family_cls, task, views, refit)
    if reference is not None:
        # Only a shortcut for a resume: a folder that cannot take it (the trials then say why,
        # and stop the study) costs a refit of the reference next time, nothing else.
        with suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            joblib.dump(reference, tmp)
            tmp.replace(path)  # whole, or not there
    return reference


def _take(rows: Any, index: np.ndarray) -> Any:
    """Rows ``index`` of features (an array, or texts with their rows of the pool)."""
    if isinstance(rows, _Rows):
        return _Rows([rows[int(i)] for i in index], rows.rows[index])
    return rows[index]


def _features(dm: BaseDataModule, part: str) -> tuple[np.ndarray, torch.Tensor]:
    """The inputs of ``part`` flattened, as the served model's codec encodes them (normalised
    pixels, standardised series, encoded table rows), and the targets as the loaders give them."""
    xs, ys = [], []
    for batch in dm.ordered_loader(part):
        xs.append(batch["inputs"]["x"].flatten(1).float())
        ys.append(batch["target"])
    return torch.cat(xs).numpy(), torch.cat(ys)


def _probabilities(model: Any, x: Any, n_classes: int) -> torch.Tensor:
    """Class probabilities of a fitted classifier over every class (a class the fit rows lacked
    gets 0), or one-hot predictions for a classifier without probabilities."""
    out = np.zeros((len(x), n_classes), dtype=np.float32)
    if hasattr(getattr(model, "model", model), "predict_proba"):  # SVC without probabilities
        out[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(x)
    else:
        out[np.arange(len(x)), np.asarray(model.predict(x), dtype=np.int64)] = 1.0
    return torch.as_tensor(out)


class _Classifier:
    """A fitted scikit-learn classifier answering ``predict_scores`` over every class."""

    def __init__(self, model: Any, n_classes: int) -> None:
        self.model, self.n_classes = model, n_classes

    def predict_scores(self, x: Any) -> torch.Tensor:
        return _probabilities(self.model, x, self.n_classes)


class _Regressor:
    """A fitted scikit-learn regressor on standardised targets, answering in the target's
    standardised units (what the codec un-standardises)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict_scores(self, x: Any) -> torch.Tensor:
        return torch.as_tensor(self.model.predict(x), dtype=torch.float32)


def _sklearn_maker(name: str, settings: list[Any], make: Callable[[Any], Any],
                   describe: Callable[[Any], str], pool: Any, test: Any,
                   pool_y: torch.Tensor, test_y: torch.Tensor, spec: DataSpec, *,
                   classes: bool, max_fit_rows: int | None = None, seed: int = 0) -> Maker:
    """A reference from a scikit-learn estimator factory ``make(setting)``. Targets: class
    indices, or standardised values (``spec.target_mean`` / ``target_std``) that are reported in
    the target's units."""
    y_fit = pool_y.numpy()

    def rows_for_fit(x: Any, y: np.ndarray) -> tuple[Any, np.ndarray]:
        if max_fit_rows is None or len(y) <= max_fit_rows:
            return x, y
        keep = np.sort(np.random.default_rng(seed).choice(len(y), max_fit_rows, replace=False))
        return _take(x, keep), y[keep]

    def fitted(setting: Any, x: Any) -> Any:
        index = _index_of(x)
        xs, ys = rows_for_fit(x, y_fit[index])
        return make(setting).fit(xs, ys)

    def fit_predict(setting: Any, x_fit: Any, x_out: Any) -> torch.Tensor:
        model = fitted(setting, x_fit)
        if classes:
            return _probabilities(model, x_out, spec.num_classes)
        z = torch.as_tensor(model.predict(x_out), dtype=torch.float32)
        return z * spec.target_std + spec.target_mean

    def fit_model(setting: Any, x_fit: Any) -> Any:
        model = fitted(setting, x_fit)
        return _Classifier(model, spec.num_classes) if classes else _Regressor(model)

    units = (lambda y: y) if classes else (lambda y: y.float() * spec.target_std
                                           + spec.target_mean)
    return Maker(name=name, settings=settings, fit_predict=fit_predict, pool=pool, test=test,
                 pool_targets=units(pool_y), test_targets=units(test_y), fit_model=fit_model,
                 describe=describe)


class _Rows(list[str]):
    """Texts that remember their rows of the pool (a fit picks its targets by them)."""

    def __init__(self, items: list[str], rows: np.ndarray) -> None:
        super().__init__(items)
        self.rows = rows


def _index_of(x: Any) -> np.ndarray:
    """The pool rows ``x`` was taken from (features carry them, see ``_indexed``)."""
    return np.asarray(x.rows if isinstance(x, _Rows) else x[:, -1], dtype=np.int64)


# The pool's features carry their row number in a last column (dropped before fitting), so that a
# fit on any subset of rows finds its targets; texts carry it as an attribute.
def _indexed(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.arange(len(x), dtype=x.dtype)[:, None]], axis=1)


class _DropIndex:
    """A scikit-learn estimator fitted and applied without the row-number column."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def fit(self, x: np.ndarray, y: np.ndarray) -> _DropIndex:
        self.model.fit(x[:, :-1], y)
        self.classes_ = getattr(self.model, "classes_", None)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x[:, :-1]))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(x[:, :-1]))


class _TakeTexts:
    """Texts in; the row-number attribute is only for finding targets."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def fit(self, x: list[str], y: np.ndarray) -> _TakeTexts:
        self.model.fit(list(x), y)
        self.classes_ = self.model.classes_
        return self

    def predict(self, x: list[str]) -> np.ndarray:
        return np.asarray(self.model.predict(list(x)))

    def predict_proba(self, x: list[str]) -> np.ndarray:
        return np.asarray(self.model.predict_proba(list(x)))


def _array_maker(dm: BaseDataModule, spec: DataSpec, name: str, settings: list[Any],
                 make: Callable[[Any], Any], describe: Callable[[Any], str], *,
                 max_fit_rows: int | None = None) -> Maker:
    """A reference on the flattened inputs the loaders (and the served codec) produce."""
    dm.for_trial(None, batch_size=512, num_workers=0)
    pool_x, pool_y = _features(dm, "pool")
    test_x, test_y = _features(dm, "test")
    classes = spec.num_classes > 0
    return _sklearn_maker(name, settings, lambda s: _DropIndex(make(s)), describe,
                          _indexed(pool_x), _indexed(test_x), pool_y, test_y, spec,
                          classes=classes, max_fit_rows=max_fit_rows, seed=dm.seed)


@references.register("text")
def text_reference(dm: Any, spec: DataSpec) -> Maker:
    """TF-IDF (word 1-2 grams + character 2-5 grams within words) + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    texts = [*dm.texts["train"], *dm.texts["val"]]
    pool = _Rows(texts, np.arange(len(texts)))
    test = _Rows(list(dm.texts["test"]), np.full(len(dm.texts["test"]), -1))
    y = torch.as_tensor(np.concatenate([dm.labels["train"], dm.labels["val"]]))
    balanced = spec.profile.get("balance", {}).get("imbalance_ratio", 1.0) > 1.5

    def make(c: float) -> Any:
        return _TakeTexts(make_pipeline(
            make_union(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                       TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2,
                                       sublinear_tf=True, max_features=200_000)),
            LogisticRegression(C=c, max_iter=2000,
                               class_weight="balanced" if balanced else None)))

    return _sklearn_maker("TF-IDF (word 1-2 + char 2-5 grams) + logistic regression",
                          [1.0, 4.0, 16.0], make, lambda c: f"C={c:g}", pool, test, y,
                          torch.as_tensor(dm.labels["test"]), spec, classes=True)


@references.register("tabular")
def tabular_reference(dm: Any, spec: DataSpec) -> Maker:
    """HistGradientBoosting on the encoded features; the learning rate picked on validation."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    make_cls = (HistGradientBoostingClassifier if spec.num_classes
                else HistGradientBoostingRegressor)
    return _array_maker(dm, spec, make_cls.__name__, [0.03, 0.1, 0.3],
                        lambda lr: make_cls(learning_rate=lr, random_state=dm.seed),
                        lambda lr: f"learning rate {lr:g}")


@references.register("image")
def image_reference(dm: Any, spec: DataSpec) -> Maker:
    """An RBF support vector machine on the normalised pixels (at most 5,000 training images:
    its fit grows with their square)."""
    from sklearn.svm import SVC

    return _array_maker(dm, spec, "SVC (RBF) on pixels", [1.0, 10.0],
                        lambda c: SVC(C=c, gamma="scale", random_state=dm.seed),
                        lambda c: f"C={c:g}", max_fit_rows=5000)


class _MfccStats:
    """Flattened log-mel spectrograms -> their MFCC statistics (a scikit-learn transformer)."""

    def __init__(self, shape: list[int]) -> None:
        self.shape = list(shape)

    def fit(self, x: np.ndarray, y: Any = None) -> _MfccStats:
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        from archselect.data.audio import mfcc_stats

        batch = torch.as_tensor(np.asarray(x, dtype=np.float32)).view(-1, *self.shape)
        return mfcc_stats(batch).numpy()


@references.register("audio")
def audio_reference(dm: Any, spec: DataSpec) -> Maker:
    """Logistic regression on the clips' MFCC statistics (the mean and spread over time of 20
    MFCCs), standardised; the regularisation picked on validation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _array_maker(dm, spec, "MFCC statistics + logistic regression", [0.1, 1.0, 10.0],
                        lambda c: make_pipeline(_MfccStats(spec.input_shape), StandardScaler(),
                                                LogisticRegression(C=c, max_iter=3000)),
                        lambda c: f"C={c:g}")


@references.register("sequences")
def sequence_reference(dm: Any, spec: DataSpec) -> Maker:
    """1-nearest neighbour (Euclidean) on the standardised series, the time series archive's own
    reference classifier."""
    from sklearn.neighbors import KNeighborsClassifier

    return _array_maker(dm, spec, "1-NN (Euclidean) on the series", [1],
                        lambda k: KNeighborsClassifier(n_neighbors=k), lambda k: f"k={k}")


class ETSForecaster:
    """Exponential smoothing with one setting (trend, season), fitted on whatever history it is
    given and forecasting ``horizon`` steps from its end: at every origin of the study, and in
    the served model on the user's history."""

    def __init__(self, setting: tuple[str | None, str | None], horizon: int,
                 season: int) -> None:
        self.trend, self.seasonal = setting
        self.horizon = horizon
        self.season = season

    def forecast(self, history: np.ndarray) -> np.ndarray:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        m = self.season
        season = self.seasonal if self.seasonal and len(history) >= 2 * m else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels' convergence notes
            fit = ExponentialSmoothing(np.asarray(history, dtype=np.float64), trend=self.trend,
                                       seasonal=season,
                                       seasonal_periods=m if season else None).fit()
            return np.asarray(fit.forecast(self.horizon), dtype=np.float64)


@references.register("series")
def series_reference(dm: Any, spec: DataSpec) -> Maker:
    """Exponential smoothing (statsmodels ETS) fitted at every forecast origin on the history
    before it; trend and season picked on validation. Served, it is fitted on the history the
    user gives and forecasts from its end."""
    h, m = spec.horizon, spec.season_length
    series = dm.values[:, 0]
    pool_origins = np.concatenate([dm.origins["train"], dm.origins["val"]])
    options = [(t, s) for t in (None, "add") for s in ((None, "add") if m > 1 else (None,))]

    def forecast(setting: tuple[str | None, str | None], origins: np.ndarray) -> torch.Tensor:
        ets = ETSForecaster(setting, h, m)
        out = [ets.forecast(series[:int(o)]) for o in origins]
        return torch.as_tensor(np.asarray(out), dtype=torch.float32)

    def targets(origins: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(series[origins[:, None] + np.arange(h)[None, :]],
                               dtype=torch.float32)

    # ETS fits the history before each origin itself: "fit rows" are only the origins to forecast.
    return Maker(name="ETS (exponential smoothing), refitted at every origin", settings=options,
                 fit_predict=lambda setting, _fit, out: forecast(setting, out),
                 pool=pool_origins, test=dm.origins["test"],
                 pool_targets=targets(pool_origins), test_targets=targets(dm.origins["test"]),
                 fit_model=lambda setting, _fit: ETSForecaster(setting, h, m),
                 describe=lambda o: f"trend {o[0]}, season {o[1]}")


@references.register("text_pairs")
def pairs_reference(dm: Any, spec: DataSpec) -> Maker:
    """Copying the source, or retrieval: the target of the training source nearest to it
    (cosine of TF-IDF character 2-4 grams, the translation memory of the data kind); the one
    with the higher chrF on validation."""
    from archselect.data.pairs import Memory, encode_targets

    trial_spec = dm.for_trial(None, batch_size=64, num_workers=0)
    path, width = str(trial_spec.profile["target_tokenizer"]), dm.width()
    sources = [*dm.sources["train"], *dm.sources["val"], *dm.sources["test"]]
    targets = [*dm.targets_text["train"], *dm.targets_text["val"], *dm.targets_text["test"]]
    n_pool = len(dm.sources["train"]) + len(dm.sources["val"])

    def fit_predict(setting: str, fit: np.ndarray, out: np.ndarray) -> torch.Tensor:
        if setting == "copy":
            return encode_targets([sources[i] for i in out], path, width)
        memory = Memory([sources[i] for i in fit], [targets[i] for i in fit])
        return encode_targets(memory.matches([sources[i] for i in out]), path, width)

    return Maker(name="copy or retrieval (nearest training source's target)",
                 settings=["copy", "retrieval"], fit_predict=fit_predict,
                 pool=np.arange(n_pool), test=np.arange(n_pool, len(sources)),
                 pool_targets=dm.pool_targets(), test_targets=dm.targets("test"),
                 describe=str, spec=trial_spec)


@references.register("image_generation")
def generation_reference(dm: Any, spec: DataSpec) -> Maker:
    """Per-pixel Gaussian samples: each pixel drawn independently with the mean and standard
    deviation of that pixel over the fitted images (no structure between pixels: the bar any
    generator must clear)."""
    trial_spec = dm.for_trial(None, batch_size=64, num_workers=0)
    images = torch.cat([dm.images["train"], dm.images["val"], dm.images["test"]]).float()
    n_pool = len(dm.images["train"]) + len(dm.images["val"])

    def fit_predict(setting: str, fit: np.ndarray, out: np.ndarray) -> torch.Tensor:
        chosen = images[torch.as_tensor(fit)]
        mean, std = chosen.mean(0), chosen.std(0)
        gen = torch.Generator().manual_seed(len(fit))
        drawn = mean + std * torch.randn((len(out), *mean.shape), generator=gen)
        return drawn.round().clamp(0, 255)

    return Maker(name="per-pixel Gaussian (each pixel's mean and spread)",
                 settings=["independent pixels"], fit_predict=fit_predict,
                 pool=np.arange(n_pool), test=np.arange(n_pool, len(images)),
                 pool_targets=dm.pool_targets(), test_targets=dm.targets("test"),
                 describe=str, spec=trial_spec)


class ReferenceModel(_Quiet):
    """A registered reference (``selector.register_references=true``): the data kind's codec
    reads the user's rows as for the network, the fitted estimator (artifact ``reference``)
    predicts, the codec answers in the same columns."""

    def __init__(self, codec: Codec, classes: bool) -> None:
        self.codec = codec
        self.classes = classes
        self.model: Any = None

    def load_context(self, context: Any) -> None:
        import joblib

        self.model = joblib.load(context.artifacts["reference"])
        self.codec.load(dict(context.artifacts))

    def predict(self, context, model_input, params=None):
        frame = as_frame(model_input)
        read_history = getattr(self.codec, "read_history", None)
        if read_history is not None:  # forecasting: fitted on the whole history given
            history, last = read_history(frame)
            return self.codec.forecast_frame(  # type: ignore[attr-defined]
                self.model.forecast(history[:, 0]), last)
        texts = getattr(self.codec, "texts", None)
        keys: Any = None
        if texts is not None:
            rows = _Rows(texts(frame), np.full(len(frame), -1))
            scores = self.model.predict_scores(rows)
        else:
            batches, keys = self.codec.encode(frame)
            x = torch.cat([b["x"].flatten(1).float() for b in batches]).numpy()
            scores = self.model.predict_scores(_indexed(x))
        outputs = torch.log(scores.clamp_min(1e-12)) if self.classes else scores
        return self.codec.decode(outputs, keys, params)
