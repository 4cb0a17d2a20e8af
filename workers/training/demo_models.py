"""Builders of small demo models, trained here on bundled or synthetic data (no downloads).

Each `build_*(out, seed=...)` writes a complete, offline-loadable model directory (safetensors
weights, no `auto_map`) and returns its held-out metrics plus the build time in `seconds`.
`build_all` caches the results under one root directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn

from workers.training.records_mlp import (
    RecordsMLP,
    feature_spec,
    normalise,
    save_records_model,
)
from workers.training.synth_audio import SOUND_LABELS, synthesize_dataset

Metrics = dict[str, Any]
Builder = Callable[[Path], Metrics]
F = TypeVar("F", bound=Callable[..., Any])

HOLDOUT_FRACTION = 0.2
SAMPLE_RATE = 16000
DIGIT_SIZE = 32
RANDOM_INIT_NOTE = "randomly initialised: for testing the transcribe plumbing only"


# ---------------------------------------------------------------- shared helpers


def _isolated(build: F) -> F:
    """Run a builder on one torch thread with its own RNG state, restoring the caller's.

    These models are tiny, so intra-op threading only adds synchronisation: on a busy 2-core
    machine one thread built everything ~6x faster than two. It also makes the weights (and
    so the metrics) independent of the machine's core count. Forking the RNG keeps the
    builder's seeding from changing the random stream of the process that called it.
    """

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                return build(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return cast(F, wrapper)


def _seed_all(seed: int) -> None:
    # numpy randomness goes through explicit Generators / random_state; torch's is global
    torch.manual_seed(seed)


def split_indices(
    labels: np.ndarray, seed: int, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indices; the held-out part is never trained on."""
    indices = np.arange(len(labels))
    train, held = train_test_split(
        indices,
        test_size=HOLDOUT_FRACTION,
        random_state=seed,
        stratify=labels if stratify else None,
    )
    return np.sort(train), np.sort(held)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == np.asarray(truth)))


def _labels_config(labels: Iterable[str]) -> dict[str, Any]:
    names = list(labels)
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
    }


