"""classify-text: a sequence-classification head on a pretrained encoder (spec.base, e.g. the
packaged all-MiniLM-L6-v2), the encoder frozen unless spec.train_encoder."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from schemas.jobs import text_problem
from schemas.media_refs import MediaLimits
from schemas.training import TrainSpec
from workers.safe_loading import load_pretrained
from workers.training.recipes.base import Prepared
from workers.training.recipes.hf_classifier import (
    HFClassifierRecipe,
    label_config,
    label_ids,
    save_model,
)
from workers.training.recipes.split import carve_validation, holdout_split

MAX_LENGTH = 128  # tokens per training text; longer texts are truncated
MAX_CHARS = 10_000_000  # the submit-time cap is the user-facing one
EMBED_BATCH = 64  # texts per forward pass of the baseline's embeddings


def _base(spec: TrainSpec) -> str:
    if not spec.base:
        raise ValueError(
            "classify-text trains a head on a pretrained encoder: give a base "
            "model (for example all-MiniLM-L6-v2)"
        )
    return spec.base


def _texts(rows: list[dict[str, Any]], column: str) -> list[str]:
    texts = []
    for n, row in enumerate(rows):
        problem = text_problem(row.get(column), column, MAX_CHARS)
        if problem:
            raise ValueError(f"row {n}: {problem}; remove or fix the row and train again")
        texts.append(row[column])
    return texts


def embedding_baseline(
    base: str, arrays: dict[str, np.ndarray], train: np.ndarray, held: np.ndarray
) -> dict[str, Any]:
    """LogisticRegression on the frozen encoder's mean-pooled embeddings: fitted on every
    training row, scored on the held-out rows as the head is (issue 17)."""
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel

    method = "LogisticRegression on the frozen encoder's mean-pooled embeddings"
    encoder = load_pretrained(AutoModel, base).eval()
    inputs = {k: v for k, v in arrays.items() if k != "labels"}
    parts = []
    with torch.no_grad():
        for start in range(0, len(arrays["labels"]), EMBED_BATCH):
            batch = {k: torch.as_tensor(v[start : start + EMBED_BATCH]) for k, v in inputs.items()}
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            parts.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
    embeddings, labels = np.concatenate(parts), arrays["labels"]
    try:
        model = LogisticRegression(max_iter=2000).fit(embeddings[train], labels[train])
    except ValueError as exc:  # e.g. one class only among the training rows
        return {"method": method, "error": str(exc)[:300]}
    value = float((model.predict(embeddings[held]) == labels[held]).mean())
    return {"method": method, "metric": "heldout_accuracy", "value": value}


class TextRecipe(HFClassifierRecipe):
    sized_by_data = True
    max_epochs = 40  # an epoch runs the encoder over every row: early stopping ends it sooner

    def prepare(self, spec: TrainSpec, rows: list[dict[str, Any]], limits: MediaLimits) -> Prepared:
        from transformers import AutoTokenizer

        self.configure(spec)
        base = _base(spec)
        labels = label_ids(rows, spec.label_column, spec.labels)
        tokenizer = load_pretrained(AutoTokenizer, base)
        # padded to the longest text of the whole set: every array has the row first
        encoded = tokenizer(
            _texts(rows, spec.text_column),
            truncation=True,
            max_length=MAX_LENGTH,
            padding="longest",
            return_tensors="np",
        )
        arrays = {
            key: np.asarray(encoded[key], dtype=np.int64)
            for key in ("input_ids", "attention_mask", "token_type_ids")
            if key in encoded
        }
        arrays["labels"] = labels
        train, held = holdout_split(labels, spec.holdout_fraction, spec.seed)
        fit, validation = carve_validation(train, labels, spec)
        return Prepared(
            train={k: v[fit] for k, v in arrays.items()},
            heldout={k: v[held] for k, v in arrays.items()},
            meta={"labels": list(spec.labels), "tokenizer_dir": base},
            validation={k: v[validation] for k, v in arrays.items()} if len(validation) else {},
            baseline=embedding_baseline(base, arrays, train, held),
        )

    def build(self, spec: TrainSpec, meta: dict[str, Any]) -> nn.Module:
        from transformers import AutoModelForSequenceClassification

        # the new head is initialised from the global RNG: the same on every rank
        torch.manual_seed(spec.seed)
        model = load_pretrained(
            AutoModelForSequenceClassification,
            _base(spec),
            ignore_mismatched_sizes=True,
            **label_config(spec.labels),
        )
        if spec.dp and spec.train_encoder:
            # Opacus's per-sample gradients fail on BERT-style position embeddings (looked up
            # with batch 1), and noised embedding tables learn little: they stay frozen
            embeddings = getattr(model.base_model, "embeddings", None)
            if isinstance(embeddings, nn.Module):
                embeddings.requires_grad_(False)
        return self.finish_build(model, spec)

    def save(
        self,
        model: nn.Module,
        out: Path,
        spec: TrainSpec,
        meta: dict[str, Any],
        metrics: dict[str, float],
    ) -> None:
        from transformers import AutoTokenizer

        save_model(model, out, spec, metrics)
        load_pretrained(AutoTokenizer, meta["tokenizer_dir"]).save_pretrained(out)
