"""Synthetic labelled sounds for the audio demo model (numpy only, deterministic given a rng)."""

from __future__ import annotations

import numpy as np

SOUND_LABELS = ("low-hum", "high-whistle", "rising-chirp", "noise")


def _sine(freq: float, t: np.ndarray, phase: float) -> np.ndarray:
    return np.sin(2 * np.pi * freq * t + phase)


def _low_hum(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f0 = rng.uniform(100.0, 300.0)
    # a few decaying harmonics make it a "hum" rather than a pure tone
    weights = (1.0, rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.3))
    return sum(
        (w * _sine(f0 * (k + 1), t, rng.uniform(0, 2 * np.pi)) for k, w in enumerate(weights)),
        np.zeros_like(t),
    )


def _high_whistle(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _sine(rng.uniform(1500.0, 3000.0), t, rng.uniform(0, 2 * np.pi))


def _rising_chirp(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f_start = rng.uniform(250.0, 400.0)
    f_end = rng.uniform(2500.0, 3500.0)
    duration = max(float(t[-1]), 1e-3) if len(t) else 1.0
    # linear sweep: the phase is the integral of the instantaneous frequency
    phase = 2 * np.pi * (f_start * t + (f_end - f_start) * t**2 / (2 * duration))
    return np.sin(phase + rng.uniform(0, 2 * np.pi))


def _noise(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(len(t))
    if rng.random() < 0.5:
        return white
    # pink-ish noise: shape the white spectrum by 1/sqrt(f)
    spectrum = np.fft.rfft(white)
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(freqs), n=len(t))


_GENERATORS = {
    "low-hum": _low_hum,
    "high-whistle": _high_whistle,
    "rising-chirp": _rising_chirp,
    "noise": _noise,
}


def synthesize(
    label: str, seconds: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """One float32 mono clip in [-1, 1] of the given sound class, randomised by `rng`."""
    if label not in _GENERATORS:
        raise ValueError(f"unknown sound label {label!r}; expected one of {SOUND_LABELS}")
    n = int(round(seconds * sample_rate))
    # silent lead-in/tail so the sound does not always fill the clip
    lead = int(n * rng.uniform(0.0, 0.15))
    tail = int(n * rng.uniform(0.0, 0.15))
    body_len = max(n - lead - tail, 1)
    t = np.arange(body_len) / sample_rate
    body = _GENERATORS[label](t, rng)
    body = body / max(float(np.max(np.abs(body))), 1e-9) * rng.uniform(0.2, 0.9)
    clip = np.zeros(n, dtype=np.float64)
    clip[lead : lead + body_len] = body[: n - lead]
    clip += rng.normal(0.0, rng.uniform(0.002, 0.02), n)  # a little background noise
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def synthesize_dataset(
    n_per_label: int, seconds: float, sample_rate: int, seed: int
) -> tuple[list[np.ndarray], list[int]]:
    """`n_per_label` clips of each class, interleaved; labels index into SOUND_LABELS."""
    rng = np.random.default_rng(seed)
    clips: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(n_per_label):
        for index, label in enumerate(SOUND_LABELS):
            clips.append(synthesize(label, seconds, sample_rate, rng))
            labels.append(index)
    return clips, labels