def _patch_config_json(out: Path, **extra: Any) -> None:
    """Add sluice-specific keys to a saved transformers config.json."""
    path = out / "config.json"
    config = json.loads(path.read_text())
    config.update(extra)
    config.pop("auto_map", None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- records models


def _train_mlp(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 32,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    model.train()
    for _ in range(epochs):
        for batch in _batches(len(x), batch_size, gen):
            optimiser.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimiser.step()
    model.eval()


@_isolated
def build_records_classifier(out: Path, *, seed: int = 0) -> Metrics:
    """RecordsMLP on scikit-learn's breast cancer data (30 numeric features, 2 classes)."""
    started = time.perf_counter()
    _seed_all(seed)
    data = load_breast_cancer()
    x_all, y_all = data.data.astype(np.float64), data.target.astype(np.int64)
    train, held = split_indices(y_all, seed)
    names = [str(n) for n in data.feature_names]
    features = [feature_spec(n, x_all[train, i]) for i, n in enumerate(names)]
    hidden, dropout = [64, 32], 0.1
    model = RecordsMLP(len(features), hidden, 2, dropout)
    x_train = torch.from_numpy(normalise(x_all[train], features))
    # label smoothing keeps the margin wide: it lifts held-out accuracy over several splits
    _train_mlp(
        model,
        x_train,
        torch.from_numpy(y_all[train]),
        nn.CrossEntropyLoss(label_smoothing=0.1),
        epochs=60,
        seed=seed,
    )
    with torch.no_grad():
        logits = model(torch.from_numpy(normalise(x_all[held], features)))
    probs = torch.softmax(logits, -1).numpy()
    metrics = {
        "heldout_accuracy": _accuracy(probs.argmax(-1), y_all[held]),
        "heldout_roc_auc": float(roc_auc_score(y_all[held], probs[:, 1])),
        "n_train": int(len(train)),
        "n_heldout": int(len(held)),
    }
    config = {
        "task": "classify-records",
        "hidden_sizes": hidden,
        "dropout": dropout,
        "labels": [str(n) for n in data.target_names],
        "metrics": metrics,
        "trained_on": "sklearn breast_cancer",
    }
    save_records_model(out, model, config, features)
    return {**metrics, "seconds": time.perf_counter() - started}


def _diabetes_type(name: str, column: np.ndarray) -> str:
    # only "sex" is a category coded as 1/2; other integer-valued columns are measurements
    if name == "sex" and np.all(np.equal(np.mod(column, 1), 0)):
        return "integer"
    return "number"


@_isolated
def build_records_regressor(out: Path, *, seed: int = 0) -> Metrics:
    """RecordsMLP regressor on scikit-learn's diabetes data, in raw (unscaled) units."""
    started = time.perf_counter()
    _seed_all(seed)
    try:
        data = load_diabetes(scaled=False)
    except TypeError:  # scikit-learn < 1.1 has no `scaled`
        data = load_diabetes()
    x_all, y_all = data.data.astype(np.float64), data.target.astype(np.float64)
    # stratify on target quartiles so both splits cover the whole range
    bins = np.digitize(y_all, np.quantile(y_all, [0.25, 0.5, 0.75]))
    train, held = split_indices(bins, seed)
    names = [str(n) for n in data.feature_names]
    features = [
        feature_spec(n, x_all[train, i], _diabetes_type(n, x_all[train, i]))
        for i, n in enumerate(names)
    ]
    target_mean, target_std = float(y_all[train].mean()), float(y_all[train].std())
    hidden, dropout = [64, 32], 0.1
    model = RecordsMLP(len(features), hidden, 1, dropout)
    x_train = torch.from_numpy(normalise(x_all[train], features))
    y_train = torch.from_numpy(((y_all[train] - target_mean) / target_std).astype(np.float32))
    _train_mlp(model, x_train, y_train[:, None], nn.MSELoss(), epochs=40, seed=seed)
    with torch.no_grad():
        standardised = model(torch.from_numpy(normalise(x_all[held], features)))[:, 0].numpy()
    predicted = standardised * target_std + target_mean
    metrics = {
        "heldout_r2": float(r2_score(y_all[held], predicted)),
        "heldout_mae": float(mean_absolute_error(y_all[held], predicted)),
        "n_train": int(len(train)),
        "n_heldout": int(len(held)),
    }
    config = {
        "task": "regress-records",
        "hidden_sizes": hidden,
        "dropout": dropout,
        "target": "disease_progression",
        "target_mean": target_mean,
        "target_std": target_std,
        "metrics": metrics,
        "trained_on": "sklearn diabetes",
    }
    save_records_model(out, model, config, features)
    return {**metrics, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------- image classifier


def digit_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 digits array (0..16) as the 32x32 grayscale PNG a user would upload."""
    small = Image.fromarray((pixels * 255.0 / 16.0).astype(np.uint8), "L")
    return small.resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.NEAREST)


def _digits_split(seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    digits = load_digits()
    train, held = split_indices(digits.target, seed)
    return digits, train, held


def digits_holdout(seed: int = 0) -> list[tuple[Image.Image, int]]:
    """The held-out digits (32x32 "L" images, label) of the split `build_image_classifier` uses."""
    digits, _, held = _digits_split(seed)
    return [(digit_image(digits.images[i]), int(digits.target[i])) for i in held]


def make_image_processor() -> Any:
    """A ViT-style processor that needs no torchvision (the PIL backend in transformers 5)."""
    import transformers

    # transformers 4.x has no *Pil class: there the plain (slow) processor is the PIL one
    processor_class = getattr(transformers, "ViTImageProcessorPil", None)
    if processor_class is None:
        processor_class = transformers.ViTImageProcessor
    return processor_class(
        do_resize=True,
        size={"height": DIGIT_SIZE, "width": DIGIT_SIZE},
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def _pixel_values(processor: Any, images: list[Image.Image]) -> torch.Tensor:
    rgb = [image.convert("RGB") for image in images]
    return processor(images=rgb, return_tensors="pt")["pixel_values"]


def _tiny_resnet() -> Any:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[32, 64],
        depths=[1, 1],
        layer_type="basic",
        hidden_act="relu",
        **_labels_config(str(d) for d in range(10)),
    )
    return ResNetForImageClassification(config)


@_isolated
def build_image_classifier(out: Path, *, seed: int = 0) -> Metrics:
    """A tiny transformers ResNet trained on scikit-learn's 8x8 digits, upscaled to 32x32."""
    started = time.perf_counter()
    _seed_all(seed)
    digits, train, held = _digits_split(seed)
    processor = make_image_processor()
    images = [digit_image(p) for p in digits.images]
    pixels = _pixel_values(processor, images)
    targets = torch.from_numpy(digits.target.astype(np.int64))
    model = _tiny_resnet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    train_idx = torch.from_numpy(train)
    model.train()
    for _ in range(8):
        for batch in _batches(len(train_idx), 64, gen):
            rows = train_idx[batch]
            optimiser.zero_grad()
            model(pixel_values=pixels[rows], labels=targets[rows]).loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        predicted = model(pixel_values=pixels[torch.from_numpy(held)]).logits.argmax(-1)
    metrics = {
        "heldout_accuracy": _accuracy(predicted.numpy(), digits.target[held]),
        "n_train": int(len(train)),
        "n_heldout": int(len(held)),
    }
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    _patch_config_json(out, sluice_metrics=metrics, trained_on="sklearn digits (8x8 -> 32x32)")
    return {**metrics, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------- audio models


def _tiny_wav2vec2_kwargs() -> dict[str, Any]:
    """A small conv stack (total stride 80: 200 frames per second) and a 2-layer encoder."""
    return {
        "conv_dim": (32, 32, 32),
        "conv_kernel": (10, 8, 8),
        "conv_stride": (5, 4, 4),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": False,
        "mask_time_prob": 0.0,
        "mask_feature_prob": 0.0,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.0,
        "layerdrop": 0.0,
    }


def make_wav2vec2_feature_extractor() -> Any:
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        sampling_rate=SAMPLE_RATE,
        feature_size=1,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )


@_isolated
def build_audio_classifier(out: Path, *, seed: int = 0) -> Metrics:
    """A tiny Wav2Vec2 sequence classifier trained on synthetic 1 s sounds (SOUND_LABELS)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    started = time.perf_counter()
    _seed_all(seed)
    clips, label_list = synthesize_dataset(100, 1.0, SAMPLE_RATE, seed)
    labels = np.array(label_list, dtype=np.int64)
    train, held = split_indices(labels, seed)
    extractor = make_wav2vec2_feature_extractor()
    encoded = extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
    values, mask = encoded["input_values"], encoded["attention_mask"]
    config = Wav2Vec2Config(
        **_tiny_wav2vec2_kwargs(),
        use_weighted_layer_sum=False,
        classifier_proj_size=32,
        **_labels_config(SOUND_LABELS),
    )
    model = Wav2Vec2ForSequenceClassification(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    targets, train_idx = torch.from_numpy(labels), torch.from_numpy(train)
    model.train()
    for _ in range(6):
        for batch in _batches(len(train_idx), 16, gen):
            rows = train_idx[batch]
            optimiser.zero_grad()
            model(
                input_values=values[rows], attention_mask=mask[rows], labels=targets[rows]
            ).loss.backward()
            optimiser.step()
    model.eval()
    held_idx = torch.from_numpy(held)
    with torch.no_grad():
        logits = model(input_values=values[held_idx], attention_mask=mask[held_idx]).logits
    metrics = {
        "heldout_accuracy": _accuracy(logits.argmax(-1).numpy(), labels[held]),
        "n_train": int(len(train)),
        "n_heldout": int(len(held)),
    }
    model.save_pretrained(out, safe_serialization=True)
    extractor.save_pretrained(out)
    _patch_config_json(out, sluice_metrics=metrics, trained_on="synthetic sounds (synth_audio)")
    return {**metrics, "seconds": time.perf_counter() - started}


def _ctc_vocab() -> dict[str, int]:
    symbols = ["<pad>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz", "'"]
    return {s: i for i, s in enumerate(symbols)}


def _build_ctc(out: Path, seed: int) -> Metrics:
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC, Wav2Vec2Processor

    started = time.perf_counter()
    _seed_all(seed)
    vocab = _ctc_vocab()
    with tempfile.TemporaryDirectory() as scratch:
        vocab_file = Path(scratch) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab))
        # no <s>/</s>: CTC never emits them, and extra tokens would outgrow the output layer
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            bos_token=None,
            eos_token=None,
            unk_token="<unk>",
            pad_token="<pad>",
            word_delimiter_token="|",
        )
    processor = Wav2Vec2Processor(
        feature_extractor=make_wav2vec2_feature_extractor(), tokenizer=tokenizer
    )
    config = Wav2Vec2Config(
        **_tiny_wav2vec2_kwargs(),
        vocab_size=len(tokenizer),
        pad_token_id=vocab["<pad>"],
        ctc_loss_reduction="mean",
    )
    model = Wav2Vec2ForCTC(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    _patch_config_json(out, sluice_note=RANDOM_INIT_NOTE)
    return {"vocab_size": len(tokenizer), "seconds": time.perf_counter() - started}


# Whisper's special tokens in the order generate() relies on (ids follow the byte vocab)
WHISPER_SPECIALS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies use."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _whisper_tokenizer() -> Any:
    """Byte-level BPE with the 256 single-byte tokens, no merges, and Whisper's specials."""
    from transformers import WhisperTokenizer

    vocab = {char: i for i, char in enumerate(_bytes_to_unicode().values())}
    for token in WHISPER_SPECIALS:
        vocab[token] = len(vocab)
    tokenizer = WhisperTokenizer(
        vocab=vocab,
        merges=[],
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(WHISPER_SPECIALS[1:])})
    return tokenizer


def _build_whisper(out: Path, seed: int) -> Metrics:
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    started = time.perf_counter()
    _seed_all(seed)
    tokenizer = _whisper_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in WHISPER_SPECIALS}
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer
    )
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    # no suppress lists: Whisper's defaults name ids of the real 51k vocabulary
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        max_length=64,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=False,
        forced_decoder_ids=None,
    )
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    _patch_config_json(out, sluice_note=RANDOM_INIT_NOTE)
    return {"vocab_size": len(tokenizer), "seconds": time.perf_counter() - started}


