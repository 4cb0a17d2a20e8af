"""The self-made demo models: built once per module, then checked by reloading them from disk."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes

from ops.demo_model_cache import BUILDERS, build_all
from ops.demo_models import digits_holdout, split_indices
from workers.training.records_mlp import load_records_model, normalise
from workers.training.scratch_models import SAMPLE_RATE
from workers.training.synth_audio import SOUND_LABELS, synthesize, synthesize_dataset

# The spelling, entity, QA and vision models are checked by their own test files.
ELSEWHERE = ("tiny-spell-", "tiny-entities", "tiny-qa", "tiny-clip", "shapes-detector")
BUILT_HERE = [n for n in BUILDERS if not n.startswith(ELSEWHERE)]


@pytest.fixture(scope="module")
def built(demo_models: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The session's shared cache (what `sluice models build` writes), not a build of its own:
    the same builders, and ~2 minutes less of CI."""
    return demo_models, build_all(demo_models, BUILT_HERE)


@pytest.fixture(scope="module")
def root(built: tuple[Path, dict[str, dict[str, Any]]]) -> Path:
    return built[0]


def test_every_builder_wrote_a_complete_safetensors_directory(root: Path) -> None:
    for name in BUILT_HERE:
        model_dir = root / name
        assert (model_dir / "metrics.json").is_file(), name
        assert (model_dir / "model.safetensors").is_file(), name
        assert not list(model_dir.glob("*.bin")), name
        assert "auto_map" not in json.loads((model_dir / "config.json").read_text()), name


def test_a_build_into_an_empty_directory_leaves_only_complete_models(tmp_path: Path) -> None:
    fast = ["breast-cancer-classifier", "diabetes-regressor"]  # a second each
    build_all(tmp_path, fast)
    assert sorted(p.name for p in tmp_path.iterdir()) == fast  # no temp dirs left
    assert all((tmp_path / name / "metrics.json").is_file() for name in fast)


def test_build_all_is_cached(root: Path) -> None:
    stamps = {name: (root / name / "metrics.json").stat().st_mtime_ns for name in BUILT_HERE}
    built_now: list[str] = []
    started = time.perf_counter()
    metrics = build_all(root, BUILT_HERE, on_built=lambda name, _: built_now.append(name))
    assert time.perf_counter() - started < 2.0
    assert built_now == []
    assert set(metrics) == set(BUILT_HERE)
    assert stamps == {
        name: (root / name / "metrics.json").stat().st_mtime_ns for name in BUILT_HERE
    }


def test_build_all_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        build_all(tmp_path, names=["no-such-model"])


# ---------------------------------------------------------------- records


def test_records_classifier_heldout_accuracy_from_saved_dir(root: Path) -> None:
    model, config, features = load_records_model(root / "breast-cancer-classifier")
    assert config["task"] == "classify-records" and config["format_version"] == 1
    assert config["labels"] == ["malignant", "benign"]
    assert config["trained_on"] == "sklearn breast_cancer"
    assert "auto_map" not in config and "architectures" not in config
    data = load_breast_cancer()
    assert [f["name"] for f in features] == list(data.feature_names)
    assert {f["type"] for f in features} == {"number"}
    held = _records_holdout(data.target)
    with torch.no_grad():
        logits = model(torch.from_numpy(normalise(data.data[held], features)))
    accuracy = float((logits.argmax(-1).numpy() == data.target[held]).mean())
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(config["metrics"]["heldout_accuracy"])


