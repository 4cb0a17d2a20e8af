"""What the two text demo models trained from scratch share (`tiny-entities`,
workers/training/scratch_entities.py; `tiny-qa`, workers/training/scratch_qa.py): the
held-out split of made-up and listed names, the WordPiece tokenizer trained with `tokenizers`,
the tiny RoFormer and the training loop."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# CJK ideographs, CJK and full-width punctuation: decoded without a space before them
CJK = "[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
# padding of the training batches' lists, by key (others are padded with 0)
PAD_VALUES = {"labels": -100}


def words(text: str, sep: str | None = None) -> tuple[str, ...]:
    """A word list written as one string ("Ada Alan Grace")."""
    return tuple(text.split(sep))


def in_heldout(fill: str) -> bool:
    """One fixed fifth of all names, places and organisations is kept for held-out data."""
    return zlib.crc32(fill.encode()) % 5 == 0


def make_wordpiece_tokenizer(
    corpus: Iterable[str], *, vocab_size: int, alphabet: Sequence[str], max_length: int
) -> Any:
    """A cased BERT-style WordPiece fast tokenizer trained on `corpus`: BERT's normaliser
    (CJK characters one per token, accents kept), BERT's pre-tokeniser (whitespace and
    punctuation), [CLS] A [SEP] (B [SEP]) with token types, offsets from the fast backend.
    Every character of `alphabet` has a token (never [UNK]), alone and as a "##" piece."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    trainee = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trainee.normalizer, trainee.pre_tokenizer = normalizer, pre_tokenizers.BertPreTokenizer()
    # tokenizers <= 0.23 numbers the "##x" pieces in hash-map order, which breaks ties between
    # merges differently from run to run (huggingface/tokenizers#1794); pieces it already
    # knows keep their (sorted) numbers, so the vocabulary is the same every time
    pieces = [f"##{c}" for c in alphabet if not re.fullmatch(CJK, c)]
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS, *pieces],
        initial_alphabet=list(alphabet),
        min_frequency=2,
        limit_alphabet=len(alphabet) + 50,
    )
    trainee.train_from_iterator(corpus, trainer)
    # the same vocabulary with only the real special tokens special
    model = models.WordPiece(
        vocab=trainee.get_vocab(), unk_token="[UNK]", max_input_chars_per_word=100
    )
    backend = Tokenizer(model)
    backend.normalizer, backend.pre_tokenizer = normalizer, pre_tokenizers.BertPreTokenizer()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    # WordPiece puts a space before every whole word; none before a CJK one ("张伟")
    backend.decoder = decoders.Sequence(
        [decoders.WordPiece(prefix="##", cleanup=True), decoders.Replace(Regex(f"^ (?={CJK})"), "")]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        padding_side="right",
        model_max_length=max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def save_tokenizer(tokenizer: Any, out: Path) -> None:
    """save_pretrained, named with the class every transformers version loads tokenizer.json
    with as it is (a `Bert*` class would rebuild it, lower-casing)."""
    tokenizer.save_pretrained(out)
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def tiny_roformer(head: str, tokenizer: Any, max_positions: int, **config: Any) -> Any:
    """A 2-layer RoFormer (BERT with rotary positions) with the transformers head `head`
    ("RoFormerForTokenClassification", ...). Rotary positions make "the token before me" the
    same at every position: a model this small learns a word's pieces and a span's edges
    several times faster than with BERT's absolute positions."""
    import transformers

    return getattr(transformers, head)(
        transformers.RoFormerConfig(
            vocab_size=len(tokenizer),
            embedding_size=64,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=max_positions,
            type_vocab_size=2,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            initializer_range=0.1,  # 0.02 (the default) trains a model this small slower
            pad_token_id=tokenizer.pad_token_id,
            **config,
        )
    )


def pad_batch(rows: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Examples (lists of ids, or single ints) as one right-padded batch with its mask."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    batch = {
        "attention_mask": torch.tensor(
            [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
        )
    }
    for key, first in rows[0].items():
        if not isinstance(first, list):
            batch[key] = torch.tensor([r[key] for r in rows])
            continue
        value = pad_id if key == "input_ids" else PAD_VALUES.get(key, 0)
        batch[key] = torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows])
    return batch


def train_tiny(
    model: Any,
    examples: Sequence[dict[str, Any]],
    pad_id: int,
    *,
    seed: int,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
) -> list[float]:
    """AdamW, warm-up then linear decay, on batches drawn at random from `examples`; the loss
    of each step. Deterministic for a seed on one thread."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: (s + 1) / warmup if s < warmup else max(0.02, (steps - s) / (steps - warmup)),
    )
    losses = []
    model.train()
    for _ in range(steps):
        picks = torch.randint(len(examples), (batch_size,), generator=gen).tolist()
        loss = model(**pad_batch([examples[i] for i in picks], pad_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
