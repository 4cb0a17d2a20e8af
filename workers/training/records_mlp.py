"""The records model format, version 1: a small MLP over typed numeric features.

A model directory holds `config.json` (task, layer sizes, labels or target statistics,
held-out metrics), `features.json` (input order, types, allowed ranges and normalisation
statistics) and `model.safetensors` (the `RecordsMLP` state dict). The network always sees
features normalised with the training statistics stored in `features.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT_NAME = "records-mlp"
FORMAT_VERSION = 1
FEATURE_TYPES = ("number", "integer", "boolean")
STD_FLOOR = 1e-6


class RecordsMLP(nn.Module):
    """input -> [Linear, ReLU, Dropout]* -> Linear(n_outputs), on normalised inputs."""

    def __init__(
        self, n_features: int, hidden_sizes: list[int], n_outputs: int, dropout: float = 0.1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (classifier) or the standardised prediction, shape (batch, 1) (regressor)."""
        return self.net(x)


def is_classifier(config: dict[str, Any]) -> bool:
    """A classifier names its labels; a regressor its target (whatever the task's name, so a
    catalog task of another name may train and serve this format)."""
    return "labels" in config


def n_outputs(config: dict[str, Any]) -> int:
    return len(config["labels"]) if is_classifier(config) else 1


def model_from_config(config: dict[str, Any], n_features: int) -> RecordsMLP:
    return RecordsMLP(
        n_features,
        list(config["hidden_sizes"]),
        n_outputs(config),
        float(config.get("dropout", 0.0)),
    )


def feature_spec(name: str, column: np.ndarray, kind: str = "number") -> dict[str, Any]:
    """One features.json entry from a training column.

    The allowed range is the training range widened by its own width on each side (inputs a
    little outside what was seen are still plausible), never below 0 for non-negative data.
    """
    if kind not in FEATURE_TYPES:
        raise ValueError(f"feature type must be one of {FEATURE_TYPES}, got {kind!r}")
    lo, hi = float(column.min()), float(column.max())
    width = hi - lo
    allowed_lo = max(lo - width, 0.0) if lo >= 0 else lo - width
    return {
        "name": name,
        "type": kind,
        "min": allowed_lo,
        "max": hi + width,
        "mean": float(column.mean()),
        "std": max(float(column.std()), STD_FLOOR),
    }


def normalise(values: np.ndarray, features: list[dict[str, Any]]) -> np.ndarray:
    """(values - mean) / std per column, as float32, in features.json order."""
    mean = np.array([f["mean"] for f in features], dtype=np.float64)
    std = np.array([max(f["std"], STD_FLOOR) for f in features], dtype=np.float64)
    return ((np.asarray(values, dtype=np.float64) - mean) / std).astype(np.float32)


def _check_config(config: dict[str, Any]) -> None:
    if config.get("sluice_model") != FORMAT_NAME or config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"not a {FORMAT_NAME} v{FORMAT_VERSION} config")
    if not isinstance(config.get("task"), str) or not config["task"]:
        raise ValueError("a records model names the task it was trained for")
    if is_classifier(config) and not config.get("labels"):
        raise ValueError("a records classifier needs labels")
    if not is_classifier(config) and not {"target", "target_mean", "target_std"} <= set(config):
        raise ValueError("a records regressor needs target, target_mean and target_std")


def save_records_model(
    out_dir: Path | str, model: RecordsMLP, config: dict[str, Any], features: list[dict[str, Any]]
) -> None:
    """Write config.json, features.json and model.safetensors into `out_dir`."""
    config = {"sluice_model": FORMAT_NAME, "format_version": FORMAT_VERSION, **config}
    _check_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "features.json").write_text(json.dumps({"features": features}, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


def load_records_model(path: Path | str) -> tuple[RecordsMLP, dict[str, Any], list[dict[str, Any]]]:
    """The model in eval mode, its config and its feature list."""
    root = Path(path)
    config = json.loads((root / "config.json").read_text())
    _check_config(config)
    features = json.loads((root / "features.json").read_text())["features"]
    model = model_from_config(config, len(features))
    model.load_state_dict(load_file(str(root / "model.safetensors")))
    model.eval()
    return model, config, features
