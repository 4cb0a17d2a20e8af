"""Clips longer than a model's window are read whole (issue 18): a 75-second tone-digit clip
is transcribed exactly by a CTC model trained here on 2-to-5-second clips, a random
Whisper's windows reach the clip's end, and a long clip is classified over its windows."""

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from schemas.catalog import load_catalog
from schemas.jobs import Item
from schemas.media_refs import MediaLimits
from schemas.states import ExplanationStatus
from workers.handlers import handler_for
from workers.handlers.audio_windows import (
    join_overlapping,
    kept_frames,
    strided,
    strided_by_hop,
    tiled,
)
from workers.training.synth_audio import SOUND_LABELS, synthesize
from workers.training.synth_tones import random_digits, tone_digits

RATE = 16_000


def handler(task: str, model: Path) -> Any:
    h = handler_for(load_catalog().get(task))
    h.setup(str(model), "cpu")
    return h


def features(h: Any, clips: list[np.ndarray], folder: Path) -> list[Any]:
    params = {"media_limits": asdict(MediaLimits(roots=(str(folder),)))}
    out = []
    for n, clip in enumerate(clips):
        path = folder / f"{n}.wav"
        sf.write(path, clip, RATE, subtype="FLOAT")
        out.append(h.preprocess(Item(key=str(n), path=str(path)), params))
    return out


def long_digits(seconds: float, seed: int) -> tuple[str, np.ndarray]:
    """Random digits as tones, cut to whole digits lasting at least `seconds`."""
    rng = np.random.default_rng(seed)
    digits = random_digits(rng, int(seconds * 5), int(seconds * 5))  # ~0.21 s a digit
    return digits, tone_digits(digits, RATE, rng)


def test_a_75_second_clip_is_transcribed_whole_and_exactly(demo_models: Path, tmp_path: Path):
    digits, clip = long_digits(75, seed=7)
    assert len(clip) / RATE > 75
    short_digits, short = long_digits(1, seed=8)
    h = handler("transcribe", demo_models / "tone-digits-ctc")
    long_row, short_row = h.predict(features(h, [clip, short], tmp_path))
    assert long_row["text"] == digits  # every digit, none twice, none lost at a window's edge
    assert short_row["text"] == short_digits
    assert long_row["seconds"] == round(len(clip) / RATE, 3)
    windows = long_row["windows"]
    assert len(windows) > 1 and windows[0][0] == 0 and windows[-1][1] == long_row["seconds"]
    assert all(b[0] < a[1] for a, b in zip(windows, windows[1:], strict=False))  # overlapping
    assert short_row["windows"] == [[0.0, short_row["seconds"]]]


def test_windows_cut_anywhere_give_the_same_transcript(demo_models: Path, tmp_path: Path):
    """Shifting where the windows fall (a clip with more quiet ahead) changes nothing."""
    digits, clip = long_digits(45, seed=3)
    h = handler("transcribe", demo_models / "tone-digits-ctc")
    for lead in (0.0, 0.37, 1.91):
        quiet = np.random.default_rng(1).normal(0.0, 0.005, int(lead * RATE))  # as trained
        shifted = np.concatenate([quiet.astype(np.float32), clip])
        (row,) = h.predict(features(h, [shifted], tmp_path))
        assert row["text"] == digits


def test_a_random_whispers_windows_reach_the_clips_end(demo_models: Path, tmp_path: Path):
    h = handler("transcribe", demo_models / "tiny-whisper")
    clip = (np.random.default_rng(0).normal(0, 0.1, int(75.3 * RATE))).astype(np.float32)
    generated: list[int] = []
    generate = h.model.generate

    def counting(*args: Any, **kwargs: Any) -> Any:
        out = generate(*args, **kwargs)
        generated.append(int(out.shape[0]))
        return out

    h.model.generate = counting
    (row,) = h.predict(features(h, [clip], tmp_path))
    assert row["seconds"] == 75.3
    assert row["windows"] == [[0.0, 30.0], [20.0, 50.0], [40.0, 70.0], [60.0, 75.3]]
    assert sum(generated) == 4  # each window transcribed (one batched call)
    assert isinstance(row["text"], str)


