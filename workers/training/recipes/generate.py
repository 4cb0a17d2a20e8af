"""generate: fine-tune a sequence-to-sequence (AutoModelForSeq2SeqLM) or decoder-only
(AutoModelForCausalLM) model, the --base, on (input, target) text pairs: the input is the
text column, the target the label column (recipes/text_pairs.py shapes them as the handler
will prompt the model).

Each row's loss is the mean over its own target tokens and a batch's the mean over rows, so
a row's gradient never depends on the other rows of its batch (which DP-SGD's per-row
clipping assumes). The primary metric is held-out exact match of greedy generation (the
text written up to the end-of-sequence token equal to the target, both as the tokenizer
spells them), on up to EXACT_MATCH_ROWS held-out rows drawn at random; the held-out loss,
over every held-out row, is reported beside it.

DP-SGD trains the layers Opacus gives exact per-sample gradients for, checked on the model
before the run starts (recipes/dp_layers.py); position tables stay frozen and are recorded
in the saved config.json (`sluice_trained_on.dp_frozen`); a model with layers Opacus cannot
handle is refused, naming them, before any training.
"""

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from schemas.errors import TrainingError
from schemas.media_refs import MediaLimits
from schemas.training import TrainSpec
from workers.handlers.generate import positions_of
from workers.safe_loading import load_pretrained
from workers.training.recipes import dp_layers
from workers.training.recipes import text_pairs as pairs
from workers.training.recipes.base import Prepared
from workers.training.recipes.hf_classifier import unwrap
from workers.training.scratch_models import patch_config_json

IGNORE = pairs.IGNORE
LEARNING_RATE = 1e-4  # the usual range for fine-tuning a pretrained generator
EVAL_BATCH = 32  # bounds the memory of held-out passes
EXACT_MATCH_ROWS = 512  # held-out rows generated at each evaluation (every epoch)
PROBE_ROWS = 3  # training rows the DP layer check runs on
LOSS_KEYS = ("input_ids", "attention_mask", "decoder_input_ids", "labels")


def base_of(spec: TrainSpec) -> str:
    if not spec.base:
        raise TrainingError(
            "generate fine-tunes a pretrained sequence-to-sequence or decoder-only model: "
            "give one with --base (a model directory or NAME@VERSION)"
        )
    return spec.base


def load_model(base: str, encoder_decoder: bool) -> nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
    model: nn.Module = load_pretrained(auto, base, dtype=torch.float32)
    return model


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's mean loss over its own labelled tokens (0 for a row with none)."""
    tokens = F.cross_entropy(
        logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
    )
    valid = (labels != IGNORE).to(tokens.dtype)
    return (tokens * valid).sum(1) / valid.sum(1).clamp(min=1)


