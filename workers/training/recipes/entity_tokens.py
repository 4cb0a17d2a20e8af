"""Texts with character spans as a token classifier's arrays, and its predictions back as
spans, the way transformers' token-classification pipeline reads them.

Every word piece inside an entity is labelled, the first B-TYPE and the rest I-TYPE: the
pipeline's default `simple` aggregation tags each piece by its own prediction and joins a
run of B-, I-, I- pieces into one entity, so a piece left unlabelled (-100, as some recipes
do for non-first pieces) would be untrained where the pipeline reads it. A piece that only
partly overlaps a span (the span's edge falls inside it) is labelled with the span: the
model can only answer in whole pieces. Special tokens and padding are -100.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from schemas.entity_spans import Span, group_tags

IGNORE = -100
MAX_TOKENS = 512  # for a model whose positions have no limit


def piece_labels(
    offsets: Sequence[tuple[int, int]], spans: Sequence[Span], label_ids: dict[str, int]
) -> list[int]:
    """Label ids of one encoding's pieces."""
    labels = []
    begun: set[int] = set()  # spans whose first piece is labelled
    for start, end in offsets:
        if start == end:  # a special token
            labels.append(IGNORE)
            continue
        label = "O"
        for i, (s, e, kind) in enumerate(spans):
            if start < e and s < end:
                label = f"{'I' if i in begun else 'B'}-{kind}"
                begun.add(i)
                break
        labels.append(label_ids[label])
    return labels


def positions_limit(config: Any, tokenizer: Any) -> int:
    """The most tokens one text may have: the model's positions, or MAX_TOKENS."""
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    usable = [int(n) for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    return min(usable, default=MAX_TOKENS)


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    spans: Sequence[Sequence[Span]],
    label_ids: dict[str, int],
    limit: int,
) -> dict[str, np.ndarray]:
    """Padded input ids, attention masks (token types where the tokenizer gives them),
    labels and each piece's character offsets (for held-out spans). A text over `limit`
    tokens is refused, naming its row: cut, it would be trained on entities it no longer
    holds."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "the base model's tokenizer is not a fast tokenizer (tokenizer.json): without "
            "character offsets, pieces cannot be matched to spans"
        )
    enc = tokenizer(list(texts), return_offsets_mapping=True, truncation=False)
    too_long = [
        f"row {n} ({len(ids)} tokens)"
        for n, ids in enumerate(enc["input_ids"], 1)
        if len(ids) > limit
    ]
    if too_long:
        raise ValueError(
            f"texts over the model's {limit} tokens: {'; '.join(too_long[:5])}; split them "
            "into sentences or paragraphs"
        )
    width = max(len(ids) for ids in enc["input_ids"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n = len(texts)
    out = {
        "input_ids": np.full((n, width), pad, dtype=np.int64),
        "attention_mask": np.zeros((n, width), dtype=np.int64),
        "labels": np.full((n, width), IGNORE, dtype=np.int64),
        "offsets": np.zeros((n, width, 2), dtype=np.int64),
    }
    if "token_type_ids" in enc:
        out["token_type_ids"] = np.zeros((n, width), dtype=np.int64)
    for i, (ids, offsets) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
        k = len(ids)
        out["input_ids"][i, :k] = ids
        out["attention_mask"][i, :k] = 1
        out["labels"][i, :k] = piece_labels(offsets, spans[i], label_ids)
        out["offsets"][i, :k] = offsets
        if "token_type_ids" in out:
            out["token_type_ids"][i, :k] = enc["token_type_ids"][i]
    return out


def predicted_spans(
    predicted: np.ndarray, offsets: np.ndarray, mask: np.ndarray, id2label: dict[int, str]
) -> list[list[Span]]:
    """Each row's entities from its pieces' predicted label ids, grouped as the pipeline's
    `simple` aggregation groups them (special tokens and padding skipped)."""
    out = []
    for ids, offs, keep in zip(predicted, offsets, mask, strict=True):
        pieces = [
            (id2label[int(i)], (int(s), int(e)))
            for i, (s, e), k in zip(ids, offs, keep, strict=True)
            if k and s != e
        ]
        out.append(group_tags([t for t, _ in pieces], [o for _, o in pieces]))
    return out
