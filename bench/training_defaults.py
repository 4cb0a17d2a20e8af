"""Training defaults against a classical baseline (issue 17), side by side in one run:

    .venv/bin/python bench/training_defaults.py [--seeds 5] [--skip-text] [--skip-before]

For each split seed (the held-out split is stratified, 20 %, seeded by --seed as a user
would set it), through `workers.training.driver.run_training` on a local Ray instance as a
training worker runs it (build_spec, a TrainingRuns row, TorchTrainer, registration):
(a) classify-records on scikit-learn's breast-cancer data, defaults: held-out accuracy of the
    registered model, the epoch early stopping chose, and the baseline Sluice recorded on the
    version (LogisticRegression on standardised features, fitted on the same training rows);
(b) regress-records on scikit-learn's diabetes data: held-out R² and Ridge's;
(c) unless --skip-before: the same two with the previous schedule (10 epochs, batch 32, no
    early stopping) on today's network (one hidden layer of 32 under 5,000 rows, weight decay
    0.01): what early stopping adds;
(d) unless --skip-text: classify-text (frozen all-MiniLM-L6-v2, 288 templated tickets, one
    seed) beside LogisticRegression on the encoder's mean-pooled embeddings.
The baseline is also fitted here, independently, with scikit-learn on the same split, to check
the recorded figure. Targets (issue 17): mean accuracy >= LogisticRegression's mean - 0.01,
mean R² >= Ridge's mean - 0.02. The last line of output is one JSON object.
"""

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from training import Bench, write_records, write_texts  # noqa: E402  (bench/training.py)

BEFORE: dict[str, Any] = {"epochs": 10, "batch_size": 32, "early_stopping": False}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def write_diabetes(folder: Path) -> Path:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    path = folder / "diabetes.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*data.feature_names, "progression"])
        for x, y in zip(data.data, data.target, strict=True):
            writer.writerow([*x, y])
    return path


def sklearn_baseline(task: str, seed: int) -> float:
    """The baseline fitted here, on the split the recipe makes (80/20, stratified on the
    label, or on the target's quartiles for a regressor), with statistics of the training
    rows: a check on the figure Sluice recorded."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if task == "classify-records":
        data = load_breast_cancer()
        x, y = data.data, data.target
        strata = data.target_names[y]  # the labels as the CSV holds them, as Sluice splits
    else:
        x, y = load_diabetes(return_X_y=True)
        strata = np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75]))
    train, held = train_test_split(
        np.arange(len(y)), test_size=0.2, random_state=seed, stratify=strata
    )
    scaler = StandardScaler().fit(x[train])
    model = LogisticRegression(max_iter=5000) if task == "classify-records" else Ridge()
    model.fit(scaler.transform(x[train]), y[train])
    return float(model.score(scaler.transform(x[held]), y[held]))


def one_run(
    bench: Bench, task: str, data: Path, label: str, seed: int, tag: str, **options: Any
) -> dict[str, Any]:
    from producers.training import build_spec
    from workers.training.driver import run_training

    started = time.perf_counter()
    spec = build_spec(
        bench.settings,
        bench.resolve_base,
        task=task,
        name=f"defaults-{task}-{tag}-s{seed}",
        data=str(data),
        label_column=label,
        seed=seed,
        **options,
    )
    run_id = bench.runs.create(spec.model_dump(), spec.name, spec.task)
    run = bench.runs.claim(run_id, "bench", 3600)
    assert run is not None
    view = run_training(run, bench.settings, bench.endpoints, bench.runs, bench.registry, "bench")
    bench.runs.finish(run_id, "bench", view.version)
    metric = "heldout_accuracy" if task != "regress-records" else "heldout_r2"
    base = view.baseline or {}
    out = {
        "seed": seed,
        "model": round(float(view.metrics[metric]), 4),
        "baseline": round(float(base["value"]), 4) if "value" in base else None,
        "best_epoch": view.metrics.get("best_epoch"),
        "epochs_run": view.metrics.get("epochs_run"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    log(f"{task} {tag} seed {seed}: {out}")
    return out


def summary(rows: list[dict[str, Any]], checks: list[float] | None) -> dict[str, Any]:
    model = statistics.mean(r["model"] for r in rows)
    out: dict[str, Any] = {"runs": rows, "model_mean": round(model, 4)}
    if all(r["baseline"] is not None for r in rows):
        base = statistics.mean(r["baseline"] for r in rows)
        out.update(baseline_mean=round(base, 4), model_minus_baseline=round(model - base, 4))
    if checks is not None:
        out["sklearn_here_mean"] = round(statistics.mean(checks), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--skip-before", action="store_true")
    args = parser.parse_args(argv)

    from ops.stack import RAY_TRAIN_ENV

    for key, value in RAY_TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    started = time.perf_counter()
    result: dict[str, Any] = {"seeds": args.seeds, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-defaults-") as tmp:
        data_dir = Path(tmp)
        inputs = data_dir / "inputs"
        inputs.mkdir()
        files = {
            "classify-records": (write_records(inputs), "diagnosis"),
            "regress-records": (write_diabetes(inputs), "progression"),
        }
        bench = Bench(data_dir, inputs)
        bench.start_ray()
        try:
            for task, (path, label) in files.items():
                seeds = range(args.seeds)
                checks = [sklearn_baseline(task, s) for s in seeds]
                result[task] = summary(
                    [one_run(bench, task, path, label, s, "now") for s in seeds], checks
                )
                if not args.skip_before:
                    before = [
                        one_run(bench, task, path, label, s, "before", **BEFORE) for s in seeds
                    ]
                    result[f"{task} (10 fixed epochs, batch 32)"] = summary(before, None)
            if not args.skip_text:
                texts = write_texts(inputs)
                result["classify-text"] = summary(
                    [one_run(bench, "classify-text", texts, "topic", 0, "now")], None
                )
        finally:
            import ray

            ray.shutdown()
    cls, reg = result["classify-records"], result["regress-records"]
    result["verdict"] = {
        "classify_records_met": cls["model_mean"] >= cls["sklearn_here_mean"] - 0.01,
        "regress_records_met": reg["model_mean"] >= reg["sklearn_here_mean"] - 0.02,
        "recorded_baseline_matches_sklearn": all(
            abs(t["baseline_mean"] - t["sklearn_here_mean"]) < 1e-3 for t in (cls, reg)
        ),
    }
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    for key, value in result.items():
        if isinstance(value, dict) and "model_mean" in value:
            print(
                f"{key:<45} model {value['model_mean']:.4f}  baseline "
                f"{value.get('baseline_mean', float('nan')):.4f}  "
                f"epochs {[r['epochs_run'] for r in value['runs']]}"
            )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