class GenerateRecipe:
    primary_metric = "heldout_exact_match"
    default_learning_rate = LEARNING_RATE

    def __init__(self, spec: TrainSpec) -> None:
        self.task = spec.task
        self.meta: dict[str, Any] = {}
        self._tokenizer: Any = None

    # -- the driver ------------------------------------------------------------------------
    def prepare(self, spec: TrainSpec, rows: list[dict[str, Any]], limits: MediaLimits) -> Prepared:
        from transformers import AutoConfig, AutoTokenizer

        base = base_of(spec)
        config = load_pretrained(AutoConfig, base)
        seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        tokenizer = load_pretrained(AutoTokenizer, base)
        tokens = pairs.tokens_of(base, config, tokenizer, seq2seq)
        limit = positions_of(config, tokenizer) or pairs.MAX_TOKENS
        inputs, targets = pairs.encode(
            pairs.pairs_of(rows, spec), tokenizer, tokens, limit, seq2seq
        )
        arrays = pairs.arrays(inputs, targets, tokens, seq2seq)
        train, held = pairs.split(len(rows), spec.holdout_fraction, spec.seed)
        self.meta = meta = {
            "base": base,
            "encoder_decoder": seq2seq,
            "eos": tokens.eos,
            "pad": tokens.pad,
            "start": tokens.start,
            "positions": limit,
            # room for the longest target and one token more: a longer output is no match
            "max_new_tokens": max(len(targets[i]) for i in held[:EXACT_MATCH_ROWS]) + 1,
        }
        trained = {k: v[train] for k, v in arrays.items() if k in LOSS_KEYS}
        meta["dp_frozen"] = self.dp_plan(spec, trained) if spec.dp else {}
        return Prepared(train=trained, heldout={k: v[held] for k, v in arrays.items()}, meta=meta)

    def dp_plan(self, spec: TrainSpec, train: dict[str, Any]) -> dict[str, str]:
        """The modules DP-SGD leaves frozen, {name: why}; TrainingError (before any training)
        for a model with layers Opacus gives no exact per-sample gradients for."""
        model = load_model(self.meta["base"], self.meta["encoder_decoder"])
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
                "from a model of another family (Llama-, GPT-2-, T5- and BART-shaped models "
                "are supported)"
            )
        return {**frozen, **unused}

    # -- every rank ------------------------------------------------------------------------
    def build(self, spec: TrainSpec, meta: dict[str, Any]) -> nn.Module:
        self.meta = meta
        model = load_model(meta["base"], meta["encoder_decoder"])
        dp_layers.freeze(model, meta.get("dp_frozen") or {})
        return model.train()  # from_pretrained gives eval mode; Opacus insists on train

    def trimmed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss's inputs without the columns that are padding in every row. An empty
        batch (DP's Poisson sampling may draw one) becomes one row of padding that carries
        no label: its loss and gradients are zero, and Opacus still steps."""
        ids = batch["input_ids"]
        seq2seq = "decoder_input_ids" in batch
        if ids.shape[0] == 0:
            one = {"input_ids": self.meta["pad"], "attention_mask": 1, "labels": IGNORE}
            if seq2seq:
                one["decoder_input_ids"] = self.meta["start"]
            return {
                k: torch.full((1, 1), v, dtype=ids.dtype, device=ids.device) for k, v in one.items()
            }
        width = max(1, int(batch["attention_mask"].sum(1).max()))
        out = {k: batch[k][:, :width] for k in ("input_ids", "attention_mask")}
        if seq2seq:
            steps = max(1, int((batch["labels"] != IGNORE).sum(1).max()))
            out.update({k: batch[k][:, :steps] for k in ("decoder_input_ids", "labels")})
        else:
            out["labels"] = batch["labels"][:, :width]
        return out

    def row_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = self.trimmed({k: v for k, v in batch.items() if k in LOSS_KEYS})
        labels = batch.pop("labels")
        logits = model(**batch).logits
        if "decoder_input_ids" not in batch:  # position t predicts token t + 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        return row_losses(logits, labels)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.row_losses(model, batch).mean()

    def tokenizer(self, meta: dict[str, Any]) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = load_pretrained(AutoTokenizer, meta["base"])
        return self._tokenizer

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, heldout: dict[str, torch.Tensor], meta: dict[str, Any]
    ) -> dict[str, float]:
        self.meta = meta
        was_training = model.training
        model.eval()
        n = len(heldout["input_ids"])
        checked = min(n, EXACT_MATCH_ROWS)
        losses, matches = [], 0
        try:
            for first in range(0, n, EVAL_BATCH):
                part = {k: v[first : first + EVAL_BATCH] for k, v in heldout.items()}
                losses.append(self.row_losses(model, part))
                if first < checked:
                    part = {k: v[: checked - first] for k, v in part.items()}
                    matches += self.exact_matches(model, part, meta)
        finally:
            model.train(was_training)
        return {
            "heldout_exact_match": matches / checked,
            "heldout_loss": float(torch.cat(losses).mean()),
            "n_heldout": float(n),
            "n_exact_match_rows": float(checked),
        }

    def exact_matches(self, model: Any, part: dict[str, torch.Tensor], meta: dict[str, Any]) -> int:
        """How many rows greedy generation (as the handler decodes by default) writes the
        target of."""
        if meta["encoder_decoder"]:
            width = int(part["attention_mask"].sum(1).max())
            ids, mask = part["input_ids"][:, :width], part["attention_mask"][:, :width]
            skip, room = 1, meta["max_new_tokens"]
        else:
            width = int(part["prompt_mask"].sum(1).max())
            ids, mask = part["prompt_ids"][:, -width:], part["prompt_mask"][:, -width:]
            skip, room = width, min(meta["max_new_tokens"], meta["positions"] - width)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=room,
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=meta["pad"],
            eos_token_id=meta["eos"],
        )
        tokenizer, eos = self.tokenizer(meta), meta["eos"]
        wanted = [[t for t in row if t != IGNORE] for row in part["target_ids"].tolist()]
        return sum(
            pairs.text_of(tokenizer, row[skip:], eos) == pairs.text_of(tokenizer, target, eos)
            for row, target in zip(out.tolist(), wanted, strict=True)
        )

    def save(
        self,
        model: nn.Module,
        out: Path,
        spec: TrainSpec,
        meta: dict[str, Any],
        metrics: dict[str, float],
    ) -> None:
        """The model with its generation config, and the base's tokenizer (chat template
        included), as the generate handler loads them."""
        unwrap(model).save_pretrained(out, safe_serialization=True)
        self.tokenizer(meta).save_pretrained(out)
        patch_config_json(
            out,
            sluice_metrics=metrics,
            sluice_trained_on={
                "base": spec.base_ref or spec.base,
                "data_fingerprint": spec.data_fingerprint,
                "input_column": spec.text_column,
                "target_column": spec.label_column,
                "dp_frozen": meta.get("dp_frozen") or {},
            },
        )
