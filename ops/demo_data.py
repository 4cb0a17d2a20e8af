"""The demo's models and samples, made here (no hub downloads): models trained on
scikit-learn's bundled data and on synthesised sounds, samples from their held-out parts."""

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from schemas.settings import Settings

MODELS = {
    "images": "digits-classifier",
    "audio": "sounds-classifier",
    "records": "breast-cancer-classifier",
}
N_IMAGES = 60
CLIPS_PER_SOUND = 6
# Audio as users have it: several containers, rates and channel counts (resampled, down-mixed).
AUDIO_FORMATS = [
    ("wav", "PCM_16", 22_050, 2),
    ("flac", "PCM_16", 8_000, 1),
    ("ogg", "VORBIS", 44_100, 1),
    ("wav", "FLOAT", 16_000, 1),
]


def models_dir(settings: Settings) -> Path:
    return (settings.data_dir / "models").resolve()


def samples_dir(settings: Settings) -> Path:
    return (settings.data_dir / "samples").resolve()


def build_models(
    settings: Settings,
    names: list[str] | None = None,
    force: bool = False,
    on_built: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    from ops.demo_model_cache import build_all

    try:
        return build_all(models_dir(settings), names, force, on_built)
    except KeyError as exc:
        from schemas.errors import SluiceError

        raise SluiceError(str(exc.args[0])) from exc


def make_samples(settings: Settings) -> dict[str, Path]:
    """Write the samples once; returns where each modality's input is."""
    root = samples_dir(settings)
    out = {"images": root / "images", "audio": root / "audio", "records": root / "records.csv"}
    done = root / "complete.json"
    if done.exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    truth = {
        "images": _digit_images(out["images"]),
        "audio": _sound_clips(out["audio"]),
        "records": _records(out["records"]),
    }
    (root / "truth.json").write_text(json.dumps(truth))
    done.write_text(json.dumps({k: str(v) for k, v in out.items()}))
    return out


def truth(settings: Settings) -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads((samples_dir(settings) / "truth.json").read_text())
    return data


def _digit_images(folder: Path) -> dict[str, str]:
    from ops.demo_models import digits_holdout

    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for n, (image, label) in enumerate(digits_holdout()[:N_IMAGES]):
        suffix = ("png", "jpg", "webp")[n % 3]  # the formats users send
        name = f"digit-{n:03d}.{suffix}"
        image.save(folder / name, quality=95, lossless=True)  # options of jpg and webp
        labels[name] = str(label)
    return labels


def _sound_clips(folder: Path) -> dict[str, str]:
    import soundfile as sf
    from scipy.signal import resample_poly

    from workers.training.synth_audio import SOUND_LABELS, synthesize

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)  # not the training seed: these clips are new
    labels = {}
    for n in range(CLIPS_PER_SOUND * len(SOUND_LABELS)):
        label = SOUND_LABELS[n % len(SOUND_LABELS)]
        ext, subtype, rate, channels = AUDIO_FORMATS[n % len(AUDIO_FORMATS)]
        seconds = float(rng.uniform(0.8, 2.0))
        clip = synthesize(label, seconds, 16_000, rng)
        if rate != 16_000:
            clip = resample_poly(clip, rate, 16_000).astype(np.float32)
        data = np.stack([clip] * channels, axis=1) if channels > 1 else clip
        name = f"sound-{n:03d}.{ext}"
        sf.write(folder / name, data, rate, subtype=subtype)
        labels[name] = label
    return labels


def _records(path: Path) -> dict[str, str]:
    from sklearn.datasets import load_breast_cancer

    from ops.demo_models import split_indices

    data = load_breast_cancer()
    _, held = split_indices(data.target, 0)  # the held-out rows the classifier never saw
    names = [str(n) for n in data.feature_names]
    labels = {}
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", *names])
        for i in held:
            key = f"patient-{i:03d}"
            writer.writerow([key, *(f"{v:.6g}" for v in data.data[i])])
            labels[key] = str(data.target_names[data.target[i]])
    return labels
