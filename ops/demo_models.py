"""Builders of the small demo models `sluice models build` makes, trained here on bundled or
synthetic data (no downloads).

Each `build_*(out, seed=...)` writes a complete, offline-loadable model directory (safetensors
weights, no `auto_map`) and returns its held-out metrics plus the build time in `seconds`.
The speech recognisers are in ops/demo_speech_models.py; ops/demo_model_cache.py builds them
all once into a cache directory. The architectures are workers/training/scratch_models.py's,
the ones `sluice train` trains from scratch.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn

from workers.training.records_mlp import (
    RecordsMLP,
    feature_spec,
    normalise,
    save_records_model,
)
from workers.training.scratch_models import (
    DIGIT_SIZE,
    SAMPLE_RATE,
    labels_config,
    make_image_processor,
    make_wav2vec2_feature_extractor,
    patch_config_json,
    tiny_resnet,
    tiny_wav2vec2_kwargs,
)
from workers.training.synth_audio import SOUND_LABELS, synthesize_dataset

Metrics = dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])

HOLDOUT_FRACTION = 0.2


# ---------------------------------------------------------------- shared helpers


def isolated(build: F) -> F:
    """Run a builder on one torch thread with its own RNG state, restoring the caller's.

    These models are tiny, so intra-op threading only adds synchronisation: on a busy 2-core
    machine one thread built everything ~6x faster than two. It also makes the weights (and
    so the metrics) independent of the machine's core count. Forking the RNG keeps the
    builder's seeding from changing the random stream of the process that called it.
    """

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                return build(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return cast(F, wrapper)


def seed_all(seed: int) -> None:
    # numpy randomness goes through explicit Generators / random_state; torch's is global
    torch.manual_seed(seed)


def split_indices(
    labels: np.ndarray, seed: int, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indices; the held-out part is never trained on."""
    indices = np.arange(len(labels))
    train, held = train_test_split(
        indices,
        test_size=HOLDOUT_FRACTION,
        random_state=seed,
        stratify=labels if stratify else None,
    )
    return np.sort(train), np.sort(held)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(truth)))


# ---------------------------------------------------------------- records models