@_isolated
def build_speech_recognizer(out: Path, kind: str = "ctc", *, seed: int = 0) -> Metrics:
    """A randomly initialised speech recogniser (`kind` ctc or whisper) for plumbing tests."""
    if kind == "ctc":
        return _build_ctc(out, seed)
    if kind == "whisper":
        return _build_whisper(out, seed)
    raise ValueError(f"unknown speech recogniser kind {kind!r}")


# ---------------------------------------------------------------- registry and cache

BUILDERS: dict[str, Builder] = {
    "digits-classifier": build_image_classifier,
    "sounds-classifier": build_audio_classifier,
    "breast-cancer-classifier": build_records_classifier,
    "diabetes-regressor": build_records_regressor,
    "tiny-ctc": functools.partial(build_speech_recognizer, kind="ctc"),
    "tiny-whisper": functools.partial(build_speech_recognizer, kind="whisper"),
}

METRICS_FILE = "metrics.json"


def recipe_version() -> str:
    """A digest of the code that makes the models: a cached model made by an older recipe
    is rebuilt rather than silently reused."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("demo_models.py", "records_mlp.py", "synth_audio.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


def is_built(model_dir: Path) -> bool:
    """metrics.json is written last, so its presence means a complete model directory; its
    recipe must be today's."""
    try:
        metrics = json.loads((model_dir / METRICS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(metrics.get("recipe") == recipe_version())


def _build_one(root: Path, name: str) -> Metrics:
    target = root / name
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        metrics = {**BUILDERS[name](scratch), "recipe": recipe_version()}
        (scratch / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        if target.exists():  # forced rebuild or a leftover without metrics.json
            shutil.rmtree(target)
        scratch.rename(target)  # atomic on one filesystem: never a half-written model
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return metrics


def build_all(
    root: Path,
    names: Iterable[str] | None = None,
    force: bool = False,
    on_built: Callable[[str, Metrics], None] | None = None,
) -> dict[str, Metrics]:
    """Build the named models (default: all) into `root/<name>/`, skipping complete ones.

    Returns every requested model's metrics (read back from metrics.json when cached);
    `on_built(name, metrics)` is called only for models built by this call.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    wanted = list(BUILDERS) if names is None else list(names)
    unknown = [n for n in wanted if n not in BUILDERS]
    if unknown:
        raise KeyError(f"unknown demo models {unknown}; known: {sorted(BUILDERS)}")
    results: dict[str, Metrics] = {}
    for name in wanted:
        if is_built(root / name) and not force:
            results[name] = json.loads((root / name / METRICS_FILE).read_text())
            continue
        results[name] = _build_one(root, name)
        if on_built is not None:
            on_built(name, results[name])
    return results
