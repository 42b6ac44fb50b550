"""MLflow: an experiment per task, a parent run per study, a child run per trial, the model."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from mlflow.exceptions import MlflowException

from archselect.config.errors import ArchselectError, ConfigError, store_failure
from archselect.config.schema import TrackingConfig
from archselect.secrets import mask_secrets

RUN_TAG = "archselect.run"
STATE_TAG = "archselect.state"
STUDY_TAG = "archselect.study"
TRIAL_TAG = "archselect.trial"
REASON_TAG = "archselect.fail_reason"
DATA_HASH_TAG = "archselect.data_hash"
TEST_METRIC_TAG = "archselect.test_metric"

def trial_description(study_name: str, number: int, arch: str, params: dict[str, Any]) -> str:
    """The child run's description: what this trial tried (markdown, shown by the MLflow UI)."""
    lines = [f"Trial {number} of study **{study_name}**: `{arch}` with"]
    lines += [f"- `{k}` = {v}" for k, v in sorted(params.items())]
    return "\n".join(lines)


def _quiet() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints run links built from the tracking URI, password included; ours are masked.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # It logs a store's error with its traceback, then raises it: archselect says it in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


class Tracker:
    """Writes one study to MLflow.

    Args:
        uri: the tracking URI (``sqlite:///runs/mlflow.db``, ``http://host:5000``, ...).
        experiment: experiment name (one per task).
        artifact_location: folder for the experiment's artifacts (used when it is created).
    """

    def __init__(self, uri: str, experiment: str, artifact_location: str, *,
                 system_metrics_interval: float | None = None) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        _quiet()
        database = _check_store(uri)
        created = database is not None and not database.exists()
        if created and database is not None:
            _start_from_template(database)
        self.uri = uri
        mlflow.set_tracking_uri(uri)
        try:
            self.client = MlflowClient(tracking_uri=uri)  # opens (or creates) the store
            self.experiment_id = self._experiment(experiment, artifact_location)
            # A store that can be read but not written (read-only, full) fails here, before the
            # search, rather than in its first trial.
            self.client.set_experiment_tag(self.experiment_id, "archselect.opened",
                                           time.strftime("%Y-%m-%d %H:%M:%S"))
        except ConfigError:
            raise
        except Exception as exc:
            if created and database is not None and database.is_file() and (
                    database.stat().st_size == 0):
                database.unlink()  # nothing half-made is left behind
            raise store_error(exc, uri) from None
        self.experiment = experiment
        self.parent_id: str | None = None
        self.system_metrics_interval = system_metrics_interval
        self._monitors: dict[str, Any] = {}

    def _experiment(self, name: str, artifact_location: str) -> str:
        """The experiment's id, created with its artifact folder when new; refused when it keeps
        its artifacts somewhere else than this config says (a copied runs folder)."""
        local = not self.uri.startswith(("http://", "https://", "databricks"))
        folder = Path(artifact_location).expanduser().resolve()
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if local:  # local stores keep artifacts beside them; a server uses its own store
                folder.mkdir(parents=True, exist_ok=True)
                location = folder.as_uri()
            try:
                return str(self.client.create_experiment(name, artifact_location=location))
            except Exception:  # another command made it at the same moment: use theirs
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        kept = str(exp.artifact_location)
        if local and kept.startswith("file://") and Path(kept.removeprefix("file://")) != folder:
            raise ConfigError(
                "tracking.artifact_location", f"experiment {name!r} of this store keeps its "
                f"artifacts in {kept.removeprefix('file://')}, not in {folder} (a copied or moved "
                "runs folder?); a study would write its models there",
                fix=f"set tracking.artifact_location={kept.removeprefix('file://')} to use them, "
                "or tracking.experiment=<a new name> to start an experiment whose artifacts live "
                "here")
        return str(exp.experiment_id)

    @classmethod
    def open(cls, tracking: TrackingConfig) -> Tracker:
        """The tracker of the ``tracking`` section (its store checked, its experiment made)."""
        return cls(tracking.uri, tracking.experiment, tracking.artifact_location,
                   system_metrics_interval=tracking.system_metrics_interval)

    # -- parent ---------------------------------------------------------------------------
    def start_study(self, study_name: str, tags: dict[str, str], resume_run_id: str | None) -> str:
        """Open the study's parent run; a resumed study passes the run id it recorded."""
        found = None
        if resume_run_id:
            try:
                found = self.client.get_run(resume_run_id)
            except Exception:  # deleted, or another tracking store: start a new parent
                found = None
        if found is not None and found.info.lifecycle_stage == "active":
            run_id = found.info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=study_name,
                tags={STUDY_TAG: study_name, "archselect.role": "study", **tags},
            )
            run_id = run.info.run_id
        self.parent_id = run_id
        return run_id

    def end_study(self, status: str = "FINISHED") -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status=status)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        fresh = [Param(k, mask_secrets(str(v))[:6000]) for k, v in params.items()
                 if k not in existing]
        for i in range(0, len(fresh), 100):
            self.client.log_batch(run_id, params=fresh[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self.log_steps(run_id, [(step, int(time.time() * 1000), metrics)])

    def log_steps(self, run_id: str, steps: list[tuple[int, int, dict[str, float]]]) -> None:
        """Metrics of several steps in as few writes as the store takes (``(step, time in ms,
        metrics)`` each; values that are not finite are left out)."""
        from mlflow.entities import Metric

        batch = [Metric(k, float(v), when, step) for step, when, metrics in steps
                 for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
        for i in range(0, len(batch), 1000):  # MLflow's limit per batch
            self.client.log_batch(run_id, metrics=batch[i : i + 1000])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, mask_secrets(str(v)))

    def log_text(self, text: str, name: str) -> None:
        assert self.parent_id
        self.client.log_text(self.parent_id, mask_secrets(text), name)

    def log_image(self, run_id: str, image: Any, key: str, step: int) -> None:
        """An image (uint8 ``H x W x C``) of a run at a step (MLflow's image history)."""
        self.client.log_image(run_id, image, key=key, step=step)

    def log_figure(self, figure: Any, name: str) -> None:
        assert self.parent_id
        self.client.log_figure(self.parent_id, figure, name)

    def log_dataset(self, *, name: str, digest: str, source: str, profile: dict[str, Any],
                    schema: dict[str, Any] | None = None, context: str = "training") -> None:
        """Record the study's data as an MLflow dataset input of the parent run."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        assert self.parent_id
        local = "://" not in source
        dataset = Dataset(name=name, digest=digest, source_type="local" if local else "http",
                          source=json.dumps({"uri": mask_secrets(source)}),
                          schema=json.dumps(schema) if schema else None,
                          profile=json.dumps(profile, default=str))
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
        try:
            self.client.log_inputs(self.parent_id, datasets=inputs)
        except MlflowException:
            # Commands on one study log the same dataset at once; a server's store refuses all
            # but the first insert. It is there now, and logging it again links it.
            time.sleep(0.5)
            self.client.log_inputs(self.parent_id, datasets=inputs)

    # -- children -------------------------------------------------------------------------
    def start_trial(self, study_name: str, number: int, arch: str,
                    params: dict[str, Any]) -> str:
        """Open the child run of one trial under the parent."""
        assert self.parent_id
        run = self.client.create_run(
            self.experiment_id, run_name=f"trial-{number} {arch}",
            tags={"mlflow.parentRunId": self.parent_id, STUDY_TAG: study_name,
                  TRIAL_TAG: str(number), "archselect.arch": arch, STATE_TAG: "RUNNING",
                  "archselect.role": "trial",
                  "mlflow.note.content": trial_description(study_name, number, arch, params)},
        )
        run_id = str(run.info.run_id)
        self.log_params(run_id, {"arch": arch, **params})
        self._start_system_metrics(run_id)
        return run_id

    def _start_system_metrics(self, run_id: str) -> None:
        """Sample CPU / GPU utilisation and memory into the run while it trains."""
        if not self.system_metrics_interval:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=self.system_metrics_interval,
                                       tracking_uri=self.uri)
        monitor.start()
        self._monitors[run_id] = monitor

    def _stop_system_metrics(self, run_id: str) -> None:
        monitor = self._monitors.pop(run_id, None)
        if monitor is not None:
            monitor.finish()

    def end_trial(self, run_id: str, state: str, *, reason: str | None = None,
                  metrics: dict[str, float] | None = None) -> None:
        """Close a child run. PRUNED ends FINISHED (it is not a failure), with its state tag."""
        self._stop_system_metrics(run_id)
        if metrics:
            self.log_metrics(run_id, metrics)
        tags: dict[str, Any] = {STATE_TAG: state}
        if reason:
            tags[REASON_TAG] = reason[:4000]
        self.set_tags(run_id, tags)
        status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}.get(state,
                                                                                   "KILLED")
        self.client.set_terminated(run_id, status=status)

    def epoch_logger(self, run_id: str, *, step_offset: int = 0,
                     latency: bool = True) -> EpochLogger:
        return EpochLogger(self, run_id, step_offset=step_offset, latency=latency)

    # -- model ----------------------------------------------------------------------------
    def log_model(self, python_model: Any, *, artifacts: dict[str, str], signature: Any,
                  input_example: Any, code_paths: list[str], pip_requirements: list[str],
                  register_as: str | None, trial: str) -> tuple[str, int | None]:
        """Log the final model as a pyfunc under the parent run and register it; ``trial`` says
        which trials it holds (``3``, ``3+refit``, ``3:0.600+5:0.400+refit``), so that a rerun
        finds the version (``registered_version``).

        Returns:
            (model URI, registered version or None).
        """
        import mlflow

        assert self.parent_id
        try:
            with mlflow.start_run(run_id=self.parent_id), warnings.catch_warnings():
                # The signature below is the schema; MLflow's hint about type hints is noise.
                warnings.filterwarnings("ignore", message=".*type hint.*", category=UserWarning)
                info = mlflow.pyfunc.log_model(
                    name="model", python_model=python_model, artifacts=artifacts,
                    signature=signature, input_example=input_example, code_paths=code_paths,
                    pip_requirements=pip_requirements,
                )
                version = None
                if register_as:
                    # Tagged as it is created: a rerun finds it (registered_version). MLflow's
                    # own "Successfully registered" lines would land inside the report's
                    # tables: they go to the study's log file, the summary line says it.
                    said = io.StringIO()
                    with contextlib.redirect_stderr(said):
                        mv = mlflow.register_model(info.model_uri, register_as, tags={
                            RUN_TAG: self.parent_id, TRIAL_TAG: str(trial)})
                    for line in said.getvalue().splitlines():
                        if line.strip():
                            logging.getLogger("mlflow.register").info(line.strip())
                    version = int(mv.version)
        except (OSError, MlflowException) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise ArchselectError(f"tracking: cannot write the model ({type(exc).__name__}: "
                                  f"{mask_secrets(first)}); fix: free the disk or repair the "
                                  "store, then run the same command again") from None
        self.client.update_run(self.parent_id, status="RUNNING")
        return str(info.model_uri), version

    def registered_version(self, model_name: str, run_id: str, trial: str) -> int | None:
        """The version of ``model_name`` already registered for this final model (``trial``, as
        ``log_model`` tags it) of this study's parent run, if any (a rerun of a finished or
        interrupted study finds it)."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client.search_model_versions(f"name = '{model_name}'")
        except MlflowException:
            return None
        mine = [int(v.version) for v in versions if v.run_id == run_id
                and v.tags.get(TRIAL_TAG) == str(trial)
                and v.tags.get(RUN_TAG, run_id) == run_id]
        return max(mine) if mine else None

    def log_onnx(self, path: Path, *, input_example: dict[str, Any], signature: Any,
                 pip_requirements: list[str]) -> str:
        """Log an ONNX file as an MLflow ``onnx`` model named ``onnx`` under the parent run
        (next to the pyfunc ``model``). Returns its model URI."""
        import mlflow
        import onnx

        assert self.parent_id
        try:
            with mlflow.start_run(run_id=self.parent_id):
                info = mlflow.onnx.log_model(
                    onnx.load(str(path)), name="onnx", input_example=input_example,
                    signature=signature,
                    pip_requirements=pip_requirements, save_as_external_data=False)
        except OSError as exc:
            raise ArchselectError(f"tracking: cannot write the ONNX model ({exc})") from None
        self.client.update_run(self.parent_id, status="RUNNING")
        return str(info.model_uri)


    def _missing_artifacts(self, model_name: str, version: Any) -> str | None:
        """Where a local model version's files should be, when they are gone (else None)."""
        from urllib.parse import unquote, urlparse

        try:
            uri = str(self.client.get_model_version_download_uri(model_name, str(version)))
        except MlflowException:
            return None
        scheme = urlparse(uri).scheme
        if scheme == "file":
            path = Path(unquote(urlparse(uri).path))
        elif not scheme:
            path = Path(uri)
        else:  # a server's artifacts (mlflow-artifacts:/, s3://, ...): not ours to look at
            return None
        return None if path.exists() else str(path)

    def update_champion(self, model_name: str, version: int, *, alias: str, metric: str,
                        value: float, direction: str, data_hash: str) -> str:
        """Tag a new model version with its test score and split, and move ``alias`` to it when
        it beats the version holding the alias on the same test split (and not otherwise).

        Returns:
            One line saying what happened to the alias and why.
        """
        from mlflow.exceptions import MlflowException

        tags = {DATA_HASH_TAG: data_hash, TEST_METRIC_TAG: metric, f"archselect.test_{metric}": value}
        for key, tag_value in tags.items():
            self.client.set_model_version_tag(model_name, str(version), key, str(tag_value))
        try:
            current = self.client.get_model_version_by_alias(model_name, alias)
        except MlflowException:  # no version holds the alias yet
            current = None
        here = f"{model_name}@{alias}"
        gone = None if current is None else self._missing_artifacts(model_name, current.version)
        if current is None:
            decision = f"{here} -> version {version} (the first {alias}; test {metric} {value:.4f})"
        elif int(current.version) == version:
            decision = f"{here} is version {version} (test {metric} {value:.4f})"
        elif gone:
            decision = (f"{here} -> version {version} (test {metric} {value:.4f}): version "
                        f"{current.version} no longer loads, its files at {gone} are gone")
        else:
            old_hash = current.tags.get(DATA_HASH_TAG)
            old = current.tags.get(f"archselect.test_{metric}")
            if old_hash != data_hash or old is None:
                return (f"{here} stays on version {current.version}: it was tested on another split "
                        f"or metric (data hash {old_hash}, now {data_hash}), so version {version} "
                        f"is not comparable; fix: move it by hand with MlflowClient()."
                        f"set_registered_model_alias('{model_name}', '{alias}', {version})")
            better = value > float(old) if direction == "maximize" else value < float(old)
            if not better:
                return (f"{here} stays on version {current.version} (test {metric} {float(old):.4f}"
                        f"; version {version}: {value:.4f}, not better)")
            decision = (f"{here} -> version {version} (test {metric} {value:.4f}, better than "
                        f"version {current.version}'s {float(old):.4f} on the same split)")
        self.client.set_registered_model_alias(model_name, alias, str(version))
        return decision


def _check_store(uri: str) -> Path | None:
    """A local SQLite store's file (made ready for MLflow), or None for another store; a file that
    is not an MLflow store or a server that does not answer is refused in one line first."""
    if uri.startswith(("http://", "https://")):
        import base64
        import urllib.error
        import urllib.request
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(uri)
        # urllib takes no user:password in the URL: they go in a Basic authorization header
        bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        request = urllib.request.Request(bare.rstrip("/") + "/health")
        if parts.username is not None:
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            request.add_header("Authorization",
                               "Basic " + base64.b64encode(token.encode()).decode())
        try:  # fast, before MLflow's client retries for minutes
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as exc:  # it answers
            if exc.code in (401, 403):
                raise ConfigError("tracking.uri", f"the tracking server refuses these credentials "
                                  f"(HTTP {exc.code})", given=mask_secrets(uri),
                                  fix="check the user and password in the URI") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError("tracking.uri", f"the tracking server does not answer ({reason})",
                              given=mask_secrets(uri),
                              fix="start the server (mlflow server ...) or check the URI") from None
        return None
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///")).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("tracking.uri", f"its folder cannot be created ({exc.strerror})",
                          given=mask_secrets(uri), fix="point it into a writable folder") from None
    if path.is_file() and path.stat().st_size > 0:
        with path.open("rb") as fh:
            header = fh.read(16)
        if header != b"SQLite format 3\x00":
            raise ConfigError("tracking.uri", f"{path} is not an MLflow store (not a SQLite "
                              "database: corrupt, or another file)", given=mask_secrets(uri),
                              fix="move the file away, or point tracking.uri at another file")
    return path


