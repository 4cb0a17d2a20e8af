"""The held-out split every recipe uses: stratified, seeded, never trained on."""

import numpy as np
from sklearn.model_selection import train_test_split


def holdout_split(strata: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and held-out row indices, stratified on `strata` (labels or bins)."""
    indices = np.arange(len(strata))
    train, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=strata)
    return np.sort(train), np.sort(held)
