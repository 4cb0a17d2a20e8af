"""PII redaction at the text level: pattern PII found by Presidio (with the checksums of its
recognizers), model spans given by callers, and one redaction pass that masks or hashes them.

`import storage.pii` stays light: Presidio and spaCy load on the first find_patterns call (and
the anonymizer on the first redact that replaces something)."""

from storage.pii.analyzer import find_patterns
from storage.pii.redaction import redact, token, type_counts
from storage.pii.spans import CHECKSUM_TYPES, PATTERN_TYPES, Span

__all__ = [
    "CHECKSUM_TYPES",
    "PATTERN_TYPES",
    "Span",
    "find_patterns",
    "redact",
    "token",
    "type_counts",
]
