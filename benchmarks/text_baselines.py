"""Classical baselines for the text row on archselect's own split (same seed, same rows).

    .venv/bin/python benchmarks/text_baselines.py [--seed 42] [--max-samples N]

Prints and writes benchmarks/results/text_baselines.json: majority class and TF-IDF (word 1-2
grams) + logistic regression, accuracy and macro-F1 on the test split.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline

from archselect.data import open_datamodule


def tfidf_logreg(texts: dict[str, list[str]], labels: dict[str, np.ndarray]) -> np.ndarray:
    """TF-IDF (word 1-2 grams) + logistic regression, C picked on the validation split (as
    archselect picks trials); returns the test split's predictions."""
    from benchlib import best_on_val

    return best_on_val(
        [make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                       LogisticRegression(C=c, max_iter=3000)) for c in (1.0, 4.0, 16.0)],
        texts, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-samples", type=int, default=None)
    args = parser.parse_args()
    cfg = {"source": "rotten_tomatoes", "name": "rotten_tomatoes", "text_column": "text",
           "target": "category", "max_samples": args.max_samples, "val_fraction": 0.15,
           "test_fraction": 0.15, "vocab_size": 12000, "min_frequency": 2, "lowercase": True,
           "max_len": None, "max_len_percentile": 95, "max_len_cap": 256}
    dm = open_datamodule(cfg, "text", seed=args.seed, cache_dir="/tmp/archselect-bench-cache")
    spec = dm.prepare()
    y_train, y_test = dm.labels["train"], dm.labels["test"]
    out: dict[str, dict[str, float]] = {}
    majority = np.full_like(y_test, np.bincount(y_train).argmax())
    out["majority_class"] = {"accuracy": accuracy_score(y_test, majority),
                             "macro_f1": f1_score(y_test, majority, average="macro")}
    start = time.perf_counter()
    pred = tfidf_logreg(dm.texts, dm.labels)
    out["tfidf_logreg"] = {"accuracy": accuracy_score(y_test, pred),
                           "macro_f1": f1_score(y_test, pred, average="macro"),
                           "seconds": time.perf_counter() - start}
    result = {"data": spec.profile["source"], "seed": args.seed, "splits": spec.profile["splits"],
              "results": {k: {m: round(float(v), 4) for m, v in d.items()} for k, d in out.items()}}
    folder = Path(__file__).parent / "results"
    folder.mkdir(exist_ok=True)
    (folder / "text_baselines.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