def _train_mlp(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 32,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    model.train()
    for _ in range(epochs):
        for batch in _batches(len(x), batch_size, gen):
            optimiser.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimiser.step()
    model.eval()


@isolated
def build_records_classifier(out: Path, *, seed: int = 0) -> Metrics:
    """RecordsMLP on scikit-learn's breast cancer data (30 numeric features, 2 classes)."""
    started = time.perf_counter()
    seed_all(seed)
    data = load_breast_cancer()
    x_all, y_all = data.data.astype(np.float64), data.target.astype(np.int64)
    train, held = split_indices(y_all, seed)
    names = [str(n) for n in data.feature_names]
    features = [feature_spec(n, x_all[train, i]) for i, n in enumerate(names)]
    hidden, dropout = [64, 32], 0.1
    model = RecordsMLP(len(features), hidden, 2, dropout)
    x_train = torch.from_numpy(normalise(x_all[train], features))
    # label smoothing keeps the margin wide: it lifts held-out accuracy over several splits
    _train_mlp(
        model,
        x_train,
        torch.from_numpy(y_all[train]),
        nn.CrossEntropyLoss(label_smoothing=0.1),
        epochs=60,
        seed=seed,
    )
    with torch.no_grad():
        logits = model(torch.from_numpy(normalise(x_all[held], features)))
    probs = torch.softmax(logits, -1).numpy()
    metrics = {
        "heldout_accuracy": _accuracy(probs.argmax(-1), y_all[held]),
        "heldout_roc_auc": float(roc_auc_score(y_all[held], probs[:, 1])),
        "n_train": int(len(train)),
        "n_heldout": int(len(held)),
    }
    config = {
        "task": "classify-records",
        "hidden_sizes": hidden,
        "dropout": dropout,
        "labels": [str(n) for n in data.target_names],
        "metrics": metrics,
        "trained_on": "sklearn breast_cancer",
    }
    save_records_model(out, model, config, features)
    return {**metrics, "seconds": time.perf_counter() - started}


def _diabetes_type(name: str, column: np.ndarray) -> str:
    # only "sex" is a category coded as 1/2; other integer-valued columns are measurements
    if name == "sex" and np.all(np.equal(np.mod(column, 1), 0)):
        return "integer"
    return "number"


@isolated
def build_records_regressor(out: Path, *, seed: int = 0) -> Metrics:
    """RecordsMLP regressor on scikit-learn's diabetes data, in raw (unscaled) units."""
    started = time.perf_counter()
    seed_all(seed)
    try:
        data = load_diabetes(scaled=False)
    except TypeError:  # scikit-learn < 1.1 has no `scaled`
        data = load_diabetes()
    x_all, y_all = data.data.astype(np.float64), data.target.astype(np.float64)
    # stratify on target quartiles so both splits cover the whole range
    bins = np.digitize(y_all, np.quantile(y_all, [0.25, 0.5, 0.75]))
    train, held = split_indices(bins, seed)
    names = [str(n) for n in data.feature_names]
    features = [
        feature_spec(n, x_all[train, i], _diabetes_type(n, x_all[train, i]))
        for i, n in enumerate(names)
    ]
    target_mean, target_std = float(y_all[train].mean()), float(y_all[train].std())
    hidden, dropout = [64, 32], 0.1
    model = RecordsMLP(len(features), hidden, 1, dropout)
    x_train = torch.from_numpy(normalise(x_all[train], features))
    y_train = torch.from_numpy(((y_all[train] - target_mean) / target_std).astype(np.float32))
    _train_mlp(model, x_train, y_train[:, None], nn.MSELoss(), epochs=40, seed=seed)
    with torch.no_grad():
        standardised = model(torch.from_numpy(normalise(x_all[held], features)))[:, 0].numpy()
    predicted = standardised * target_std + target_mean
    metrics = {
        "heldout_r2": float(r2_score(y_all[held], predicted)),
        "heldout_mae": float(mean_absolute_error(y_all[held], predicted)),
        "n_train": int(len(train)),
        "n_heldout": int(len(held)),
    }
    config = {
        "task": "regress-records",
        "hidden_sizes": hidden,
        "dropout": dropout,
        "target": "disease_progression",
        "target_mean": target_mean,
        "target_std": target_std,
        "metrics": metrics,
        "trained_on": "sklearn diabetes",
    }
    save_records_model(out, model, config, features)
    return {**metrics, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------- image classifier


def digit_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 digits array (0..16) as the 32x32 grayscale PNG a user would upload."""
    small = Image.fromarray((pixels * 255.0 / 16.0).astype(np.uint8), "L")
    return small.resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.NEAREST)


def _digits_split(seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    digits = load_digits()
    train, held = split_indices(digits.target, seed)
    return digits, train, held


def digits_holdout(seed: int = 0) -> list[tuple[Image.Image, int]]:
    """The held-out digits (32x32 "L" images, label) of the split `build_image_classifier` uses."""
    digits, _, held = _digits_split(seed)
    return [(digit_image(digits.images[i]), int(digits.target[i])) for i in held]


def _pixel_values(processor: Any, images: list[Image.Image]) -> torch.Tensor:
    rgb = [image.convert("RGB") for image in images]
    return processor(images=rgb, return_tensors="pt")["pixel_values"]


@isolated
def build_image_classifier(out: Path, *, seed: int = 0) -> Metrics:
    """A tiny transformers ResNet trained on scikit-learn's 8x8 digits, upscaled to 32x32."""
    started = time.perf_counter()
    seed_all(seed)
    digits, train, held = _digits_split(seed)
    processor = make_image_processor()
    images = [digit_image(p) for p in digits.images]
    pixels = _pixel_values(processor, images)
    targets = torch.from_numpy(digits.target.astype(np.int64))
    model = tiny_resnet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    train_idx = torch.from_numpy(train)
    model.train()
    for _ in range(8):
        for batch in _batches(len(train_idx), 64, gen):
            rows = train_idx[batch]
            optimiser.zero_grad()
            model(pixel_values=pixels[rows], labels=targets[rows]).loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        predicted = model(pixel_values=pixels[torch.from_numpy(held)]).logits.argmax(-1)
    metrics = {
        "heldout_accuracy": _accuracy(predicted.numpy(), digits.target[held]),
        "n_train": int(len(train)),
        "n_heldout": int(len(held)),
    }
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    patch_config_json(out, sluice_metrics=metrics, trained_on="sklearn digits (8x8 -> 32x32)")
    return {**metrics, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------- audio models


@isolated
def build_audio_classifier(out: Path, *, seed: int = 0) -> Metrics:
    """A tiny Wav2Vec2 sequence classifier trained on synthetic 1 s sounds (SOUND_LABELS)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    started = time.perf_counter()
    seed_all(seed)
    clips, label_list = synthesize_dataset(100, 1.0, SAMPLE_RATE, seed)
    labels = np.array(label_list, dtype=np.int64)
    train, held = split_indices(labels, seed)
    extractor = make_wav2vec2_feature_extractor()
    encoded = extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
    values, mask = encoded["input_values"], encoded["attention_mask"]
    config = Wav2Vec2Config(
        **tiny_wav2vec2_kwargs(),
        use_weighted_layer_sum=False,
        classifier_proj_size=32,
        **labels_config(SOUND_LABELS),
    )
    model = Wav2Vec2ForSequenceClassification(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    targets, train_idx = torch.from_numpy(labels), torch.from_numpy(train)
    model.train()
    for _ in range(6):
        for batch in _batches(len(train_idx), 16, gen):
            rows = train_idx[batch]
            optimiser.zero_grad()
            model(
                input_values=values[rows], attention_mask=mask[rows], labels=targets[rows]
            ).loss.backward()
            optimiser.step()
    model.eval()
    held_idx = torch.from_numpy(held)
    with torch.no_grad():
        logits = model(input_values=values[held_idx], attention_mask=mask[held_idx]).logits
    metrics = {
        "heldout_accuracy": _accuracy(logits.argmax(-1).numpy(), labels[held]),
        "n_train": int(len(train)),
        "n_heldout": int(len(held)),
    }
    model.save_pretrained(out, safe_serialization=True)
    extractor.save_pretrained(out)
    patch_config_json(out, sluice_metrics=metrics, trained_on="synthetic sounds (synth_audio)")
    return {**metrics, "seconds": time.perf_counter() - started}
