"""What the PII engine finds: the type names, the Span, and how overlapping spans are settled.

Pure Python: importing it (and so `storage.pii`) must not pull in Presidio or spaCy, whose import
takes seconds; the producer processes that only check a job's settings stay fast."""

from collections.abc import Iterable
from dataclasses import dataclass, replace

# Types found by patterns (Presidio's recognizers and two of ours), in user-facing names.
PATTERN_TYPES: tuple[str, ...] = (
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "IP_ADDRESS",
    "US_SSN",
    "UK_NHS",
    "CN_MOBILE",
    "CN_RESIDENT_ID",
)
# The subset whose values carry a check digit that is verified before a match counts: Luhn,
# ISO 13616 mod 97, NHS mod 11, ISO 7064 MOD 11-2 (the resident ID also needs a real birth date).
CHECKSUM_TYPES: tuple[str, ...] = ("CREDIT_CARD", "IBAN", "UK_NHS", "CN_RESIDENT_ID")

BY_PATTERN = "pattern"
BY_MODEL = "model"


@dataclass(frozen=True)
class Span:
    """One value in a text: `text[start:end]` (end exclusive) is of `type`."""

    type: str
    start: int
    end: int
    score: float = 1.0
    by: str = BY_PATTERN

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans, sorted by start: of spans that overlap (or contain one another) the
    longer wins; at equal length the higher score, then pattern before model, then the earlier.
    Greedy by that rank, so a long model span (a name) swallows a pattern inside it rather than
    being cut in two."""
    ranked = sorted(
        spans, key=lambda s: (-(s.end - s.start), -s.score, s.by != BY_PATTERN, s.start)
    )
    kept: list[Span] = []
    for span in ranked:
        touched = [k for k in kept if k.overlaps(span.start, span.end)]
        if not touched:
            kept.append(span)
            continue
        # a partial overlap ("Grace Hopper13812345678"): the winner grows to cover both, so
        # no fragment of the loser is left in clear
        for k in touched:
            if span.start < k.start or span.end > k.end:
                kept.remove(k)
                kept.append(replace(k, start=min(k.start, span.start), end=max(k.end, span.end)))
    return merged(sorted(kept, key=lambda s: s.start))


def merged(spans: list[Span]) -> list[Span]:
    """Sorted spans with any that a union made overlap joined (the first's type kept)."""
    out: list[Span] = []
    for span in spans:
        if out and out[-1].overlaps(span.start, span.end):
            out[-1] = replace(out[-1], end=max(out[-1].end, span.end))
        else:
            out.append(span)
    return out
