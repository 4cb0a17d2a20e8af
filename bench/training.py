"""Training on Ray Train: epoch time with 1 and 2 data-parallel workers, side by side.

    .venv/bin/python bench/training.py [--epochs 30] [--image-epochs 5] [--text-epochs 2]
                                       [--skip-images]
                                       [--no-warmup] [--data-dir DIR]

Everything is measured in ONE invocation, on one local Ray instance, one run after the other,
so the ratios see roughly the same noise (absolute figures on a shared machine drift; ratios
less). Each run goes through `workers.training.driver.run_training` as a training worker
would, without Celery: build_spec (the submit checks), a TrainingRuns row created and
claimed, then TorchTrainer and the registration of the model.

(a) Records: scikit-learn breast cancer as CSV, classify-records with 1 and with 2 workers,
    then with DP-SGD (ε 8, δ 1e-5) on 2 workers, reporting the ε the accountant reached.
(b) Images: scikit-learn digits as 32x32 PNGs listed in a CSV (path,label), classify-image
    from scratch (the tiny demo ResNet, no base) with 1 and with 2 workers.
(c) Text: 288 templated tickets, classify-text on MiniLM with the whole encoder trained
    (--train-encoder, batch 96): the compute-bound case, with 1 and with 2 workers.

Per run: epoch time (the median of the ledger's history[*].seconds, the first epoch left
out: it pays for warm-up), the wall time from submit to registered, and the held-out
accuracy of the registered model. A warm-up run (1 epoch, not reported) goes first, so the
first measured run does not pay for the driver's first Ray Train import.
The last line of output is one JSON object with the figures.
"""

import argparse
import csv
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OWNER = "bench"
LEASE_SECONDS = 3600
DP_OPTIONS: dict[str, Any] = {"dp_epsilon": 8.0, "dp_delta": 1e-5}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class Result:
    workload: str
    workers: int
    epochs: int
    epoch_seconds: float  # median over history, the first epoch left out
    first_epoch_seconds: float
    wall_seconds: float  # submit (build_spec) -> registered
    accuracy: float | None
    epsilon: float | None = None
    ddp: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workers": self.workers,
            "epochs": self.epochs,
            "epoch_seconds": round(self.epoch_seconds, 4),
            "first_epoch_seconds": round(self.first_epoch_seconds, 4),
            "wall_seconds": round(self.wall_seconds, 2),
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "weights_in_sync": self.ddp.get("weights_in_sync"),
            "shard_overlap_rows": self.ddp.get("shard_overlap_rows"),
        }
        if self.epsilon is not None:
            out["epsilon"] = round(self.epsilon, 3)
        return out


def write_records(folder: Path) -> Path:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    path = folder / "breast-cancer.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*data.feature_names, "diagnosis"])
        for x, y in zip(data.data, data.target, strict=True):
            writer.writerow([*x, data.target_names[y]])
    return path


def write_texts(folder: Path) -> Path:
    """Support tickets in three topics: templated, 288 rows."""
    topics = {
        "billing": ["invoice", "refund", "card charge", "payment", "bill", "subscription fee"],
        "shipping": ["parcel", "delivery", "package", "courier", "shipment", "tracking number"],
        "technical": [
            "app crash",
            "login error",
            "password reset",
            "bug",
            "update",
            "frozen screen",
        ],
    }
    frames = [
        "I have a question about my {}.",
        "There is a problem with the {} again.",
        "Can someone help me with the {} please?",
        "Why is the {} not working?",
    ]
    openers = ["", "Hello, ", "Hi team, ", "Urgent: "]
    path = folder / "tickets.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "topic"])
        for topic, things in topics.items():
            for thing in things:
                for frame in frames:
                    for opener in openers:
                        writer.writerow([opener + frame.format(thing), topic])
    return path


def write_images(folder: Path) -> Path:
    """Every digit as a 32x32 PNG, listed (relative paths) in a CSV next to them."""
    from sklearn.datasets import load_digits

    from ops.demo_models import digit_image

    digits = load_digits()
    (folder / "png").mkdir(parents=True, exist_ok=True)
    path = folder / "digits.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for i, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            name = f"png/{i:04d}.png"
            digit_image(pixels).save(folder / name)
            writer.writerow([name, str(label)])
    return path