def _template_path() -> Path:
    """Where the empty MLflow database of the installed MLflow and SQLAlchemy is kept."""
    import mlflow
    import sqlalchemy

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "archselect"
    return cache / f"mlflow-{mlflow.__version__}-sqlalchemy-{sqlalchemy.__version__}.db"


def _start_from_template(database: Path) -> None:
    """Start a new local MLflow database as a copy of an empty one, migrated once per MLflow and
    SQLAlchemy version and kept in the user's cache. MLflow otherwise runs its whole chain of
    schema migrations (two to three seconds) for every new runs folder. The copy has no
    experiment: MLflow makes its default one, with this store's own artifact folder, on opening
    it. Where anything fails (no cache folder, no hard links), MLflow creates the database
    itself, as it would have."""
    import shutil
    import sqlite3

    template = _template_path()
    made = template.with_name(f".{template.name}.{os.getpid()}.partial")
    partial = database.with_name(f".{database.name}.{os.getpid()}.partial")
    try:
        if not template.is_file():
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            template.parent.mkdir(parents=True, exist_ok=True)
            made.unlink(missing_ok=True)
            store = SqlAlchemyStore(f"sqlite:///{made}", str(template.parent / "artifacts"))
            store.engine.dispose()
            with contextlib.closing(sqlite3.connect(made)) as db:
                db.execute("DELETE FROM experiment_tags")
                db.execute("DELETE FROM experiments")
                db.commit()
            made.replace(template)  # whole, or not there
        shutil.copyfile(template, partial)
        # A link, not a rename: a command that made the same database a moment earlier and
        # already writes to it keeps it (FileExistsError here).
        os.link(partial, database)
    except Exception:  # MLflow makes it, as without a template
        pass
    finally:
        for leftover in (made, partial):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