def _records_holdout(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    return split_indices(labels, seed)[1]


def test_records_feature_ranges_are_the_widened_training_ranges(root: Path) -> None:
    _, _, features = load_records_model(root / "breast-cancer-classifier")
    data = load_breast_cancer()
    train = split_indices(data.target, 0)[0]
    for i, feature in enumerate(features):
        column = data.data[train, i]
        lo, hi = column.min(), column.max()
        assert feature["type"] == "number"
        assert feature["min"] == pytest.approx(max(lo - (hi - lo), 0.0))  # data is >= 0
        assert feature["max"] == pytest.approx(hi + (hi - lo))
        assert feature["mean"] == pytest.approx(column.mean())
        assert feature["std"] == pytest.approx(max(column.std(), 1e-6))
        assert feature["min"] <= data.data[:, i].min() and feature["max"] >= data.data[:, i].max()


def test_records_regressor_types_and_metrics(root: Path) -> None:
    model, config, features = load_records_model(root / "diabetes-regressor")
    assert config["task"] == "regress-records" and config["target"] == "disease_progression"
    assert "labels" not in config
    types = {f["name"]: f["type"] for f in features}
    assert types["sex"] == "integer"
    assert set(types.values()) <= {"number", "integer", "boolean"}
    sex = next(f for f in features if f["name"] == "sex")
    assert sex["min"] == 0.0 and sex["max"] == 3.0  # 1..2 widened by 1 on each side
    data = load_diabetes(scaled=False)
    with torch.no_grad():
        out = model(torch.from_numpy(normalise(data.data[:5], features)))
    assert out.shape == (5, 1)
    predicted = out[:, 0].numpy() * config["target_std"] + config["target_mean"]
    assert np.all((predicted > 0) & (predicted < 400))
    assert config["metrics"]["heldout_r2"] > 0.3


# ---------------------------------------------------------------- image


def test_image_classifier_heldout_accuracy_from_saved_dir(root: Path) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(root / "digits-classifier")
    model = AutoModelForImageClassification.from_pretrained(root / "digits-classifier").eval()
    held = digits_holdout()
    assert held[0][0].size == (32, 32) and held[0][0].mode == "L"
    one = processor(images=held[0][0].convert("RGB"), return_tensors="pt")
    assert tuple(one["pixel_values"].shape) == (1, 3, 32, 32)
    inputs = processor(images=[image.convert("RGB") for image, _ in held], return_tensors="pt")
    with torch.no_grad():
        predicted = model(**inputs).logits.argmax(-1).tolist()
    labels = [model.config.id2label[p] for p in predicted]
    accuracy = np.mean(
        [label == str(truth) for label, (_, truth) in zip(labels, held, strict=True)]
    )
    assert accuracy >= 0.9


# ---------------------------------------------------------------- audio


def _audio_holdout() -> tuple[list[np.ndarray], list[int]]:
    clips, labels = synthesize_dataset(100, 1.0, SAMPLE_RATE, 0)
    held = split_indices(np.array(labels), 0)[1]
    return [clips[i] for i in held], [labels[i] for i in held]


def test_audio_classifier_heldout_accuracy_from_saved_dir(root: Path) -> None:
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    extractor = AutoFeatureExtractor.from_pretrained(root / "sounds-classifier")
    model = AutoModelForAudioClassification.from_pretrained(root / "sounds-classifier").eval()
    assert [model.config.id2label[i] for i in range(len(SOUND_LABELS))] == list(SOUND_LABELS)
    clips, labels = _audio_holdout()
    inputs = extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
    with torch.no_grad():
        predicted = model(**inputs).logits.argmax(-1).numpy()
    assert float((predicted == np.array(labels)).mean()) >= 0.9


def test_audio_batched_with_padding_matches_one_by_one(root: Path) -> None:
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    extractor = AutoFeatureExtractor.from_pretrained(root / "sounds-classifier")
    model = AutoModelForAudioClassification.from_pretrained(root / "sounds-classifier").eval()
    rng = np.random.default_rng(7)
    # different lengths so the batch really is padded
    clips = [
        synthesize(label, seconds, SAMPLE_RATE, rng)
        for label, seconds in zip(SOUND_LABELS, (1.0, 0.6, 0.8, 0.45), strict=True)
    ]
    batch = extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
    assert int(batch["attention_mask"].sum(-1).min()) < batch["attention_mask"].shape[-1]
    with torch.no_grad():
        batched = model(**batch).logits
        single = torch.cat(
            [
                model(**extractor([clip], sampling_rate=SAMPLE_RATE, return_tensors="pt")).logits
                for clip in clips
            ]
        )
    assert batched.argmax(-1).tolist() == single.argmax(-1).tolist()
    assert torch.allclose(batched, single, atol=1e-3)


# ---------------------------------------------------------------- speech recognisers


def _speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def test_tiny_ctc_loads_and_decodes_strings(root: Path) -> None:
    from transformers import AutoModelForCTC, AutoProcessor

    config = json.loads((root / "tiny-ctc" / "config.json").read_text())
    assert "randomly initialised" in config["sluice_note"]
    processor = AutoProcessor.from_pretrained(root / "tiny-ctc")
    model = AutoModelForCTC.from_pretrained(root / "tiny-ctc").eval()
    inputs = processor(
        [_speech(1.0, 0), _speech(0.5, 1)],
        sampling_rate=SAMPLE_RATE,
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == len(processor.tokenizer)
    texts = processor.batch_decode(logits.argmax(-1))
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_tiny_whisper_loads_generates_and_decodes_strings(root: Path) -> None:
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    config = json.loads((root / "tiny-whisper" / "config.json").read_text())
    assert "randomly initialised" in config["sluice_note"]
    processor = AutoProcessor.from_pretrained(root / "tiny-whisper")
    model = AutoModelForSpeechSeq2Seq.from_pretrained(root / "tiny-whisper").eval()
    inputs = processor(
        [_speech(1.0, 0), _speech(2.0, 1)], sampling_rate=SAMPLE_RATE, return_tensors="pt"
    )
    ids = model.generate(inputs["input_features"], max_new_tokens=20)
    texts = processor.batch_decode(ids, skip_special_tokens=True)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


# ---------------------------------------------------------------- synthetic audio


def test_synthesized_clips_are_bounded_mono_float32_and_deterministic() -> None:
    first, labels = synthesize_dataset(2, 0.5, SAMPLE_RATE, seed=3)
    again, _ = synthesize_dataset(2, 0.5, SAMPLE_RATE, seed=3)
    assert labels == [0, 1, 2, 3, 0, 1, 2, 3]
    for clip, same in zip(first, again, strict=True):
        assert clip.dtype == np.float32 and clip.shape == (SAMPLE_RATE // 2,)
        assert float(np.abs(clip).max()) <= 1.0
        assert np.array_equal(clip, same)
    assert not np.array_equal(first[0], first[4])  # randomised, not one template per label
    with pytest.raises(ValueError):
        synthesize("bark", 1.0, SAMPLE_RATE, np.random.default_rng(0))
