"""The held-out split every recipe uses: stratified, seeded, never trained on."""

import numpy as np
from sklearn.model_selection import train_test_split

from schemas.training import TrainSpec


def holdout_split(strata: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and held-out row indices, stratified on `strata` (labels or bins)."""
    indices = np.arange(len(strata))
    train, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=strata)
    return np.sort(train), np.sort(held)


VALIDATION_FRACTION = 0.15  # of the training rows, to choose the epoch
MIN_VALIDATION_ROWS = 8  # fewer: no early stopping (a figure over a handful of rows is noise)


def carve_validation(
    train: np.ndarray, strata: np.ndarray, spec: TrainSpec
) -> tuple[np.ndarray, np.ndarray]:
    """The training rows split into (fit, validation) indices, stratified on `strata` where
    every stratum can give rows to both (plainly otherwise). An empty validation part when
    the rows are too few to spare any, and when nothing would read it: early stopping off,
    or DP (choosing the epoch by private rows would spend privacy the budget does not count)."""
    n_validation = round(len(train) * VALIDATION_FRACTION)
    if n_validation < MIN_VALIDATION_ROWS or spec.dp is not None or not spec.early_stopping:
        return train, train[:0]
    seed = spec.seed
    try:
        fit, validation = train_test_split(
            train, test_size=n_validation, random_state=seed, stratify=strata[train]
        )
    except ValueError:  # a stratum with a single row
        fit, validation = train_test_split(train, test_size=n_validation, random_state=seed)
    return np.sort(fit), np.sort(validation)