def store_error(exc: BaseException, uri: str) -> ConfigError:
    """A tracking-store failure as one line naming ``tracking.uri``."""
    return store_failure("tracking.uri", "cannot use the tracking store", exc, uri,
                         "check that the store is reachable, writable and not full (a damaged "
                         "database file: move it away, and a new one is made)")


def measure_latency(module: pl.LightningModule, inputs: dict[str, Any], repeats: int = 5
                    ) -> dict[str, float]:
    """Inference time of ``module`` per sample, in milliseconds: on one batch of ``inputs``
    (``latency_ms_per_sample``) and on its first sample alone (``latency_ms_single``);
    the median of ``repeats`` timed calls after a warm-up call."""
    import statistics

    import torch

    def timed(batch: dict[str, Any]) -> float:
        times = []
        for i in range(repeats + 1):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            module(**batch)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if i:  # the first call warms caches up
                times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000.0

    device = module.device
    batch = {k: v.to(device) for k, v in inputs.items()}
    n = int(next(iter(batch.values())).shape[0])
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            return {"latency_ms_per_sample": timed(batch) / n,
                    "latency_ms_single": timed({k: v[:1] for k, v in batch.items()})}
    finally:
        module.train(was_training)


def epoch_metrics(trainer: pl.Trainer, pl_module: pl.LightningModule,
                  prefix: str) -> dict[str, float]:
    """This epoch's ``val`` values (after validation) or ``train`` values and learning rate (at
    the end of the training epoch), as the epoch logger writes them."""
    values: Any = trainer.callback_metrics
    own: Any = getattr(pl_module, "epoch_values", None)
    if prefix == "train" and own is not None:
        values = own("train")  # means over the epoch, not logged to Lightning
    metrics = {k: float(v) for k, v in values.items() if k.startswith(prefix) and v.numel() == 1}
    if prefix == "train" and trainer.optimizers:
        metrics["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
    return metrics


class EpochLogger(pl.Callback):
    """Logs each epoch's val metrics (after validation) and train metrics and learning rate
    (at the end of the training epoch) to a trial's child run, with the epoch as step.

    The epochs are written together, every ``every`` seconds and when the fit ends or fails: one
    write to a database store costs milliseconds, more than a small model's whole epoch."""

    def __init__(self, tracker: Tracker, run_id: str, *, step_offset: int = 0,
                 latency: bool = True, every: float = 5.0) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.step_offset = step_offset  # fold f of a cross-validated trial logs from here
        self.latency = latency
        self.every = every
        self.pending: list[tuple[int, int, dict[str, float]]] = []
        self.written = time.monotonic()

    def replay(self, epoch: int, stage: str, metrics: dict[str, float]) -> None:
        """An epoch of a trial that ran on several processes (DDP), after its fit ended."""
        self.pending.append((self.step_offset + epoch, int(time.time() * 1000), metrics))

    def replayed(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """A DDP fit's epochs were all replayed: written with the latency, as at a fit's end."""
        self.on_fit_end(trainer, module)

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        self.pending.append((self.step_offset + trainer.current_epoch, int(time.time() * 1000),
                             epoch_metrics(trainer, pl_module, prefix)))
        if time.monotonic() - self.written >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write what is pending."""
        pending, self.pending = self.pending, []
        self.written = time.monotonic()
        if pending:
            self.tracker.log_steps(self.run_id, pending)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "val")
            grid = getattr(pl_module, "epoch_grid", None)
            if grid is not None:  # a generator's images of this epoch
                self.tracker.log_image(self.run_id, grid, "samples",
                                       step=self.step_offset + trainer.current_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "train")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        """The epochs before a failure, a pruning or an interrupt are kept."""
        with contextlib.suppress(Exception):  # the failure itself is what the trial reports
            self.flush()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The epochs still pending, and the trained model's inference latency on one
        validation batch."""
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and self.latency:
            batch = next(iter(datamodule.val_dataloader()))
            self.pending.append((0, int(time.time() * 1000),
                                 measure_latency(pl_module, batch["inputs"])))
        self.flush()
