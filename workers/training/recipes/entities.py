"""extract-entities: fine-tune a token classifier (AutoModelForTokenClassification) on texts
with labelled character spans, or on BIO-tagged tokens (schemas/entity_spans.py reads both;
recipes/entity_tokens.py turns them into word-piece labels).

The --base is a pretrained encoder (a new classification head: all-MiniLM-L6-v2) or a token
classifier (tiny-entities, or NAME@VERSION of this task). A base whose labels are the BIO
tags of exactly the data's entity types keeps its head (and its label order); any other
gets a new head with labels O, B-X, I-X for each type X, and the saved config.json says so
(`sluice_trained_on.head`). The whole model is fine-tuned.

Each row's loss is the mean over its own labelled pieces and a batch's the mean over rows,
so a row's gradient does not depend on the other rows of its batch (which DP-SGD's per-row
clipping assumes). The held-out metrics are entity-level, seqeval-style
(recipes/span_metrics.py), on the spans the pipeline's `simple` aggregation would give:
heldout_f1 (primary), heldout_precision, heldout_recall, and per_type.X.* per type.

DP-SGD trains the layers Opacus gives exact per-sample gradients for, checked on the model
before the run (recipes/dp_layers.py): position and token-type tables stay frozen and are
recorded in config.json (`sluice_trained_on.dp_frozen`); a model with layers Opacus cannot
handle is refused, naming them, before any training.
"""

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from schemas import entity_spans
from schemas.errors import TrainingError
from schemas.media_refs import MediaLimits
from schemas.training import TrainSpec
from workers.safe_loading import load_pretrained
from workers.training.recipes import dp_layers
from workers.training.recipes import entity_tokens as tokens
from workers.training.recipes.base import Prepared
from workers.training.recipes.hf_classifier import label_config, unwrap
from workers.training.recipes.span_metrics import span_metrics
from workers.training.scratch_models import patch_config_json

IGNORE = tokens.IGNORE
LEARNING_RATE = 5e-5  # the usual range for fine-tuning a pretrained encoder
EVAL_BATCH = 64  # bounds the memory of held-out passes
PROBE_ROWS = 3  # training rows the DP layer check runs on
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def base_of(spec: TrainSpec) -> str:
    if not spec.base:
        raise TrainingError(
            "extract-entities fine-tunes a pretrained encoder or token classifier: give one "
            "with --base (a model directory or NAME@VERSION)"
        )
    return spec.base


def rows_as_spans(spec: TrainSpec, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Texts and their spans of the spec's entity types (others read as no entity); bad rows
    are named (checked at submit too: the data may have changed since)."""
    texts, spans, bad = [], [], []
    kinds = set(spec.labels)
    for n, row in enumerate(rows, 1):
        try:
            text, found = entity_spans.annotated(
                row.get(spec.text_column), row.get(spec.label_column), spec.annotation
            )
        except ValueError as exc:
            bad.append(f"row {n}: {exc}")
            continue
        texts.append(text)
        spans.append([s for s in found if s[2] in kinds])
    if bad:
        raise ValueError(f"rows that cannot be read: {'; '.join(bad[:5])}")
    return texts, spans


def head_labels(config: Any, kinds: list[str]) -> tuple[list[str], str]:
    """The model's labels in id order, and what became of the base's head."""
    base_labels = [config.id2label[i] for i in sorted(config.id2label)]
    try:
        base_kinds = entity_spans.kinds_of(base_labels)
    except ValueError:
        base_kinds = []
    if (
        base_kinds
        and sorted(base_kinds) == sorted(kinds)
        and len(base_labels) == 2 * len(kinds) + 1
    ):
        return base_labels, "kept: the base's labels are the data's"
    if base_kinds:
        return entity_spans.bio_labels(kinds), (
            f"new: the base tags {', '.join(base_kinds)}; the data {', '.join(kinds)}"
        )
    return entity_spans.bio_labels(kinds), "new: the base is not an entity tagger"


def split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out row indices, a seeded shuffle; at least one row on each side."""
    held_n = min(n - 1, max(1, math.ceil(n * fraction)))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[held_n:]), np.sort(order[:held_n])


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's mean loss over its own labelled pieces (0 for a row with none)."""
    pieces = F.cross_entropy(
        logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
    )
    valid = (labels != IGNORE).to(pieces.dtype)
    return (pieces * valid).sum(1) / valid.sum(1).clamp(min=1)


def load_model(base: str, labels: list[str], new_head: bool) -> nn.Module:
    from transformers import AutoModelForTokenClassification

    model: nn.Module = load_pretrained(
        AutoModelForTokenClassification,
        base,
        dtype=torch.float32,
        ignore_mismatched_sizes=new_head,
        **label_config(labels),
    )
    return model


