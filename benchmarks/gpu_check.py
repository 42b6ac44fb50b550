"""GPU check: end-to-end studies on CUDA, and the CUDA out-of-memory retry at half batch.

    python benchmarks/gpu_check.py        # on a machine with an NVIDIA GPU

Runs a 4-trial image study and a 4-trial forecasting study on the GPU (accelerator and precision
chosen by the hardware profile), then caps this process's GPU memory between what an MLP 65,536
wide needs at batch 1024 and at batch 512, so that its trial runs out of memory at 1024 and must
finish at 512 with gradient accumulation 2. Writes ``results/gpu_check.json``.
"""
import json
import os
import sys
import time
import traceback

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
import torch
from hydra import compose, initialize_config_module

import archselect.config.schema  # noqa: F401
from archselect.run import run

OUT = os.environ.get("OUT", os.path.join(os.path.dirname(__file__), "results"))
report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0),
          "total_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}


def cfg_for(name, overrides):
    with initialize_config_module("archselect.conf", version_base="1.3"):
        return compose("config", overrides=[f"runs_dir=/tmp/runs-{name}", "trainer.progress_bar=false",
                                            *overrides])


def study(name, overrides):
    t = time.time()
    try:
        res = run(cfg_for(name, overrides))
        recs = [{"n": r.number, "arch": r.arch, "state": r.state, "value": r.value,
                 "reason": getattr(r, "reason", None)} for r in res.outcome.records]
        report[name] = {"ok": True, "s": round(time.time() - t, 1), "hardware": res.hardware.to_dict(),
                        "test": res.test_metrics, "baseline": res.baseline_metrics, "trials": recs}
        return res
    except BaseException as exc:
        report[name] = {"ok": False, "error": repr(exc), "tb": traceback.format_exc()[-3000:]}
        return None


study("image", ["task=image_classification", "search.n_trials=4", "search.max_epochs=3"])
study("forecast", ["task=time_series_forecasting", "search.n_trials=4", "search.max_epochs=10"])

# OOM retry: an MLP 65,536 wide on digits at batch 1024; the process may use less memory than
# batch 1024 needs but more than batch 512 does.
from archselect.data.base import DataSpec  # noqa: E402
from archselect.tasks.classification import ClassificationModule  # noqa: E402

spec = DataSpec(kind="image", num_classes=10, class_names=[str(i) for i in range(10)],
                n_features=64, input_shape=[1, 8, 8])
kw = {"hidden_size": 65536, "depth": 1, "activation": "relu", "dropout": 0.1}
peaks = {}
for b in (1024, 512):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    m = ClassificationModule("mlp", kw, {"lr": 1e-3, "weight_decay": 0.0}, spec.to_dict(), 3).cuda()
    opt = torch.optim.AdamW(m.parameters())
    x = torch.randn(b, 1, 8, 8, device="cuda")
    y = torch.randint(0, 10, (b,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(m(x=x), y)
    loss.backward()
    opt.step()
    peaks[b] = torch.cuda.max_memory_allocated() / 2**30
    del m, opt, x, y, loss
torch.cuda.empty_cache()
cap_gb = min(peaks[1024] * 0.9, peaks[512] * 1.4)
report["oom_probe_gb"] = {str(k): round(v, 3) for k, v in peaks.items()} | {"cap": round(cap_gb, 3)}
torch.cuda.set_per_process_memory_fraction(cap_gb / report["total_gb"], 0)
study("oom", ["task=image_classification", "selector.candidates=[mlp]", "search.n_trials=1",
              "search.max_epochs=2", "arch.mlp.model.hidden_size=65536", "arch.mlp.model.depth=1",
              "arch.mlp.optim.batch_size=1024", "arch.mlp.space.hidden_size.choices=[65536]",
              "arch.mlp.space.depth.high=1", "arch.mlp.space.depth.low=1"])
try:
    import optuna
    st = optuna.load_study(study_name="image_classification-digits",
                           storage="sqlite:////tmp/runs-oom/optuna.db")
    report["oom_trials"] = [{"n": t.number, "state": t.state.name, "attrs": {
        k: v for k, v in t.user_attrs.items() if k in ("oom_retry", "fail_reason", "epochs")}}
        for t in st.trials]
except Exception as exc:
    report["oom_trials"] = repr(exc)
os.makedirs(OUT, exist_ok=True)
with open(f"{OUT}/gpu_check.json", "w") as fh:
    json.dump(report, fh, indent=2, default=str)
print(json.dumps({k: (v if k not in ("image", "forecast", "oom") else {kk: vv for kk, vv in v.items()
                                                                          if kk != "tb"})
                  for k, v in report.items()}, indent=1, default=str)[:6000])
sys.exit(0)
