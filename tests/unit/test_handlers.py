"""Handlers run in a plain pytest on CPU: no Celery, no Ray."""

from pathlib import Path

import numpy as np
import pytest

from producers.model_refs import resolve
from schemas.catalog import load_catalog
from schemas.errors import InvalidInput
from schemas.jobs import Item
from workers.handlers import handler_for

TEXTS = [
    "Where is my parcel?",
    "我的发票金额不对，请核实。",
    "The app crashes every time I open the settings page after the latest update, "
    "and reinstalling did not help at all. " * 3,
    "ok",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> str:
    embed = load_catalog().get("embed")
    return str(resolve("all-MiniLM-L6-v2", embed, tmp_path_factory.mktemp("c")).path)


def test_embeddings_match_the_reference_whatever_the_batch(minilm: str):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(minilm, device="cpu").encode(TEXTS, normalize_embeddings=True)
    handler = handler_for(load_catalog().get("embed"))
    handler.setup(minilm, "cpu")
    feats = [handler.preprocess(Item(key=str(i), text=t), {}) for i, t in enumerate(TEXTS)]
    together = handler.predict(feats)  # short texts padded to the long one
    alone = [handler.predict([f])[0] for f in feats]  # no padding at all
    mixed = handler.predict([feats[3], feats[0], feats[2], feats[1]])
    mixed = [mixed[1], mixed[3], mixed[2], mixed[0]]
    for outputs in (together, alone, mixed):
        ours = np.array([o["embedding"] for o in outputs])
        assert ours.shape == (4, 384)
        assert ((ours * reference).sum(1)).min() >= 0.9999


def test_preprocess_rejects_what_cannot_be_embedded(minilm: str):
    handler = handler_for(load_catalog().get("embed"))
    handler.setup(minilm, "cpu")
    with pytest.raises(InvalidInput, match="empty text"):
        handler.preprocess(Item(key="k", text=" "), {})


@pytest.mark.parametrize("model", ["tiny-ctc", "tiny-whisper"])
def test_transcribe_batches_both_model_families(demo_models: Path, tmp_path: Path, model: str):
    """CTC and sequence-to-sequence models, batched over clips of different lengths and
    rates. The models are random: the test is about the plumbing, not the words."""
    from dataclasses import asdict

    from schemas.media_refs import MediaLimits
    from tests.media_files import write_audio

    handler = handler_for(load_catalog().get("transcribe"))
    handler.setup(str(demo_models / model), "cpu")
    clips = [
        write_audio(tmp_path / f"{n}.wav", seconds, rate)
        for n, (seconds, rate) in enumerate([(0.5, 16_000), (1.3, 8_000), (0.9, 44_100)])
    ]
    params = {"media_limits": asdict(MediaLimits(roots=(str(tmp_path),)))}
    feats = [handler.preprocess(Item(key=str(c), path=str(c)), params) for c in clips]
    outputs = handler.predict(feats)
    assert [o["seconds"] for o in outputs] == [0.5, 1.3, 0.9]
    assert all(isinstance(o["text"], str) for o in outputs)


def test_zero_shot_label_sets_are_bounded_and_encoded_in_batches(minilm: str):
    """Many labels are encoded in batches with the same vectors as one by one; an actor keeps
    the vectors of at most LABEL_SETS_KEPT label sets, the least recently used leaving."""
    import torch

    from workers.handlers.text import LABEL_BATCH, LABEL_SETS_KEPT, ZeroShotHandler

    assert LABEL_SETS_KEPT == 256

    handler = ZeroShotHandler()
    handler.setup(minilm, "cpu")
    many = tuple(f"topic number {n}" for n in range(LABEL_BATCH * 2 + 5))
    batched = handler.label_vectors(many)
    alone = torch.cat([handler.label_vectors((p,)) for p in many[:3]])
    assert batched.shape == (len(many), 384)
    assert torch.allclose(batched[:3], alone, atol=1e-5)
    handler.label_sets_kept = 4  # the same bound, small enough to reach quickly
    first = ("a", "b")
    handler.label_vectors(first)
    for n in range(6):
        handler.label_vectors((f"x{n}", "y"))
    assert len(handler._label_vectors) == 4
    assert first not in handler._label_vectors  # the least recently used went first


def test_zero_shot_labels_are_capped_by_the_settings():
    from schemas.catalog import load_catalog
    from schemas.errors import SluiceError
    from schemas.settings import Settings

    zero_shot = load_catalog().get("zero-shot-text")
    with pytest.raises(SluiceError, match=r"101 labels, over the cap of 100"):
        zero_shot.check_params({"labels": [f"l{n}" for n in range(101)]}, Settings())
    with pytest.raises(SluiceError, match=r"labels over 200 characters"):
        zero_shot.check_params({"labels": ["a", "b" * 201]}, Settings())
    tight = Settings(zero_shot_max_labels=3, zero_shot_max_label_chars=5)
    with pytest.raises(SluiceError, match=r"4 labels, over the cap of 3"):
        zero_shot.check_params({"labels": ["a", "b", "c", "d"]}, tight)
    checked = zero_shot.check_params({"labels": ["a", "b", "c"]}, tight)
    assert checked["labels"] == ["a", "b", "c"]
    assert checked["long_text"] == "truncate"  # the policy the job records