def test_a_long_clip_is_classified_by_the_mean_of_its_windows(demo_models: Path, tmp_path: Path):
    rng = np.random.default_rng(0)
    parts = [synthesize(label, 12.0, RATE, rng) for label in ("high-whistle", "low-hum", "noise")]
    clip = np.concatenate(parts)[: int(35 * RATE)]
    h = handler("classify-audio", demo_models / "sounds-classifier")
    feats = features(h, [clip], tmp_path)
    (row,) = h.predict(feats)
    assert row["windows"] == [[0.0, 10.0], [10.0, 20.0], [20.0, 30.0], [25.0, 35.0]]
    # each window through the model directly (its own feature extraction), then the mean
    probs = []
    for start, end in row["windows"]:
        window = feats[0].samples[int(start * RATE) : int(end * RATE)]
        enc = h.extractor([window], sampling_rate=RATE, return_tensors="pt")
        with torch.no_grad():
            probs.append(torch.softmax(h.model(**enc).logits, dim=-1)[0])
    mean = torch.stack(probs).mean(dim=0)
    assert row["label"] == SOUND_LABELS[int(mean.argmax())]
    for label, score in row["scores"].items():
        assert score == pytest.approx(float(mean[SOUND_LABELS.index(label)]), abs=1e-5)
    (explanation,) = h.explain(feats, [row], 1, 8)
    assert explanation.status == ExplanationStatus.OK
    assert explanation.detail["segments"][-1][1] == 35.0  # the whole clip, not its first window


def test_window_plans_tile_every_sample_once():
    for samples, window, stride in (
        (75 * RATE, 20 * RATE, 4 * RATE),
        (1000, 300, 50),
        (301, 300, 50),
    ):
        windows = strided(samples, window, stride)
        kept = [(w.keep_start, w.keep_end) for w in windows]
        assert kept[0][0] == 0 and kept[-1][1] == samples
        assert all(a[1] == b[0] for a, b in zip(kept, kept[1:], strict=False))
        assert all(w.end - w.start <= window for w in windows)
    assert [(w.start, w.end) for w in tiled(25, 10)] == [(0, 10), (10, 20), (15, 25)]
    with pytest.raises(ValueError):
        strided(1000, 100, 50)


@pytest.mark.parametrize("conv_stride", [(5, 4, 4), (5, 2, 2, 2, 2, 2, 2)])  # hop 80, hop 320
def test_the_kept_frames_of_every_window_are_the_clips_frames_each_once(conv_stride):
    """Each window's frames as the model makes them (its conv stack's own lengths); kept,
    then placed in the clip: exactly the frames the whole clip would have, in order."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    n = len(conv_stride)
    config = Wav2Vec2Config(
        conv_dim=(8,) * n, conv_stride=conv_stride, conv_kernel=(10,) + (3,) * (n - 1),
        hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8,
        num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=1,
    )  # fmt: skip
    model = Wav2Vec2ForCTC(config)
    hop = config.inputs_to_logits_ratio

    def frames(samples: int) -> int:
        return int(model._get_feat_extract_output_lengths(torch.tensor(samples)))

    rng = np.random.default_rng(0)
    lengths = [*rng.integers(RATE, 200 * RATE, 500).tolist(), 20 * RATE, 32 * RATE + hop - 1]
    for samples in lengths:
        placed = []
        for w in strided_by_hop(samples, 20 * RATE, 4 * RATE, hop):
            own = frames(w.length)
            placed += [w.start // hop + f for f in range(own)[kept_frames(w, own, hop)]]
        assert placed == list(range(frames(samples))), samples


def test_overlapping_token_sequences_join_once():
    assert join_overlapping([[1, 2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8]]) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert join_overlapping([[1, 2], [3, 4]]) == [1, 2, 3, 4]  # nothing shared: end to end
    assert join_overlapping([[]]) == []


def test_a_long_clips_failed_explanation_is_its_own(
    demo_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rng = np.random.default_rng(1)
    clips = [synthesize("noise", 1.0, RATE, rng), synthesize("low-hum", 14.0, RATE, rng)]
    h = handler("classify-audio", demo_models / "sounds-classifier")
    feats = features(h, clips, tmp_path)
    rows = h.predict(feats)

    def broken(*_args: Any) -> Any:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(h, "explain_windowed", broken)
    short, long = h.explain(feats, rows, 1, 8)
    assert short.status == ExplanationStatus.OK
    assert long.status == ExplanationStatus.FAILED and "out of memory" in (long.error or "")
