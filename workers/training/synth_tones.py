"""Tone digits: a synthetic spoken-digit stand-in for training and checking a speech recogniser
without a speech corpus. Each digit is a short tone of its own pitch (400 Hz for 0, up 180 Hz a
digit), separated by silences, so a transcript can be checked exactly, at any length."""

from __future__ import annotations

import numpy as np

TONE_DIGITS = "0123456789"
TONE_SECONDS = (0.08, 0.14)  # each digit's tone
GAP_SECONDS = (0.06, 0.14)  # the silence after it (CTC needs a blank between repeats)


def digit_pitch(digit: str) -> float:
    return 400.0 + 180.0 * TONE_DIGITS.index(digit)


def tone_digits(digits: str, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 mono clip of `digits` as tones, with a short silent lead-in and tail."""
    return tone_digits_aligned(digits, sample_rate, rng)[0]


def tone_digits_aligned(
    digits: str, sample_rate: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """The clip and where each digit's tone is: (first sample, end sample, digit)."""
    parts = [np.zeros(int(rng.uniform(0.05, 0.25) * sample_rate))]
    spans = []
    at = len(parts[0])
    for digit in digits:
        n = int(rng.uniform(*TONE_SECONDS) * sample_rate)
        spans.append((at, at + n, digit))
        t = np.arange(n) / sample_rate
        ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms fades: no clicks
        tone = np.sin(2 * np.pi * digit_pitch(digit) * t + rng.uniform(0, 2 * np.pi))
        parts.append(tone * ramp * rng.uniform(0.3, 0.9))
        parts.append(np.zeros(int(rng.uniform(*GAP_SECONDS) * sample_rate)))
        at += n + len(parts[-1])
    parts.append(np.zeros(int(rng.uniform(0.05, 0.25) * sample_rate)))
    clip = np.concatenate(parts)
    clip += rng.normal(0.0, 0.005, len(clip))
    return np.clip(clip, -1.0, 1.0).astype(np.float32), spans


def random_digits(rng: np.random.Generator, low: int, high: int) -> str:
    return "".join(rng.choice(list(TONE_DIGITS), size=int(rng.integers(low, high + 1))))
