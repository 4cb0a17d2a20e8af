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
BASELINE_ROWS = 10_000  # the most training (and held-out) rows the baseline embeds


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
    base: str, arrays: dict[str, np.ndarray], train: np.ndarray, held: np.ndarray, seed: int
) -> dict[str, Any]:
    """LogisticRegression on the frozen encoder's mean-pooled embeddings: fitted on the
    training rows, scored on the held-out rows as the head is (issue 17). At most
    BASELINE_ROWS of each (a seeded sample), so that it costs at most one pass of the encoder
    over 2 x BASELINE_ROWS texts on the driver; a failure is recorded, never fails the run."""
    method = "LogisticRegression on the frozen encoder's mean-pooled embeddings"
    rng = np.random.default_rng(seed)
    train, held = (
        np.sort(rng.choice(part, BASELINE_ROWS, replace=False))
        if len(part) > BASELINE_ROWS
        else part
        for part in (train, held)
    )
    try:
        from sklearn.linear_model import LogisticRegression
        from transformers import AutoModel

        encoder = load_pretrained(AutoModel, base).eval()
        x_train, x_held = (_embeddings(encoder, arrays, part) for part in (train, held))
        model = LogisticRegression(max_iter=2000).fit(x_train, arrays["labels"][train])
    except Exception as exc:  # out of memory, an encoder that will not load, one class only
        return {"method": method, "error": f"{type(exc).__name__}: {exc}"[:300]}
    value = float((model.predict(x_held) == arrays["labels"][held]).mean())
    out = {"method": method, "metric": "heldout_accuracy", "value": value}
    if len(held) == BASELINE_ROWS:
        out["n_heldout"] = BASELINE_ROWS  # a sample of the held-out rows
    return out


def _embeddings(encoder: nn.Module, arrays: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    inputs = {k: v[rows] for k, v in arrays.items() if k != "labels"}
    parts = []
    with torch.no_grad():
        for start in range(0, len(rows), EMBED_BATCH):
            batch = {k: torch.as_tensor(v[start : start + EMBED_BATCH]) for k, v in inputs.items()}
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            parts.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
    return np.concatenate(parts)


class TextRecipe(HFClassifierRecipe):
    max_epochs = 40  # an epoch runs the encoder over every row: early stopping ends it sooner

    def __init__(self, spec: TrainSpec) -> None:
        super().__init__(spec)
        # a head on a frozen body takes a batch by the rows (up to 256) and a learning rate
        # by the batch; a body fine-tuned whole keeps batch 32 and its usual 5e-5
        self.sized_by_data = not spec.train_encoder

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
            baseline=None if spec.dp else embedding_baseline(base, arrays, train, held, spec.seed),
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
