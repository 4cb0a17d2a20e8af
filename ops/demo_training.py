"""The demo's models, made by `sluice train` itself: training data written from scikit-learn's
bundled sets and synthesised sounds (the parts the demo's samples never come from), trained on
Ray Train through the `sluice.train` queue, registered and promoted to production. A model
already in production for the same data is reused."""

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from ops.progress import err
from schemas.settings import Settings

# modality -> (model name, task, label column, epochs)
DEMO_TRAINING = {
    "images": ("digits", "classify-image", "label", 8),
    "audio": ("sounds", "classify-audio", "label", 6),
    "records": ("breast-cancer", "classify-records", "diagnosis", 60),
}


def training_data(root: Path, modality: str) -> Path:
    """Write one modality's training file once (a CSV; media files beside it)."""
    folder = root / "train" / modality
    path = folder / "train.csv"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    rows = {"images": _digits, "audio": _sounds, "records": _records}[modality](folder)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)  # complete or absent
    return path


def _digits(folder: Path) -> list[dict[str, Any]]:
    from sklearn.datasets import load_digits

    from ops.demo_models import digit_image, split_indices

    digits = load_digits()
    train, _ = split_indices(digits.target, 0)  # the demo's images are the held-out part
    rows = []
    for i in train:
        digit_image(digits.images[i]).save(folder / f"digit-{i:04d}.png")
        rows.append({"path": f"digit-{i:04d}.png", "label": str(digits.target[i])})
    return rows


def _sounds(folder: Path) -> list[dict[str, Any]]:
    import soundfile as sf

    from workers.training.scratch_models import SAMPLE_RATE
    from workers.training.synth_audio import SOUND_LABELS, synthesize_dataset

    clips, labels = synthesize_dataset(100, 1.0, SAMPLE_RATE, seed=0)  # demo clips: seed 2026
    rows = []
    for n, (clip, label) in enumerate(zip(clips, labels, strict=True)):
        sf.write(folder / f"sound-{n:04d}.wav", clip, SAMPLE_RATE)
        rows.append({"path": f"sound-{n:04d}.wav", "label": SOUND_LABELS[label]})
    return rows


def _records(folder: Path) -> list[dict[str, Any]]:
    from sklearn.datasets import load_breast_cancer

    from ops.demo_models import split_indices

    data = load_breast_cancer()
    train, _ = split_indices(data.target, 0)  # the demo's patients are the held-out part
    names = [str(n) for n in data.feature_names]
    return [
        {
            "id": f"patient-{i:03d}",
            **dict(zip(names, map(float, data.data[i]), strict=True)),
            "diagnosis": str(data.target_names[data.target[i]]),
        }
        for i in train
    ]


def train_demo_models(
    client: Any, settings: Settings, root: Path, modalities: list[str]
) -> dict[str, str]:
    """The model reference each modality's job uses (NAME@production)."""
    from ops.train_cli import wait_for_run
    from producers.training import build_spec

    refs, runs = {}, {}
    started = time.perf_counter()
    for modality in modalities:
        name, task, label, epochs = DEMO_TRAINING[modality]
        options: dict[str, Any] = {
            "epochs": epochs,
            "workers": 1,
            "key_column": "id" if modality == "records" else None,
        }
        data = training_data(root, modality)
        spec = build_spec(
            settings,
            client.resolve_model,
            task=task,
            name=name,
            data=str(data),
            label_column=label,
            **options,
        )
        current = [v for v in client.registry.list(name) if v.stage == "production"]
        refs[modality] = f"{name}@production"
        if current and current[0].data_fingerprint == spec.data_fingerprint:
            err.print(f"  {current[0].ref} is in production (trained on this data): reused")
            continue
        runs[modality] = client.submit_training(
            task=task, name=name, data=data, label_column=label, **options
        )
        err.print(f"  training {name} ({task}) on Ray Train: run {runs[modality]}")
    for run_id in runs.values():
        run = wait_for_run(client, run_id)
        if run.status != "succeeded":
            from schemas.errors import SluiceError

            raise SluiceError(f"training {run.name} ended {run.status}: {run.error}")
        version = client.registry.promote(run.name, run.model_version)
        history = run.progress.get("history") or [{}]
        err.print(
            f"  registered {version.ref} -> production: "
            + ", ".join(
                f"{k.removeprefix('heldout_')} {v:.3f}"
                for k, v in version.metrics.items()
                if k.startswith("heldout_")
            )
            + f" ({len(history)} epochs, {np.sum([h.get('seconds', 0) for h in history]):.1f}"
            "s of training)"
        )
    if runs:
        err.print(
            f"  {len(runs)} models trained and registered in {time.perf_counter() - started:.0f}s"
        )
    return refs
