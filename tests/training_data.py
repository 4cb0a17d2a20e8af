"""Training data as users have it: CSV files of records, texts, and image or audio paths,
made here from scikit-learn's bundled data and synthesised sounds."""

import csv
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from sklearn.datasets import load_breast_cancer, load_digits

from ops.demo_models import digit_image
from workers.training.recipes.split import holdout_split
from workers.training.scratch_models import SAMPLE_RATE
from workers.training.synth_audio import SOUND_LABELS, synthesize_dataset

TOPICS = {
    "billing": ["invoice", "refund", "card charge", "payment", "bill", "subscription fee"],
    "shipping": ["parcel", "delivery", "package", "courier", "shipment", "tracking number"],
    "technical": ["app crash", "login error", "password reset", "bug", "update", "frozen screen"],
}
FRAMES = [
    "I have a question about my {}.",
    "There is a problem with the {} again.",
    "Can someone help me with the {} please?",
    "Why is the {} not working as expected?",
]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def breast_cancer_csv(path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """All 569 rows with an `id` and the `diagnosis` label; returns the held-out rows of the
    split training makes (seed 0, 20 %), for checking the registered model by inference."""
    data = load_breast_cancer()
    rows = [
        {
            "id": i,
            **{str(n): float(v) for n, v in zip(data.feature_names, x, strict=True)},
            "diagnosis": str(data.target_names[y]),
        }
        for i, (x, y) in enumerate(zip(data.data, data.target, strict=True))
    ]
    _, held = holdout_split(np.array([r["diagnosis"] for r in rows]), 0.2, 0)
    return _write(path, rows), [rows[i] for i in held]


def texts_csv(path: Path) -> Path:
    rows = [
        {"text": frame.format(thing), "topic": topic}
        for topic, things in TOPICS.items()
        for thing in things
        for frame in FRAMES
    ]
    return _write(path, rows)


def digits_csv(folder: Path, n_per_digit: int = 30, digits: int = 4) -> Path:
    """PNG files of the first `digits` digits, listed with relative paths and labels."""
    data = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    rows, counts = [], dict.fromkeys(range(digits), 0)
    for i, (pixels, label) in enumerate(zip(data.images, data.target, strict=True)):
        if label < digits and counts[label] < n_per_digit:
            counts[label] += 1
            digit_image(pixels).save(folder / f"d{i}.png")
            rows.append({"path": f"d{i}.png", "label": f"digit-{label}"})
    return _write(folder / "train.csv", rows)


def sounds_csv(folder: Path, n_per_label: int = 24) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    clips, labels = synthesize_dataset(n_per_label, 0.5, SAMPLE_RATE, seed=3)
    rows = []
    for i, (clip, label) in enumerate(zip(clips, labels, strict=True)):
        sf.write(folder / f"s{i}.wav", clip, SAMPLE_RATE)
        rows.append({"path": f"s{i}.wav", "label": SOUND_LABELS[label]})
    return _write(folder / "train.csv", rows)
