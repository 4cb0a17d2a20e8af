"""The demo's speech recognisers: two randomly initialised ones (a Wav2Vec2 CTC model and a tiny
Whisper) that test the transcribe plumbing, and a small CTC model TRAINED on tone digits
(workers/training/synth_tones.py) whose transcripts can be checked exactly, at any length."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ops.demo_models import Metrics, isolated, seed_all
from workers.training.scratch_models import (
    SAMPLE_RATE,
    make_wav2vec2_feature_extractor,
    patch_config_json,
    tiny_wav2vec2_kwargs,
)
from workers.training.synth_tones import (
    TONE_DIGITS,
    random_digits,
    tone_digits,
    tone_digits_aligned,
)

RANDOM_INIT_NOTE = "randomly initialised: for testing the transcribe plumbing only"


def _ctc_vocab(symbols: str = "abcdefghijklmnopqrstuvwxyz'") -> dict[str, int]:
    return {s: i for i, s in enumerate(["<pad>", "<unk>", "|", *symbols])}


def _ctc_processor(vocab: dict[str, int]) -> Any:
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2Processor

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
    return Wav2Vec2Processor(
        feature_extractor=make_wav2vec2_feature_extractor(), tokenizer=tokenizer
    )


def _build_ctc(out: Path, seed: int) -> Metrics:
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    started = time.perf_counter()
    seed_all(seed)
    vocab = _ctc_vocab()
    processor = _ctc_processor(vocab)
    tokenizer = processor.tokenizer
    config = Wav2Vec2Config(
        **tiny_wav2vec2_kwargs(),
        vocab_size=len(tokenizer),
        pad_token_id=vocab["<pad>"],
        ctc_loss_reduction="mean",
    )
    model = Wav2Vec2ForCTC(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    patch_config_json(out, sluice_note=RANDOM_INIT_NOTE)
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
    seed_all(seed)
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
    patch_config_json(out, sluice_note=RANDOM_INIT_NOTE)
    return {"vocab_size": len(tokenizer), "seconds": time.perf_counter() - started}


TONE_STEPS = 200  # of 16 clips: ~45 s on 2 CPU cores, then every held-out clip is exact
FRAME_HOP = 80  # samples per frame of tiny_wav2vec2_kwargs' conv stack


def _frame_targets(model: Any, made: list[tuple[Any, list[tuple[int, int, str]]]], frames: int,
                   vocab: dict[str, int]) -> Any:  # fmt: skip
    """Each frame's label: the digit whose tone holds its centre (a frame's width in from
    either end of the tone, so edges are left to the blank), else the blank; padding ignored."""
    import numpy as np
    import torch

    target = torch.full((len(made), frames), -100)
    for row, (clip, spans) in enumerate(made):
        n = int(model._get_feat_extract_output_lengths(torch.tensor(len(clip))))
        target[row, :n] = vocab["<pad>"]
        centres = np.arange(n) * FRAME_HOP + FRAME_HOP // 2
        for start, end, digit in spans:
            inside = (centres >= start + FRAME_HOP) & (centres < end - FRAME_HOP)
            target[row, torch.from_numpy(np.nonzero(inside)[0])] = vocab[digit]
    return target


def _build_tone_ctc(out: Path, seed: int) -> Metrics:
    """Trained frame by frame on where each synthesised tone is (the synthesis knows): CTC's
    own loss sat on all-blank for 400 steps, aligned frames learn in 150. Greedy CTC
    decoding of its frames is then exact; checked on held-out clips of 3 to 10 digits."""
    import numpy as np
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    started = time.perf_counter()
    seed_all(seed)
    rng = np.random.default_rng(seed)
    vocab = _ctc_vocab(TONE_DIGITS)
    processor = _ctc_processor(vocab)
    extractor = processor.feature_extractor
    config = Wav2Vec2Config(
        **tiny_wav2vec2_kwargs(),
        vocab_size=len(processor.tokenizer),
        pad_token_id=vocab["<pad>"],
        ctc_loss_reduction="mean",
    )
    model = Wav2Vec2ForCTC(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(TONE_STEPS):
        made = [tone_digits_aligned(random_digits(rng, 3, 8), SAMPLE_RATE, rng) for _ in range(16)]
        enc = extractor([c for c, _ in made], sampling_rate=SAMPLE_RATE, return_tensors="pt",
                        padding=True)  # fmt: skip
        logits = model(
            input_values=enc["input_values"], attention_mask=enc["attention_mask"]
        ).logits
        target = _frame_targets(model, made, logits.shape[1], vocab)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.eval()
    held = [random_digits(rng, 3, 10) for _ in range(50)]
    exact = 0
    with torch.no_grad():
        for digits in held:
            enc = extractor([tone_digits(digits, SAMPLE_RATE, rng)], sampling_rate=SAMPLE_RATE,
                            return_tensors="pt")  # fmt: skip
            ids = model(**enc).logits.argmax(-1)
            exact += processor.batch_decode(ids)[0] == digits
    metrics = {"heldout_exact_match": exact / len(held), "n_heldout": len(held)}
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    patch_config_json(out, sluice_metrics=metrics, trained_on="tone digits (synth_tones)")
    return {**metrics, "seconds": time.perf_counter() - started}


@isolated
def build_tone_digits_recognizer(out: Path, *, seed: int = 0) -> Metrics:
    """A small CTC model trained on tone digits: transcripts checkable exactly."""
    return _build_tone_ctc(out, seed)


@isolated
def build_speech_recognizer(out: Path, kind: str = "ctc", *, seed: int = 0) -> Metrics:
    """A randomly initialised speech recogniser (`kind` ctc or whisper) for plumbing tests."""
    if kind == "ctc":
        return _build_ctc(out, seed)
    if kind == "whisper":
        return _build_whisper(out, seed)
    raise ValueError(f"unknown speech recogniser kind {kind!r}")
