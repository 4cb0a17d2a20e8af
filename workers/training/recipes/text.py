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
from workers.training.recipes.split import holdout_split

MAX_LENGTH = 128  # tokens per training text; longer texts are truncated
MAX_CHARS = 10_000_000  # the submit-time cap is the user-facing one


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


class TextRecipe(HFClassifierRecipe):
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
        return Prepared(
            train={k: v[train] for k, v in arrays.items()},
            heldout={k: v[held] for k, v in arrays.items()},
            meta={"labels": list(spec.labels), "tokenizer_dir": base},
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
