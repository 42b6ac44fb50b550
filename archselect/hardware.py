"""The hardware profile: CPU cores, memory, GPUs and what precision they support; and the
versions of the packages that decide a study's numbers."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from archselect.config.errors import ConfigError

#: packages whose versions decide a study's numbers; logged with every study
PACKAGES = ("torch", "lightning", "optuna", "optuna-integration", "mlflow", "numpy",
            "scikit-learn", "pandas", "hydra-core", "tokenizers", "transformers", "torchvision")
PRECISIONS = ("auto", "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "64-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


@dataclass
class HardwareProfile:
    """What the machine offers to training."""

    cpu_cores: int
    torch_threads: int
    memory_gb: float
    gpus: list[dict[str, Any]] = field(default_factory=list)
    accelerator: str = "cpu"
    precision: str = "32-true"
    #: torch threads per process the environment allows (``OMP_NUM_THREADS``), None: no cap
    thread_cap: int | None = None

    @property
    def has_gpu(self) -> bool:
        return self.accelerator == "gpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_hardware(accelerator: str, precision: str) -> HardwareProfile:
    """Read the machine and resolve ``trainer.accelerator`` and ``trainer.precision``.

    Raises:
        ConfigError: for an unknown accelerator or precision, or a GPU asked for where none exists.
    """
    import psutil
    import torch

    accel = accelerator
    if accel not in ACCELERATORS:
        raise ConfigError("trainer.accelerator", "unknown accelerator", given=accel,
                          allowed=ACCELERATORS)
    if precision not in PRECISIONS:
        raise ConfigError("trainer.precision", "unknown precision", given=precision,
                          allowed=PRECISIONS)
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({
                "name": props.name,
                "memory_gb": round(props.total_memory / 2**30, 1),
                "bf16": bool(props.major >= 8),
            })
    if accel in ("gpu", "cuda") and not gpus:
        raise ConfigError("trainer.accelerator", "a GPU was asked for but none is visible",
                          given=accel, fix="use trainer.accelerator=auto or cpu")
    use_gpu = bool(gpus) and accel != "cpu"
    if precision == "auto" and not use_gpu:
        precision = "32-true"
    elif precision == "auto":
        precision = "bf16-mixed" if all(g["bf16"] for g in gpus) else "16-mixed"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return HardwareProfile(
        cpu_cores=cores,
        torch_threads=torch.get_num_threads(),
        memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
        gpus=gpus,
        accelerator="gpu" if use_gpu else "cpu",
        precision=precision,
        thread_cap=env_thread_cap(),
    )


def env_thread_cap() -> int | None:
    """``OMP_NUM_THREADS`` where the environment sets it to a whole number of at least 1 (a
    shared machine, a job scheduler or a test suite running one process per core): the most
    torch threads a trial takes unless ``search.threads`` says otherwise."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) >= 1 else None


def package_versions() -> dict[str, str]:
    """``version.<package>`` -> installed version, for the study's parent run."""
    from importlib import metadata

    out = {"version.python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def device_count(devices: Any) -> int:
    """How many devices (processes) ``trainer.devices`` asks for per trial: an int, a list of
    indices, or "auto"/-1 (counted as one: the trial's own device)."""
    if isinstance(devices, str):
        return int(devices) if devices.strip().isdigit() else 1
    if hasattr(devices, "__len__"):  # a list of GPU indices (a ListConfig too)
        return len(devices)
    return devices if isinstance(devices, int) and devices > 0 else 1
