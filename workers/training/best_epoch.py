"""Early stopping (issue 17): rank 0 measures the loss on the validation rows after each epoch,
keeps the weights of the best epoch, and calls for a stop once `patience` epochs in a row
brought no better loss; the best weights are what the run registers. Its state travels in the
checkpoint, so a resumed run keeps counting where it stopped."""

from typing import Any

import torch
from torch import nn

from workers.training.recipes.base import Recipe

EVAL_ROWS = 256  # rows per forward pass over the validation rows: bounds its memory
MIN_GAIN = 1e-7  # a loss lower by less is no better (float noise)


@torch.no_grad()
def validation_loss(recipe: Recipe, model: nn.Module, rows: dict[str, torch.Tensor]) -> float:
    """The recipe's training loss over the rows, in eval mode (no dropout), row-weighted."""
    was_training = model.training
    model.eval()
    try:
        n = len(next(iter(rows.values())))
        total = 0.0
        for start in range(0, n, EVAL_ROWS):
            part = {k: v[start : start + EVAL_ROWS] for k, v in rows.items()}
            size = len(next(iter(part.values())))
            total += float(recipe.loss(model, part)) * size
        return total / max(n, 1)
    finally:
        model.train(was_training)


def changing_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of what training changes: the trainable parameters and the buffers (a
    frozen encoder's 22 M weights are neither copied at each better epoch nor checkpointed)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {
        name: value.detach().to("cpu").clone()
        for name, value in model.state_dict().items()
        if name in trainable or name in buffers
    }


class BestEpoch:
    def __init__(
        self,
        recipe: Recipe,
        rows: dict[str, torch.Tensor],
        patience: int | None,
        state: dict[str, Any],
        weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.recipe, self.rows, self.patience = recipe, rows, patience
        self.best_loss: float | None = state.get("best_loss")
        self.best_epoch: int | None = state.get("best_epoch")
        self.since_best = int(state.get("since_best", 0))
        self.weights = weights  # the best epoch's, on the CPU

    @property
    def active(self) -> bool:
        return self.patience is not None and bool(self.rows)

    def observe(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """After epoch `epoch` (1-based): the validation figures for the run's history."""
        loss = validation_loss(self.recipe, model, self.rows)
        if self.best_loss is None or loss < self.best_loss - MIN_GAIN:
            self.best_loss, self.best_epoch, self.since_best = loss, epoch, 0
            self.weights = changing_state(model)
        else:
            self.since_best += 1
        return {"validation_loss": round(loss, 6)}

    @property
    def stop(self) -> bool:
        return self.active and self.patience is not None and self.since_best >= self.patience

    def state(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
        }

    def restore(self, model: nn.Module) -> dict[str, Any]:
        """The best epoch's weights into `model`; what to record about the choice."""
        if self.weights is None:
            return {}
        model.load_state_dict(self.weights, strict=False)  # the rest never changed
        return {"best_epoch": self.best_epoch, "validation_loss": self.best_loss}
