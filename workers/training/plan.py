"""How long and in what steps a run trains, chosen from its data where the user did not say
(issue 17): the batch and learning rate by the number of training rows, the epochs by early
stopping on a validation split carved from the training rows (never the held-out rows), the
best epoch restored at the end. Derived again from the same spec and data on a resume, so a
resumed run follows the same plan."""

import math
from dataclasses import dataclass

from schemas.training import TrainSpec
from workers.training.recipes.base import Prepared, Recipe

FIXED_EPOCHS = 10  # epochs without a validation split (DP, tiny data, recipes without one)
FIXED_BATCH = 32  # the batch of recipes that do not size theirs by the data
MIN_BATCH, MAX_BATCH = 16, 256
STEPS_PER_EPOCH = 12  # about: a batch of 32 at 400 rows
MAX_STEPS = 20_000  # bounds the epochs of a large set: early stopping ends most runs long before
MAX_LR_SCALE = 4.0


@dataclass(frozen=True)
class Plan:
    epochs: int  # at most this many
    batch_size: int  # the global batch (every rank takes its share)
    learning_rate: float | None  # None: the recipe's own default, as its build refines it
    patience: int | None  # epochs without a better validation loss before stopping; None: all

    def applied(self, spec: TrainSpec) -> TrainSpec:
        """The spec the training workers run: every choice made."""
        return spec.model_copy(
            update={
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "learning_rate": self.learning_rate,
            }
        )


def batch_for(rows: int) -> int:
    """A power of two near rows / STEPS_PER_EPOCH, within [MIN_BATCH, MAX_BATCH]: small sets
    take enough steps an epoch to learn, large ones batches that keep a core busy."""
    wanted = 2 ** round(math.log2(max(rows, 1) / STEPS_PER_EPOCH))
    return int(min(MAX_BATCH, max(MIN_BATCH, wanted)))


def plan_for(spec: TrainSpec, recipe: Recipe, prepared: Prepared) -> Plan:
    stops_early = bool(prepared.validation) and spec.early_stopping and spec.dp is None
    # DP keeps its fixed batch: the noise is calibrated to the sampling rate it sets
    sized = bool(getattr(recipe, "sized_by_data", False)) and spec.dp is None
    batch = spec.batch_size or (batch_for(prepared.n_train) if sized else FIXED_BATCH)
    learning_rate = spec.learning_rate
    if learning_rate is None and sized:
        # square-root scaling: a larger batch's gradient is less noisy, so it steps further
        scale = min(MAX_LR_SCALE, math.sqrt(batch / FIXED_BATCH))
        learning_rate = recipe.default_learning_rate * scale
    if spec.epochs is not None:
        epochs = spec.epochs
    elif stops_early:
        steps_per_epoch = max(1, math.ceil(prepared.n_train / batch))
        most = int(getattr(recipe, "max_epochs", 100))
        epochs = max(1, min(most, math.ceil(MAX_STEPS / steps_per_epoch)))
    else:
        epochs = FIXED_EPOCHS
    patience = max(3, min(20, epochs // 10)) if stops_early else None
    return Plan(epochs, batch, learning_rate, patience)