class EntitiesRecipe:
    primary_metric = "heldout_f1"
    default_learning_rate = LEARNING_RATE

    def __init__(self, spec: TrainSpec) -> None:
        self.task = spec.task
        self.meta: dict[str, Any] = {}

    # -- the driver ------------------------------------------------------------------------
    def prepare(self, spec: TrainSpec, rows: list[dict[str, Any]], limits: MediaLimits) -> Prepared:
        from transformers import AutoConfig, AutoTokenizer

        base = base_of(spec)
        config = load_pretrained(AutoConfig, base)
        tokenizer = load_pretrained(AutoTokenizer, base)
        labels, head = head_labels(config, list(spec.labels))
        texts, spans = rows_as_spans(spec, rows)
        label_ids = {label: i for i, label in enumerate(labels)}
        arrays = tokens.encode(
            tokenizer, texts, spans, label_ids, tokens.positions_limit(config, tokenizer)
        )
        train, held = split(len(texts), spec.holdout_fraction, spec.seed)
        self.meta = meta = {
            "base": base,
            "labels": labels,
            "head": head,
            "pad": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            "heldout_rows": [int(i) for i in held],  # indices of `rows`
            "heldout_spans": [spans[i] for i in held],
        }
        trained = {k: v[train] for k, v in arrays.items() if k in MODEL_KEYS}
        meta["dp_frozen"] = self.dp_plan(spec, trained) if spec.dp else {}
        return Prepared(train=trained, heldout={k: v[held] for k, v in arrays.items()}, meta=meta)

    def dp_plan(self, spec: TrainSpec, train: dict[str, Any]) -> dict[str, str]:
        """The modules DP-SGD leaves frozen, {name: why}; TrainingError (before any training)
        for a model with layers Opacus gives no exact per-sample gradients for."""
        torch.manual_seed(spec.seed)
        model = self.new_model(self.meta)
        frozen = dp_layers.lookup_tables(model)
        dp_layers.freeze(model, frozen)
        some = [i % len(train["input_ids"]) for i in range(PROBE_ROWS)]  # >1 even from 1 row
        rows = {k: torch.as_tensor(v[some]) for k, v in train.items()}
        unused, problems = dp_layers.check_per_sample_gradients(model, rows, self.loss)
        if problems:
            raise TrainingError(
                f"--dp-epsilon: Opacus cannot compute exact per-sample gradients for "
                f"{type(model).__name__}'s layers {'; '.join(problems)}, so DP-SGD cannot "
                f"train {spec.base_ref or spec.base}. Train it without --dp-epsilon, or start "
                "from a BERT- or RoFormer-shaped encoder"
            )
        return {**frozen, **unused}

    # -- every rank ------------------------------------------------------------------------
    def new_model(self, meta: dict[str, Any]) -> nn.Module:
        # a new head is initialised from the global RNG: the caller seeds it (every rank alike)
        return load_model(meta["base"], meta["labels"], meta["head"].startswith("new"))

    def build(self, spec: TrainSpec, meta: dict[str, Any]) -> nn.Module:
        self.meta = meta
        torch.manual_seed(spec.seed)
        model = self.new_model(meta)
        dp_layers.freeze(model, meta.get("dp_frozen") or {})
        return model.train()  # from_pretrained gives eval mode; Opacus insists on train

    def trimmed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's inputs without the columns that are padding in every row. An empty
        batch (DP's Poisson sampling may draw one) becomes one row of padding that carries
        no label: its loss and gradients are zero, and Opacus still steps."""
        batch = {k: v for k, v in batch.items() if k in MODEL_KEYS}
        ids = batch["input_ids"]
        if ids.shape[0] == 0:
            one = {"input_ids": self.meta["pad"], "attention_mask": 1, "labels": IGNORE}
            if "token_type_ids" in batch:
                one["token_type_ids"] = 0
            return {
                k: torch.full((1, 1), v, dtype=ids.dtype, device=ids.device) for k, v in one.items()
            }
        width = max(1, int(batch["attention_mask"].sum(1).max()))
        return {k: v[:, :width] for k, v in batch.items()}

    def logits_and_labels(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.trimmed(batch)
        labels = batch.pop("labels")
        return model(**batch).logits, labels

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return row_losses(*self.logits_and_labels(model, batch)).mean()

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, heldout: dict[str, torch.Tensor], meta: dict[str, Any]
    ) -> dict[str, float]:
        self.meta = meta
        was_training = model.training
        model.eval()
        n = len(heldout["input_ids"])
        losses, predicted = [], []
        try:
            for first in range(0, n, EVAL_BATCH):
                part = {k: v[first : first + EVAL_BATCH] for k, v in heldout.items()}
                logits, labels = self.logits_and_labels(model, part)
                losses.append(row_losses(logits, labels))
                width = logits.shape[1]
                predicted += tokens.predicted_spans(
                    logits.argmax(-1).cpu().numpy(),
                    part["offsets"][:, :width].cpu().numpy(),
                    part["attention_mask"][:, :width].cpu().numpy(),
                    dict(enumerate(meta["labels"])),
                )
        finally:
            model.train(was_training)
        kinds = entity_spans.kinds_of(meta["labels"])
        return {
            **span_metrics(meta["heldout_spans"], predicted, kinds),
            "heldout_loss": float(torch.cat(losses).mean()),
            "n_heldout": float(n),
        }

    def save(
        self,
        model: nn.Module,
        out: Path,
        spec: TrainSpec,
        meta: dict[str, Any],
        metrics: dict[str, float],
    ) -> None:
        """The model (id2label O, B-X, I-X) and the base's fast tokenizer, as the
        extract-entities handler and transformers' token-classification pipeline load them."""
        from transformers import AutoTokenizer

        unwrap(model).save_pretrained(out, safe_serialization=True)
        load_pretrained(AutoTokenizer, meta["base"]).save_pretrained(out)
        patch_config_json(
            out,
            sluice_metrics=metrics,
            sluice_trained_on={
                "base": spec.base_ref or spec.base,
                "data_fingerprint": spec.data_fingerprint,
                "text_column": spec.text_column,
                "label_column": spec.label_column,
                "annotation": spec.annotation,
                "entity_types": entity_spans.kinds_of(meta["labels"]),
                "head": meta["head"],
                "dp_frozen": meta.get("dp_frozen") or {},
            },
        )