class Bench:
    """One ledger, one registry and one local Ray instance for every run."""

    def resolve_base(self, ref: str, task: str) -> Any:
        from producers.model_refs import resolve
        from schemas.catalog import load_catalog

        return resolve(ref, load_catalog().get(task), self.settings.data_dir)

    def __init__(self, data_dir: Path, input_root: Path) -> None:
        from schemas.settings import Settings
        from schemas.stack import Endpoints
        from storage.engine import make_engine, migrate
        from storage.registry import Registry
        from storage.training_runs import TrainingRuns

        self.settings = Settings(
            data_dir=data_dir, train_checkpoint_seconds=30, input_roots=str(input_root)
        )
        url = f"sqlite:///{data_dir / 'ledger.db'}"
        engine = make_engine(url)
        migrate(engine)
        self.runs, self.registry = TrainingRuns(engine), Registry(engine)
        # Token auth with a token of our own, as the embedded stack does: Ray otherwise
        # turns it on whenever ~/.ray/auth_token exists, and then depends on that file.
        token = data_dir / "ray-auth-token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.endpoints = Endpoints(
            broker_url=None, database_url=url, ray_address=None, ray_auth_token_path=token
        )

    def start_ray(self) -> None:
        """The driver's own connect (no address: a private local instance), once for the
        process, made first so that no measured run pays for starting Ray."""
        from workers.runtime import actor_directory as actors

        actors.connect(None, self.endpoints.ray_auth_token_path)

    def train(
        self,
        workload: str,
        task: str,
        data: Path,
        label: str,
        epochs: int,
        workers: int,
        **options: Any,
    ) -> Result:
        from producers.training import build_spec
        from workers.training.driver import run_training

        name = f"bench-{workload.lower().replace(' ', '-')}-w{workers}"
        # every epoch runs: epoch times are measured, not the early stop's choice
        options.setdefault("early_stopping", False)
        started = time.perf_counter()
        spec = build_spec(
            self.settings,
            self.resolve_base,
            task=task,
            name=name,
            data=str(data),
            label_column=label,
            epochs=epochs,
            workers=workers,
            **options,
        )
        run_id = self.runs.create(spec.model_dump(), spec.name, spec.task)
        run = self.runs.claim(run_id, OWNER, LEASE_SECONDS)
        assert run is not None
        view = run_training(run, self.settings, self.endpoints, self.runs, self.registry, OWNER)
        wall = time.perf_counter() - started
        self.runs.finish(run_id, OWNER, view.version)
        progress = self.runs.get(run_id).progress
        seconds = [float(h["seconds"]) for h in progress["history"]]
        if len(seconds) != epochs:
            raise RuntimeError(f"{name}: {len(seconds)} epochs in the history, expected {epochs}")
        steady = seconds[1:] or seconds
        epsilon = (view.dp or {}).get("epsilon")
        result = Result(
            workload=workload,
            workers=workers,
            epochs=epochs,
            epoch_seconds=statistics.median(steady),
            first_epoch_seconds=seconds[0],
            wall_seconds=wall,
            accuracy=view.metrics.get("heldout_accuracy"),
            epsilon=None if epsilon is None else float(epsilon),
            ddp=dict(progress.get("ddp") or {}),
        )
        log(
            f"{workload} w{workers}: {result.epoch_seconds * 1000:.1f} ms/epoch "
            f"(first {result.first_epoch_seconds * 1000:.0f} ms), wall {wall:.1f}s, "
            f"accuracy {result.accuracy}, eps {result.epsilon}, ddp {result.ddp}"
        )
        return result


