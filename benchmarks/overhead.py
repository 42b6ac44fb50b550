"""Training overhead: one archselect trial vs a plain PyTorch loop, side by side, same process.

    .venv/bin/python benchmarks/overhead.py [--reps 3] [--rows image,tabular] [--epochs N]

Each row trains one fixed architecture with fixed hyperparameters (the candidate's defaults, its
baseline trial) twice per repetition: through ``archselect`` (``run(cfg)``: Optuna trial, MLflow
child run, Lightning fit with early stopping, checkpointing and per-epoch logging) and through a
plain loop written here: the same model class built by archselect's builder, the same tensors,
batch size, epochs, optimiser (AdamW + cosine schedule + gradient clipping at 1.0), torch threads,
and a validation pass after every epoch. Reports training samples per second of each (the trial's
wall time, and Lightning's ``fit`` alone) and their ratio; goal: ratio >= 0.90. Both paths run
once untimed first (one epoch) so that first-call costs hit neither. Where the goal is missed, a
cProfile of one extra archselect trial says where the time goes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

GOAL = 0.90
# One place for the rows: overrides that fix one candidate and its defaults for a whole run.
ROWS: dict[str, dict[str, Any]] = {
    # Convolutions on 8x8 digits: compute per step is small but real.
    "image": {"overrides": ["task=image_classification", "data=digits", "selector.candidates=[cnn]",
                            "arch.cnn.data.augment=0.0"], "epochs": 15},
    # A small MLP on 30 features: almost all of a step is per-step overhead.
    "tabular": {"overrides": ["task=tabular_classification", "data=breast_cancer",
                              "selector.candidates=[mlp]"], "epochs": 40},
}


def archselect_trial(overrides: list[str], epochs: int, profile: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """One trial through ``run(cfg)``; the trial's own wall time and Lightning's fit time."""
    import lightning.pytorch as pl

    from archselect.search.objective import Objective

    with benchlib.Probe() as probe, tempfile.TemporaryDirectory() as tmp:
        probe.wrap(pl.Trainer, "fit", "fit", region="fit")
        probe.wrap(Objective, "__call__", "trial")
        args = [*overrides, "search.n_trials=1", f"search.max_epochs={epochs}",
                f"search.patience={epochs}", "tracking.register=false", *benchlib.ONE_FIT]
        if profile is not None:
            probe.profile(Objective, "__call__", profile)
        result = benchlib.run_study(args, Path(tmp))
        record = result.outcome.records[0]
        if record.epochs != epochs:
            raise RuntimeError(f"the archselect trial ran {record.epochs} epochs, not {epochs}")
        cand = result.selection.candidates[0]
        return {"trial_s": probe.total("trial"), "fit_s": probe.total("fit"),
                "epochs": record.epochs, "candidate": cand, "val": record.value}


def plain_loop(cfg: Any, cand: Any, epochs: int) -> dict[str, Any]:
    """The same training written as a plain PyTorch loop over the same tensors."""
    import torch
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from archselect.architectures import build

    dm, _family = benchlib.datamodule(cfg)
    model_kw, optim, _data = cand.split(cand.defaults())
    spec = dm.for_trial(cand.option, batch_size=int(optim["batch_size"]), num_workers=0)
    x, y = split_tensors(dm, "train")
    xv, yv = split_tensors(dm, "val")
    start = time.perf_counter()  # from here on, what a trial does: build, fit, validate
    torch.manual_seed(int(cfg.seed))
    model = build(cand.name, spec, **model_kw)
    opt = torch.optim.AdamW(model.parameters(), lr=float(optim["lr"]),
                            weight_decay=float(optim["weight_decay"]))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    batch = int(optim["batch_size"])
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(int(cfg.seed)))
    fit_start = time.perf_counter()
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():  # in batches of the same size, as Lightning validates
            right = sum(int((model(xb).argmax(-1) == yb).sum())
                        for xb, yb in zip(xv.split(batch), yv.split(batch), strict=True))
        accuracy = right / len(yv)
    end = time.perf_counter()
    return {"total_s": end - start, "fit_s": end - fit_start, "val_accuracy": accuracy,
            "n_train": len(y), "batch_size": int(optim["batch_size"])}


def split_tensors(dm: Any, split: str) -> tuple[Any, Any]:
    """A split's inputs as one float tensor, encoded and normalised as archselect's loaders do."""
    import torch

    part = {"train": "fit", "val": "check"}.get(split, split)
    batches = list(dm.ordered_loader(part))
    return (torch.cat([b["inputs"]["x"] for b in batches]),
            torch.cat([b["target"] for b in batches]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--epochs", type=int, default=None, help="override every row's epochs")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    info = benchlib.machine()
    benchlib.print_machine(info)
    out: dict[str, Any] = {"goal": f"samples/s ratio archselect / plain >= {GOAL}", "rows": {}}
    scratch = tempfile.mkdtemp(prefix="archselect-bench-")
    for name in args.rows.split(","):
        row = ROWS[name]
        epochs = args.epochs or int(row["epochs"])
        # Untimed warm-up of both paths: first-call costs (lazy imports, allocator) hit neither.
        warm = archselect_trial(row["overrides"], 1)
        cfg = benchlib.compose(row["overrides"], Path(scratch))
        plain_loop(cfg, warm["candidate"], 1)
        reps = []
        for rep in range(args.reps):
            ours = archselect_trial(row["overrides"], epochs)
            plain = plain_loop(cfg, ours["candidate"], epochs)
            samples = plain["n_train"] * epochs
            reps.append({"archselect_trial_s": round(ours["trial_s"], 3),
                         "archselect_fit_s": round(ours["fit_s"], 3),
                         "plain_total_s": round(plain["total_s"], 3),
                         "plain_fit_s": round(plain["fit_s"], 3),
                         "archselect_samples_per_s": round(samples / ours["trial_s"], 1),
                         "archselect_fit_samples_per_s": round(samples / ours["fit_s"], 1),
                         "plain_samples_per_s": round(samples / plain["total_s"], 1),
                         "archselect_val": ours["val"], "plain_val_accuracy": plain["val_accuracy"]})
            print(f"{name} rep {rep + 1}: archselect {reps[-1]['archselect_samples_per_s']:.0f} "
                  f"samples/s (fit alone {reps[-1]['archselect_fit_samples_per_s']:.0f}), plain "
                  f"{reps[-1]['plain_samples_per_s']:.0f} samples/s", flush=True)
        cand = ours["candidate"]
        ratio = benchlib.median([r["archselect_samples_per_s"] / r["plain_samples_per_s"]
                                 for r in reps])
        fit_ratio = benchlib.median([r["archselect_fit_samples_per_s"] / r["plain_samples_per_s"]
                                     for r in reps])
        result: dict[str, Any] = {
            "overrides": row["overrides"], "arch": cand.name, "epochs": epochs,
            "n_train": plain["n_train"], "batch_size": plain["batch_size"],
            "steps_per_epoch": -(-plain["n_train"] // plain["batch_size"]),
            "archselect_samples_per_s": benchlib.median([r["archselect_samples_per_s"] for r in reps]),
            "archselect_fit_samples_per_s": benchlib.median(
                [r["archselect_fit_samples_per_s"] for r in reps]),
            "plain_samples_per_s": benchlib.median([r["plain_samples_per_s"] for r in reps]),
            "ratio": round(ratio, 4), "fit_ratio": round(fit_ratio, 4),
            "verdict": benchlib.verdict(ratio, GOAL, higher_is_better=True), "reps": reps,
        }
        if not args.no_profile and not result["verdict"]["met"]:
            profile: dict[str, Any] = {}
            archselect_trial(row["overrides"], epochs, profile=profile)
            result["profile"] = profile
        print(f"{name}: median ratio {ratio:.3f} (fit alone {fit_ratio:.3f}); goal >= {GOAL}",
              flush=True)
        out["rows"][name] = result
    shutil.rmtree(scratch, ignore_errors=True)
    benchlib.write_result("overhead", out, info)


if __name__ == "__main__":
    main()
