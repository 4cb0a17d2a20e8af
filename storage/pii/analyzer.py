"""find_patterns: pattern PII in a text, by Presidio's AnalyzerEngine built once per process.

Built lazily on the first call (Presidio and spaCy take seconds to import; torch and
transformers are kept out, storage.pii.light_imports), under a lock because the REST API calls
it from several threads. Built from an explicit registry of our recognizers only
(storage.pii.recognizers: no SpacyRecognizer, there is no NER model) on a blank spaCy
pipeline (storage.pii.blank_nlp); nothing is downloaded.

One language, "en", for every text, English, Chinese or mixed: the recognizers read the raw
text, and the blank English tokenizer splits on spaces and punctuation, so a Chinese context
word ("手机") still appears inside the token before a number.

Score threshold 0.4: Presidio scores a checksum-validated match 1.0 and drops a failed one;
the "medium" patterns (SSN 3-2-4 digits, IP addresses) score 0.5-0.6; a number that
python-phonenumbers accepts as valid for its region 0.4; and any weak pattern with a context
word next to it is raised to at least 0.4. What stays below is the unvalidated noise, e.g. a
bare 9-digit run as an SSN (0.05) or "::" as an IPv6 address (0.1)."""

import threading
from collections.abc import Collection
from typing import Any

from storage.pii.light_imports import without_model_stacks
from storage.pii.presidio_logs import quiet_presidio_loggers
from storage.pii.spans import BY_PATTERN, PATTERN_TYPES, Span, resolve_overlaps

LANGUAGE = "en"
SCORE_THRESHOLD = 0.4

_engine: Any = None
_lock = threading.Lock()


def _build() -> Any:
    quiet_presidio_loggers()
    with without_model_stacks():
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

        from storage.pii.blank_nlp import BlankSpacyNlpEngine
        from storage.pii.recognizers import pattern_recognizers

    registry = RecognizerRegistry(recognizers=pattern_recognizers(), supported_languages=[LANGUAGE])
    return AnalyzerEngine(
        registry=registry,
        nlp_engine=BlankSpacyNlpEngine(LANGUAGE),
        supported_languages=[LANGUAGE],
        default_score_threshold=SCORE_THRESHOLD,
    )


def analyzer_engine() -> Any:
    """The process's AnalyzerEngine (a presidio_analyzer.AnalyzerEngine), built on first use."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                _engine = _build()
    return _engine


def find_patterns(text: str, types: Collection[str] | None = None) -> list[Span]:
    """Pattern PII in `text`, sorted by start: any of PATTERN_TYPES, only those in `types` when
    given (names there that are not pattern types, such as "PERSON", are ignored). Overlapping
    matches of different types are settled as in redact (the longer wins, then the higher
    score), so one value comes back once: a CN mobile (0.5) over the same digits as a PHONE
    (0.4), a checksum-valid NHS number (1.0) over the same ten digits read as a phone."""
    wanted = [t for t in PATTERN_TYPES if types is None or t in types]
    if not text or not wanted:
        return []
    results = analyzer_engine().analyze(text=text, language=LANGUAGE, entities=wanted)
    return resolve_overlaps(
        Span(r.entity_type, r.start, r.end, round(float(r.score), 4), BY_PATTERN) for r in results
    )