def ratio(results: dict[str, Result], a: str, b: str) -> float | None:
    if a in results and b in results and results[b].epoch_seconds > 0:
        return results[a].epoch_seconds / results[b].epoch_seconds
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="records epochs per run")
    parser.add_argument("--image-epochs", type=int, default=5, help="image epochs per run")
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument(
        "--text-epochs",
        type=int,
        default=2,
        help="epochs of MiniLM fine-tuning (encoder too) per run; 0 skips",
    )
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="no unreported 1-epoch run before the measured ones",
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.image_epochs < 1:
        parser.error("--epochs and --image-epochs must be at least 1")

    # Read by Ray Train's controller, a process of the local Ray instance started below: set
    # before ray.init so its processes inherit it (the embedded stack sets it the same way).
    from ops.stack import RAY_TRAIN_ENV

    for key, value in RAY_TRAIN_ENV.items():
        os.environ.setdefault(key, value)

    bench_started = time.perf_counter()
    temp = args.data_dir is None
    data_dir = (
        Path(tempfile.mkdtemp(prefix="sluice-bench-train-")) if temp else args.data_dir
    ).resolve()
    inputs = data_dir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    try:
        records = write_records(inputs)
        images = None if args.skip_images else write_images(inputs / "digits")
        bench = Bench(data_dir, inputs)
        t0 = time.perf_counter()
        bench.start_ray()
        log(f"local Ray up in {time.perf_counter() - t0:.1f}s")

        runs: list[tuple[str, str, Path, str, int, int, dict[str, Any]]] = [
            ("records", "classify-records", records, "diagnosis", args.epochs, 1, {}),
            ("records", "classify-records", records, "diagnosis", args.epochs, 2, {}),
            ("records DP", "classify-records", records, "diagnosis", args.epochs, 2, DP_OPTIONS),
        ]
        if images is not None:
            runs += [
                ("images", "classify-image", images, "label", args.image_epochs, w, {})
                for w in (1, 2)
            ]
        if args.text_epochs:
            # compute-bound: the whole encoder (22 M parameters) is trained
            texts = write_texts(inputs)
            runs += [
                (
                    "text",
                    "classify-text",
                    texts,
                    "topic",
                    args.text_epochs,
                    w,
                    {"train_encoder": True, "batch_size": 96},
                )
                for w in (1, 2)
            ]
        if not args.no_warmup:
            t0 = time.perf_counter()
            bench.train("warmup", "classify-records", records, "diagnosis", 1, 1)
            log(f"warm-up run in {time.perf_counter() - t0:.1f}s")
        results: dict[str, Result] = {}
        for workload, task, data, label, epochs, workers, options in runs:
            results[f"{workload} w{workers}"] = bench.train(
                workload, task, data, label, epochs, workers, **options
            )
    finally:
        import ray

        ray.shutdown()  # before the token file and the run directories go
        if temp:
            shutil.rmtree(data_dir, ignore_errors=True)
    total = time.perf_counter() - bench_started

    print(
        f"\n{'workload':<11} {'workers':>7} {'epochs':>6} {'ms/epoch':>9} "
        f"{'1st epoch ms':>12} {'wall s':>7} {'accuracy':>8} {'ε':>6}"
    )
    for r in results.values():
        acc = "-" if r.accuracy is None else f"{r.accuracy:.4f}"
        eps = "-" if r.epsilon is None else f"{r.epsilon:.2f}"
        print(
            f"{r.workload:<11} {r.workers:>7} {r.epochs:>6} {r.epoch_seconds * 1000:>9.1f} "
            f"{r.first_epoch_seconds * 1000:>12.0f} {r.wall_seconds:>7.1f} {acc:>8} "
            f"{eps:>6}"
        )
    ratios = {
        "records_2w_over_1w": ratio(results, "records w2", "records w1"),
        "images_2w_over_1w": ratio(results, "images w2", "images w1"),
        "text_2w_over_1w": ratio(results, "text w2", "text w1"),
        "records_dp_over_plain_2w": ratio(results, "records DP w2", "records w2"),
    }
    print("\nepoch time ratios (below 1: faster):")
    for key, measured in ratios.items():
        if measured is not None:
            print(f"  {key:<26} {measured:6.3f}")
    print(f"\nbenchmark took {total:.1f}s")
    print(
        json.dumps(
            {
                "runs": {k: r.as_json() for k, r in results.items()},
                "ratios": {k: round(v, 4) for k, v in ratios.items() if v is not None},
                "dp": {"target_epsilon": DP_OPTIONS["dp_epsilon"], "delta": DP_OPTIONS["dp_delta"]},
                "cpus": os.cpu_count(),
                "total_seconds": round(total, 1),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
