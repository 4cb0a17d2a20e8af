"""What the Hugging Face classifier recipes (text, image, audio) share: label ids, the
learning-rate default, freezing the pretrained body, the loss, batched held-out evaluation
and saving a directory the inference handlers load as it is."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from schemas.training import TrainSpec
from workers.training.scratch_models import patch_config_json

EVAL_BATCH = 64  # bounds the memory of held-out evaluation
HEAD_LR = 5e-3  # a new head on a frozen body: a linear model, it takes big steps
FINE_TUNE_LR = 5e-5  # the usual range for fine-tuning a pretrained transformer


def label_ids(rows: list[dict[str, Any]], column: str, labels: list[str]) -> np.ndarray:
    """Class ids in `labels` order (labels are compared as strings, as they were listed)."""
    if len(labels) < 2:
        raise ValueError(f"a classifier needs at least two labels; the spec lists {labels}")
    index = {label: i for i, label in enumerate(labels)}
    ids = np.empty(len(rows), dtype=np.int64)
    for n, row in enumerate(rows):
        value = row.get(column)
        label = None if value is None else str(value)
        if label not in index:
            raise ValueError(
                f"row {n}: label column {column!r} holds {value!r}, which is not "
                f"one of the labels {labels}"
            )
        ids[n] = index[label]
    return ids


def label_config(labels: list[str]) -> dict[str, Any]:
    # no num_labels: it follows id2label, and passing both warns against a base's id2label
    return {
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def freeze_body(model: nn.Module) -> None:
    """Leave only the head (everything outside the pretrained base model) trainable."""
    body = getattr(model, "base_model", None)
    if not isinstance(body, nn.Module) or body is model:
        raise ValueError(
            f"{type(model).__name__} has no separate base model to freeze; "
            "train it with train_encoder"
        )
    for param in body.parameters():
        param.requires_grad_(False)


def unwrap(model: nn.Module) -> Any:
    """The transformers model inside DDP (`.module`) or Opacus (`._module`) wrappers."""
    while not hasattr(model, "save_pretrained"):
        inner = getattr(model, "module", None) or getattr(model, "_module", None)
        if not isinstance(inner, nn.Module):
            raise TypeError(f"cannot save a {type(model).__name__}: no transformers model in it")
        model = inner
    return model


class HFClassifierRecipe:
    """The parts of a recipe that do not depend on the modality."""

    task: str
    primary_metric = "heldout_accuracy"
    # Read by the loop when the spec gives no learning rate. It depends on the spec (a new
    # head, a fine-tuned body, a model from scratch), so prepare and build refine it.
    default_learning_rate = HEAD_LR
    scratch_learning_rate = 2e-3  # used when the task can start without a base model

    def __init__(self, spec: TrainSpec) -> None:
        self.task = spec.task

    def configure(self, spec: TrainSpec) -> None:
        if not spec.base:
            self.default_learning_rate = self.scratch_learning_rate
        else:
            self.default_learning_rate = FINE_TUNE_LR if spec.train_encoder else HEAD_LR

    def finish_build(self, model: nn.Module, spec: TrainSpec) -> nn.Module:
        """A pretrained body stays frozen unless the spec asks to train it too."""
        self.configure(spec)
        if spec.base and not spec.train_encoder:
            freeze_body(model)
        return model.train()  # from_pretrained gives eval mode; Opacus insists on train

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = model(**batch).loss
        assert isinstance(loss, torch.Tensor)
        return loss

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, heldout: dict[str, torch.Tensor], meta: dict[str, Any]
    ) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            truth = heldout["labels"]
            inputs = {k: v for k, v in heldout.items() if k != "labels"}
            predicted = [
                model(**{k: v[start : start + EVAL_BATCH] for k, v in inputs.items()})
                .logits.argmax(-1)
                .cpu()
                for start in range(0, len(truth), EVAL_BATCH)
            ]
        finally:
            model.train(was_training)
        y_pred, y_true = torch.cat(predicted).numpy(), truth.cpu().numpy()
        return {
            "heldout_accuracy": float(np.mean(y_pred == y_true)),
            "heldout_macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "n_heldout": float(len(y_true)),
        }


def save_model(model: nn.Module, out: Path, spec: TrainSpec, metrics: dict[str, float]) -> None:
    """Weights as safetensors, no `auto_map`, metrics and provenance in config.json; the
    caller saves the tokenizer or processor beside them."""
    unwrap(model).save_pretrained(out, safe_serialization=True)
    patch_config_json(
        out,
        sluice_metrics=metrics,
        sluice_trained_on={
            "base": spec.base_ref or spec.base,
            "data_fingerprint": spec.data_fingerprint,
            "train_encoder": spec.train_encoder,
        },
    )
