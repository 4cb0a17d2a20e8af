"""The two randomly initialised speech recognisers of the demo (a Wav2Vec2 CTC model and a tiny
Whisper): they test the transcribe plumbing, not recognition, so they are not trained."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ops.demo_models import Metrics, isolated, seed_all
from workers.training.scratch_models import (
    make_wav2vec2_feature_extractor,
    patch_config_json,
    tiny_wav2vec2_kwargs,
)

RANDOM_INIT_NOTE = "randomly initialised: for testing the transcribe plumbing only"


def _ctc_vocab() -> dict[str, int]:
    symbols = ["<pad>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz", "'"]
    return {s: i for i, s in enumerate(symbols)}


def _build_ctc(out: Path, seed: int) -> Metrics:
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC, Wav2Vec2Processor

    started = time.perf_counter()
    seed_all(seed)
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


@isolated
def build_speech_recognizer(out: Path, kind: str = "ctc", *, seed: int = 0) -> Metrics:
    """A randomly initialised speech recogniser (`kind` ctc or whisper) for plumbing tests."""
    if kind == "ctc":
        return _build_ctc(out, seed)
    if kind == "whisper":
        return _build_whisper(out, seed)
    raise ValueError(f"unknown speech recogniser kind {kind!r}")
