"""Entity annotations as `extract-entities` trains on them, read the same way at submit
(producers/training_checks.py, which names the rows to fix) and in the training worker
(workers/training/recipes/entities.py).

A training row is one of two shapes, the same for every row of a data set:

- spans: the text column holds a string and the label column a list of
  {"start", "end", "label"} (character offsets, end exclusive; an optional "text" must equal
  text[start:end], which catches byte offsets and off-by-one ends). An empty list: a text
  with no entity. Whitespace at a span's edges is trimmed (no token holds it, so no model
  could predict it). Spans may not overlap.
- BIO: the text column holds a list of tokens and the label column as many tags, "O",
  "B-TYPE" or "I-TYPE". The tokens are joined with spaces (none between two CJK characters)
  into the text the model reads. An I-TYPE that does not continue an entity of TYPE starts
  one, as seqeval's default mode and the token-classification pipeline's `simple`
  aggregation both read it.

A CSV cell holds either as JSON ('[{"start": 0, ...}]', '["Ada", "Lovelace"]').
"""

import json
import unicodedata
from collections.abc import Sequence
from typing import Any

Span = tuple[int, int, str]  # start, end (characters, end exclusive), entity type
SPANS = "spans"
BIO = "bio"
SHAPES = {SPANS: "a text and a list of spans", BIO: "a list of tokens and a list of BIO tags"}
OUTSIDE = "O"


def cell(value: Any) -> Any:
    """A list stored as JSON text (CSV) as the list; anything else as it is."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if hasattr(value, "tolist") and not isinstance(value, str):  # a numpy array (Parquet)
        return value.tolist()
    return value


def shape_of(text: Any, labels: Any) -> str | None:
    """SPANS, BIO, or None for a row that is neither. Tags (strings) or a list of tokens
    make a BIO row; a text that merely looks like JSON ("[1, 2]") stays a text beside spans."""
    labels = cell(labels)
    if not isinstance(labels, list):
        return None
    if not isinstance(text, str) and isinstance(cell(text), list):  # tokens (JSONL, Parquet)
        return BIO
    if labels and all(isinstance(t, str) for t in labels):  # tags, the tokens maybe a CSV cell
        return BIO
    return SPANS if isinstance(text, str) else None


def tag_parts(tag: Any) -> tuple[str, str]:
    """("B" | "I", TYPE), or ("O", "") for outside; ValueError for anything else."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    if isinstance(tag, str) and tag[:2] in ("B-", "I-") and tag[2:].strip() == tag[2:] != "":
        return tag[0], tag[2:]
    raise ValueError(f"tag {tag!r} is not O, B-TYPE or I-TYPE")


def group_tags(tags: Sequence[str], offsets: Sequence[tuple[int, int]]) -> list[Span]:
    """Entity spans from tags of consecutive pieces with their character offsets, grouped as
    the pipeline's `simple` aggregation groups them: a B- tag, or a type other than the
    previous piece's, starts an entity; it ends at its last piece's end."""
    spans: list[Span] = []
    kind_now = None  # the type of the entity the previous piece is in, if any
    for tag, (start, end) in zip(tags, offsets, strict=True):
        bio, kind = tag_parts(tag)
        if bio == OUTSIDE:
            kind_now = None
        elif bio == "I" and kind == kind_now:
            spans[-1] = (spans[-1][0], int(end), kind)
        else:
            spans.append((int(start), int(end), kind))
            kind_now = kind
    return spans


def is_cjk(char: str) -> bool:
    return "CJK" in unicodedata.name(char, "") or "\u3000" <= char <= "\u303f"


def join_tokens(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The text of the tokens and each token's (start, end) in it."""
    text, offsets = "", []
    for token in tokens:
        if text and not (is_cjk(text[-1]) and is_cjk(token[0])):
            text += " "
        offsets.append((len(text), len(text) + len(token)))
        text += token
    return text, offsets


def from_bio(tokens: Any, tags: Any) -> tuple[str, list[Span]]:
    """The text and spans of a BIO row; ValueError saying what is wrong with it."""
    tokens, tags = cell(tokens), cell(tags)
    if not isinstance(tokens, list) or not isinstance(tags, list):
        raise ValueError("the tokens and the tags must be lists")
    if not tokens:
        raise ValueError("no tokens")
    bad = [i for i, t in enumerate(tokens) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"token {bad[0]} is {tokens[bad[0]]!r}, not a word")
    if len(tags) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    for i, tag in enumerate(tags):
        try:
            tag_parts(tag)
        except ValueError as exc:
            raise ValueError(f"tag {i}: {exc}") from None
    tokens = [t.strip() for t in tokens]
    text, offsets = join_tokens(tokens)
    return text, group_tags(tags, offsets)


def span_of(text: str, span: Any) -> Span:
    """One {"start", "end", "label"} checked against its text and trimmed of whitespace."""
    if not isinstance(span, dict):
        raise ValueError(f"{span!r} is not an object with start, end and label")
    start, end, label = span.get("start"), span.get("end"), span.get("label")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        raise ValueError(f"{span!r}: start and end must be whole numbers (character offsets)")
    assert isinstance(start, int) and isinstance(end, int)
    if not (0 <= start < end <= len(text)):
        raise ValueError(
            f"{span!r}: needs 0 <= start < end <= {len(text)} (the text's length in characters)"
        )
    if not isinstance(label, str) or not label.strip() or label != label.strip():
        raise ValueError(f"{span!r}: label must be a non-empty name without edge spaces")
    if "text" in span and span["text"] != text[start:end]:
        raise ValueError(
            f"{span!r}: text[{start}:{end}] is {text[start:end]!r}, not {span['text']!r} "
            "(offsets must count characters, end exclusive)"
        )
    piece = text[start:end]
    if not piece.strip():
        raise ValueError(f"{span!r}: covers only whitespace")
    start += len(piece) - len(piece.lstrip())
    end -= len(piece) - len(piece.rstrip())
    return start, end, label


def from_spans(text: Any, spans: Any) -> tuple[str, list[Span]]:
    """The text and its spans, in order; ValueError saying what is wrong with the row."""
    spans = cell(spans)
    if not isinstance(spans, list):
        raise ValueError("the spans must be a list")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("no text")
    found = sorted(span_of(text, s) for s in spans)
    for (s1, e1, k1), (s2, e2, k2) in zip(found, found[1:], strict=False):
        if s2 < e1:
            raise ValueError(f"spans {s1}-{e1} ({k1}) and {s2}-{e2} ({k2}) overlap")
    return text, found


def annotated(text: Any, labels: Any, shape: str) -> tuple[str, list[Span]]:
    """A row of the data set's shape as (text, spans); ValueError for a bad row."""
    return from_bio(text, labels) if shape == BIO else from_spans(text, labels)


def bio_labels(kinds: Sequence[str]) -> list[str]:
    """A tagger's labels for entity types, in the model's id order: O, B-X, I-X, B-Y..."""
    return [OUTSIDE, *(f"{bio}-{kind}" for kind in kinds for bio in ("B", "I"))]


def kinds_of(labels: Sequence[str]) -> list[str]:
    """The entity types of a tagger's labels (id order), or ValueError if they are not BIO."""
    kinds: list[str] = []
    for label in labels:
        bio, kind = tag_parts(label)
        if bio != OUTSIDE and kind not in kinds:
            kinds.append(kind)
    return kinds
