"""redact: one redaction pass over a text, with findings whose offsets point into the result.

The replacement itself is Presidio's AnonymizerEngine ("replace" for mask, "custom" for hash).
Its conflict handling is not used: the spans reach it already settled (spans.resolve_overlaps,
whose rule also covers model spans), with whitespace merging off (Presidio would otherwise fuse
"a@x.com b@y.com" into one <EMAIL> and the counts would be wrong). It reports where each
replacement landed in the new text; the findings of an earlier pass are shifted here, by the
change in length of the replacements before them. Presidio is imported only when a pass
replaces something (it pulls in spaCy, torch and transformers: seconds)."""

import hashlib
import hmac
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from storage.pii.light_imports import without_model_stacks
from storage.pii.presidio_logs import quiet_presidio_loggers
from storage.pii.spans import Span, resolve_overlaps

MODES = ("detect", "mask", "hash")

_engine: Any = None
_lock = threading.Lock()


def token(secret: bytes, value: str) -> str:
    """Keyed token of a value: the first 16 hex characters of HMAC-SHA256(secret, value). The
    same value gives the same token under one secret, and an unrelated one under another."""
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:16]


def type_counts(findings: Sequence[dict]) -> dict[str, int]:
    """How many findings of each type, e.g. {"EMAIL": 2, "PERSON": 1}."""
    return dict(Counter(f["type"] for f in findings))


def _anonymizer() -> Any:
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                quiet_presidio_loggers()
                with without_model_stacks():
                    from presidio_anonymizer import AnonymizerEngine

                _engine = AnonymizerEngine()
    return _engine


def outside(span: Span, findings: Sequence[dict], text: str) -> list[Span]:
    """The parts of `span` outside every finding's span, those holding more than spaces."""
    pieces = [(span.start, span.end)]
    for f in findings:
        pieces = [
            part
            for start, end in pieces
            for part in ((start, min(end, f["start"])), (max(start, f["end"]), end))
            if part[0] < part[1]
        ] if span.overlaps(f["start"], f["end"]) else pieces  # fmt: skip
    kept = []
    for start, end in pieces:
        piece = text[start:end]
        if piece.strip(" \t\n,.;:()<>"):  # the spaces at its ends are not the value's
            start += len(piece) - len(piece.lstrip())
            end -= len(piece) - len(piece.rstrip())
            kept.append(replace(span, start=start, end=end))
    return kept


def _finding(type_: str, start: int, end: int, by: str) -> dict:
    return {"type": type_, "start": start, "end": end, "by": by}


def _replace(text: str, spans: list[Span], mode: str, secret: bytes | None) -> tuple[str, list]:
    """Presidio's anonymizer over settled spans: the new text and where each replacement went."""
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    def hashed(type_: str) -> OperatorConfig:
        assert secret is not None
        return OperatorConfig("custom", {"lambda": lambda v: f"<{type_}:{token(secret, v)}>"})

    operators = {
        t: hashed(t) if mode == "hash" else OperatorConfig("replace", {"new_value": f"<{t}>"})
        for t in {s.type for s in spans}
    }
    results = [RecognizerResult(s.type, s.start, s.end, min(max(s.score, 0.0), 1.0)) for s in spans]
    out = _anonymizer().anonymize(
        text, results, operators=operators, merge_entities_with_spaces=False
    )
    items = sorted(out.items, key=lambda item: item.start)
    if len(items) != len(spans):  # Presidio merged or dropped one: the offsets would be wrong
        raise RuntimeError(f"the anonymizer applied {len(items)} of {len(spans)} spans")
    return out.text, items


def redact(
    text: str,
    spans: Sequence[Span],
    mode: str,
    secret: bytes | None = None,
    prior: Sequence[dict] | None = None,
) -> tuple[str, list[dict]]:
    """One redaction pass. mode "detect" leaves the text as it is, "mask" writes "<TYPE>" for
    each value, "hash" writes "<TYPE:token>" (see token; `secret` required).

    Overlapping spans are settled first (the longer wins; at equal length the higher score, then
    pattern before model). A span overlapping a finding in `prior` (an earlier pass over this
    same text: its offsets point into `text`) is trimmed to what lies outside it, so a
    replacement is never redacted again and the rest of the value is ("Grace <EMAIL>" as one
    name still loses "Grace"). Returns the new text and the findings, sorted by start: the
    prior ones shifted into the new text (their other keys kept), and one per applied span,
    {"type", "start", "end", "by"}, the offsets of its replacement in the new text (or of the
    value, in detect mode). Never the value itself."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if mode == "hash" and not secret:
        raise ValueError("hash mode needs a secret")
    for s in spans:
        if not 0 <= s.start < s.end <= len(text):
            raise ValueError(f"span {s.type} [{s.start}, {s.end}) is not inside the text")
    earlier = [dict(f) for f in prior or ()]  # the caller's keys kept (a "field", say)
    fresh = [piece for s in spans for piece in outside(s, earlier, text)]
    applied = resolve_overlaps(fresh)
    if mode == "detect" or not applied:
        findings = earlier + [_finding(s.type, s.start, s.end, s.by) for s in applied]
        return text, sorted(findings, key=lambda f: f["start"])

    new_text, items = _replace(text, applied, mode, secret)
    findings = [
        _finding(s.type, item.start, item.end, s.by) for s, item in zip(applied, items, strict=True)
    ]
    for f in earlier:
        shift = sum(
            (item.end - item.start) - (s.end - s.start)
            for s, item in zip(applied, items, strict=True)
            if s.end <= f["start"]
        )
        findings.append({**f, "start": f["start"] + shift, "end": f["end"] + shift})
    return new_text, sorted(findings, key=lambda f: f["start"])
