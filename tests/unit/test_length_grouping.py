"""Inputs of very different lengths in one batch are run in groups of similar length: one long
clip (or text) does not pad many short ones, and every output is what the input alone gives,
in the batch's order."""

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from schemas.catalog import load_catalog
from workers.explain.audio import MAX_SEGMENTS
from workers.handlers import handler_for
from workers.handlers.audio import AudioFeatures
from workers.handlers.base import PAD_RATIO, length_groups, run_by_length
from workers.training.synth_audio import SOUND_LABELS, synthesize

RATE = 16_000


def clips(long_seconds: float, short: int, seed: int = 0) -> list[AudioFeatures]:
    """`short` clips of 0.6-1.2 s with one of `long_seconds` in the middle of them."""
    rng = np.random.default_rng(seed)
    out = [
        AudioFeatures(synthesize(SOUND_LABELS[n % 4], rng.uniform(0.6, 1.2), RATE, rng))
        for n in range(short)
    ]
    out.insert(short // 2, AudioFeatures(synthesize("low-hum", long_seconds, RATE, rng)))
    return out


def model_input_shapes(model: torch.nn.Module, name: str) -> list[tuple[int, ...]]:
    """The shape of `name` in every call of `model`, appended as the calls come."""
    shapes: list[tuple[int, ...]] = []

    def spy(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        shapes.append(tuple((kwargs.get(name) if name in kwargs else args[0]).shape))

    model.register_forward_pre_hook(spy, with_kwargs=True)
    return shapes


def test_groups_bound_the_padding_and_keep_every_position_once():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.choice([rng.randint(1, 50), rng.randint(1, 500_000)]) for _ in range(32)]
        groups = length_groups(lengths)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        for group in groups:
            assert max(lengths[i] for i in group) <= PAD_RATIO * min(lengths[i] for i in group)
        padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
        assert padded <= PAD_RATIO * sum(lengths)
        assert len(groups) <= 1 + math.log(max(lengths) / min(lengths), PAD_RATIO) + 1e-9
    assert length_groups([]) == []
    assert length_groups([5, 5, 5]) == [[0, 1, 2]]  # equal lengths: one call, as before
    # each group's results land at its own positions, whatever order the groups run in
    assert run_by_length([30, 1, 2, 31], lambda idx: [f"r{i}" for i in idx]) == [
        "r0",
        "r1",
        "r2",
        "r3",
    ]


def test_one_long_clip_does_not_pad_many_short_ones(demo_models: Path):
    handler = handler_for(load_catalog().get("classify-audio"))
    handler.setup(str(demo_models / "sounds-classifier"), "cpu")
    batch = clips(30.0, 31)
    shapes = model_input_shapes(handler.model, "input_values")
    together = handler.predict(batch)
    fed = list(shapes)
    alone = [handler.predict([f])[0] for f in batch]

    assert [o["seconds"] for o in together] == [round(f.length / RATE, 3) for f in batch]
    assert [o["label"] for o in together] == [o["label"] for o in alone]
    for ours, reference in zip(together, alone, strict=True):
        assert ours["scores"] == pytest.approx(reference["scores"], abs=1e-5)
    # not a 32 x 30 s tensor (15.4 M samples): the 30 s clip runs on its own, as its three
    # 10 s windows (workers/handlers/audio_windows.py)
    real = sum(f.length for f in batch)
    assert sum(rows * width for rows, width in fed) <= PAD_RATIO * real
    assert (3, 10 * RATE) in fed and all(rows == 3 for rows, width in fed if width > 2 * RATE)


def test_grouped_explanations_are_each_clips_own(demo_models: Path):
    handler = handler_for(load_catalog().get("classify-audio"))
    handler.setup(str(demo_models / "sounds-classifier"), "cpu")
    batch = clips(4.0, 4, seed=1)
    outputs = handler.predict(batch)
    shapes = model_input_shapes(handler.model, "input_values")
    together = handler.explain(batch, outputs, steps=8, internal_batch_size=64)
    # Each clip is run once as it is and once per segment silenced (and once with the padding
    # "silenced"), each time padded to at most PAD_RATIO times its length: ~330 s of samples
    # here, against 440 s when all five are padded to the 4 s clip (and ~150 s grouped).
    real = sum(f.length for f in batch)
    assert sum(rows * width for rows, width in shapes) <= (MAX_SEGMENTS + 2) * PAD_RATIO * real
    assert max(width for _, width in shapes) == 4 * RATE
    for n, f in enumerate(batch):
        (alone,) = handler.explain([f], [outputs[n]], steps=8, internal_batch_size=64)
        assert together[n].target == alone.target == outputs[n]["label"]
        assert together[n].tokens == alone.tokens
        assert together[n].attributions == pytest.approx(alone.attributions, rel=2e-3, abs=1e-5)


def test_ctc_texts_do_not_depend_on_the_batch(demo_models: Path):
    """The random CTC model writes letters on padding frames too: a clip's text must be read
    from its own frames only, whatever it was batched with."""
    handler = handler_for(load_catalog().get("transcribe"))
    handler.setup(str(demo_models / "tiny-ctc"), "cpu")
    batch = clips(5.0, 7, seed=2)
    shapes = model_input_shapes(handler.model, "input_values")
    together = [o["text"] for o in handler.predict(batch)]
    assert (1, 5 * RATE) in shapes and all(rows == 1 for rows, width in shapes if width > 2 * RATE)
    assert together == [handler.predict([f])[0]["text"] for f in batch]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> str:
    from producers.model_refs import resolve

    return str(
        resolve("all-MiniLM-L6-v2", load_catalog().get("embed"), tmp_path_factory.mktemp("c")).path
    )


TEXTS = ["Where is my parcel?", "ok", "Refund please", "Thanks a lot!"] * 8


@pytest.mark.parametrize("task", ["embed", "classify-text"])
def test_one_long_text_does_not_pad_many_short_ones(task: str, minilm: str, tiny_classifier: Path):
    from schemas.jobs import Item

    handler = handler_for(load_catalog().get(task))
    handler.setup(minilm if task == "embed" else str(tiny_classifier), "cpu")
    texts = [*TEXTS[:16], "The app crashes every time I open the settings page. " * 20, *TEXTS[16:]]
    batch = [handler.preprocess(Item(key=str(n), text=t), {}) for n, t in enumerate(texts)]
    shapes = model_input_shapes(handler.model, "input_ids")
    together = handler.predict(batch)
    assert max(width for _, width in shapes) > 100  # the long text was not cut short...
    assert all(rows == 1 for rows, width in shapes if width > 100)  # ...and ran alone
    alone_by_text = {t: handler.predict([f])[0] for t, f in zip(texts, batch, strict=True)}
    for n, t in enumerate(texts):
        alone = alone_by_text[t]
        if task == "embed":
            assert np.dot(together[n]["embedding"], alone["embedding"]) >= 0.9999
        else:
            assert together[n]["label"] == alone["label"]
            assert together[n]["scores"] == pytest.approx(alone["scores"], abs=1e-5)
