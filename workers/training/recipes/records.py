"""classify-records and regress-records: the records MLP (format v1, records_mlp.py) on the
spec's feature columns, normalised with the training part's statistics."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from schemas.media_refs import MediaLimits
from schemas.training import TrainSpec
from workers.training.recipes.base import Prepared
from workers.training.recipes.split import holdout_split
from workers.training.records_mlp import (
    STD_FLOOR,
    RecordsMLP,
    feature_spec,
    load_records_model,
    normalise,
    save_records_model,
)

HIDDEN_SIZES = [64, 32]
DROPOUT = 0.1


def _column(rows: list[dict[str, Any]], name: str) -> np.ndarray:
    try:
        return np.array([float(r[name]) for r in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"column {name!r} holds a value that is not a number ({exc})") from exc


def _kind(column: np.ndarray) -> str:
    """Integer-valued columns with few values (codes, counts) are 'integer'; others 'number'."""
    whole = bool(np.all(np.equal(np.mod(column, 1), 0)))
    return "integer" if whole and len(np.unique(column)) <= 20 else "number"


class RecordsRecipe:
    default_learning_rate = 1e-3

    def __init__(self, spec: TrainSpec) -> None:
        self.task = spec.task
        self.classifier = spec.is_classifier
        self.primary_metric = "heldout_accuracy" if self.classifier else "heldout_r2"

    def prepare(self, spec: TrainSpec, rows: list[dict[str, Any]], limits: MediaLimits) -> Prepared:
        x = np.stack([_column(rows, name) for name in spec.input_columns], axis=1)
        if spec.is_classifier:
            index = {label: i for i, label in enumerate(spec.labels)}
            y = np.array([index[str(r[spec.label_column])] for r in rows], dtype=np.int64)
            train, held = holdout_split(y, spec.holdout_fraction, spec.seed)
        else:
            y = _column(rows, spec.label_column).astype(np.float32)
            # stratify on target quartiles so both parts cover the whole range
            bins = np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75]))
            try:
                train, held = holdout_split(bins, spec.holdout_fraction, spec.seed)
            except ValueError:  # ties leave a quartile with too few rows: split plainly
                train, held = holdout_split(np.zeros(len(y)), spec.holdout_fraction, spec.seed)
        # allowed ranges from every labelled row (a plausibility check, not a statistic the
        # model learns from); normalisation from the training part only
        features = [
            {
                **feature_spec(name, x[:, i], _kind(x[:, i])),
                "mean": float(x[train, i].mean()),
                "std": max(float(x[train, i].std()), STD_FLOOR),
            }
            for i, name in enumerate(spec.input_columns)
        ]
        meta: dict[str, Any] = {"features": features, "labels": spec.labels}
        if not spec.is_classifier:
            meta["target_mean"] = float(y[train].mean())
            meta["target_std"] = max(float(y[train].std()), 1e-6)
            y = ((y - meta["target_mean"]) / meta["target_std"]).astype(np.float32)
        xn = normalise(x, features)
        return Prepared(
            train={"x": xn[train], "y": y[train]}, heldout={"x": xn[held], "y": y[held]}, meta=meta
        )

    def build(self, spec: TrainSpec, meta: dict[str, Any]) -> nn.Module:
        torch.manual_seed(spec.seed)
        n_out = len(spec.labels) if spec.is_classifier else 1
        model = RecordsMLP(len(meta["features"]), HIDDEN_SIZES, n_out, DROPOUT)
        if spec.base:  # warm start from a records model with the same shape
            base, _, _ = load_records_model(spec.base)
            model.load_state_dict(base.state_dict())
        return model

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(batch["x"])
        if self.classifier:
            # label smoothing keeps the margin wide: it lifts held-out accuracy over splits
            return nn.functional.cross_entropy(out, batch["y"], label_smoothing=0.1)
        return nn.functional.mse_loss(out[:, 0], batch["y"])

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, heldout: dict[str, torch.Tensor], meta: dict[str, Any]
    ) -> dict[str, float]:
        was_training = model.training
        model.eval()
        out = model(heldout["x"])
        model.train(was_training)
        y = heldout["y"]
        if self.classifier:
            return {
                "heldout_accuracy": float((out.argmax(-1) == y).float().mean()),
                "n_heldout": float(len(y)),
            }
        predicted, truth = out[:, 0].double(), y.double()
        residual = float(((truth - predicted) ** 2).sum())
        total = float(((truth - truth.mean()) ** 2).sum()) or 1.0
        mae = float((truth - predicted).abs().mean()) * meta["target_std"]
        return {
            "heldout_r2": 1.0 - residual / total,
            "heldout_mae": mae,
            "n_heldout": float(len(y)),
        }

    def save(
        self,
        model: nn.Module,
        out: Path,
        spec: TrainSpec,
        meta: dict[str, Any],
        metrics: dict[str, float],
    ) -> None:
        config: dict[str, Any] = {
            "task": self.task,
            "hidden_sizes": HIDDEN_SIZES,
            "dropout": DROPOUT,
            "metrics": metrics,
            "trained_on": spec.data.describe(),
        }
        if spec.is_classifier:
            config["labels"] = spec.labels
        else:
            config.update(
                target=spec.label_column,
                target_mean=meta["target_mean"],
                target_std=meta["target_std"],
            )
        assert isinstance(model, RecordsMLP)
        save_records_model(out, model, config, meta["features"])
