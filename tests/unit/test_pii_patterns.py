"""The text-level PII engine (storage.pii) as a user sees it: each pattern type is found in
English and in Chinese sentences (the value touching Chinese characters on both sides), a value
with a wrong check digit or an impossible birth date is not, and a redaction pass leaves no
planted value behind, with findings whose offsets point at the replacements.

Offline: the analyzer runs on a blank spaCy pipeline, the e-mail TLD check on tldextract's
bundled snapshot. The engine is built once for the file: most of its time (importing
Presidio pulls in spaCy, torch and transformers)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from storage.pii import (
    CHECKSUM_TYPES,
    PATTERN_TYPES,
    Span,
    find_patterns,
    redact,
    token,
    type_counts,
)
from storage.pii.analyzer import analyzer_engine

ROOT = Path(__file__).resolve().parents[2]

# One valid value per type, an English sentence and a Chinese one with no space around it.
VALID = {
    "EMAIL": ("john.smith@example.com", "Please write to {} today.", "请发邮件到{}谢谢"),
    "PHONE": ("+44 20 7946 0958", "Call me on {} after five.", "请致电{}谢谢"),
    "CREDIT_CARD": ("4111 1111 1111 1111", "My card is {} thanks.", "信用卡号{}已过期"),
    "IBAN": ("DE89 3704 0044 0532 0130 00", "Refund to IBAN {} please.", "退款账户{}谢谢"),
    "IP_ADDRESS": ("192.168.10.24", "The login came from {} last night.", "登录地址{}异常"),
    "US_SSN": ("536-22-8736", "My SSN is {} for the form.", "社会安全号{}请核对"),
    "UK_NHS": ("943 476 5919", "Patient NHS number {} seen today.", "患者NHS号{}已登记"),
    "CN_MOBILE": ("13812345678", "My mobile is {} in Shanghai.", "手机{}。"),
    "CN_RESIDENT_ID": ("11010519491231002X", "ID card {} on file.", "身份证{}，请核对"),
}


def found(text: str, types: list[str] | None = None) -> list[tuple[str, str]]:
    return [(s.type, text[s.start : s.end]) for s in find_patterns(text, types)]


def test_the_type_lists_are_consistent() -> None:
    assert set(CHECKSUM_TYPES) <= set(PATTERN_TYPES)
    assert set(VALID) == set(PATTERN_TYPES)


def test_importing_the_package_does_not_import_presidio_or_spacy() -> None:
    code = (
        "import storage.pii, sys; "
        "assert 'presidio_analyzer' not in sys.modules; "
        "assert 'presidio_anonymizer' not in sys.modules; "
        "assert 'spacy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_a_producer_that_redacts_never_loads_torch_or_transformers() -> None:
    code = (
        "import storage.pii as p, sys; "
        "t = 'mail a.b@example.com'; "
        "assert p.redact(t, p.find_patterns(t), 'mask')[0] == 'mail <EMAIL>'; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


@pytest.mark.parametrize("type_", sorted(VALID))
@pytest.mark.parametrize("language", ["en", "zh"])
def test_each_type_is_found(type_: str, language: str) -> None:
    value, english, chinese = VALID[type_]
    text = (english if language == "en" else chinese).format(value)
    assert found(text) == [(type_, value)]


@pytest.mark.parametrize(
    "text, value",
    [
        ("Email 李雷lilei@mail.example.org，谢谢", "lilei@mail.example.org"),
        ("Call (212) 555-1234 please", "(212) 555-1234"),
        ("电话+86 138 1234 5678找我", "+86 138 1234 5678"),
        ("IBAN GB82WEST12345698765432.", "GB82WEST12345698765432"),
        ("服务器2001:db8::8a2e:370:7334出错", "2001:db8::8a2e:370:7334"),
        ("卡号4111-1111-1111-1111请退款", "4111-1111-1111-1111"),
        ("用户从IP10.20.30.40登录", "10.20.30.40"),  # an address right after Latin letters
        ("总机010-6552 9988转人工", "010-6552 9988"),  # a Chinese landline
    ],
)
def test_other_formats_are_found(text: str, value: str) -> None:
    assert [v for _, v in found(text)] == [value]


@pytest.mark.parametrize(
    "type_, text",
    [
        ("CREDIT_CARD", "My card is 4111 1111 1111 1112 thanks."),  # bad Luhn digit
        ("CREDIT_CARD", "信用卡号4111111111111112已过期"),
        ("IBAN", "Refund to IBAN DE88 3704 0044 0532 0130 00 please."),  # wrong check digits
        ("IBAN", "退款账户DE88370400440532013000谢谢"),
        ("UK_NHS", "Patient NHS number 943 476 5918 seen today."),  # bad mod-11 check
        ("CN_RESIDENT_ID", "身份证110105194912310021，请核对"),  # wrong check character
        ("CN_RESIDENT_ID", "身份证110105194902300012，请核对"),  # right check char, 30 February
        ("CN_RESIDENT_ID", "ID 110105299901011237 on file."),  # born in 2999
        ("EMAIL", "Please write to john@example.invalidtld today."),  # no such TLD
        ("US_SSN", "SSN 000-12-3456 and 666-12-3456"),  # area numbers never issued
    ],
)
def test_invalid_look_alikes_are_not_found(type_: str, text: str) -> None:
    assert found(text, [type_]) == []
    if type_ != "UK_NHS":  # ten digits with a bad NHS check are still a valid US phone number
        assert found(text) == []


def test_numbers_that_are_not_pii_are_not_found() -> None:
    text = "Order ORD-20240611-7781 of 2024-06-11, total $1,234.56, 3 items, ref #A7731902."
    assert found(text) == []
    # Ten digits that only the permissive Chinese plan takes as a (landline) number: a Chinese
    # landline is written with its trunk 0.
    assert found("订单4532701907已发货") == []
    # python-phonenumbers alone would read this address as a Chinese mobile number.
    assert found("服务器135.181.30.153宕机") == [("IP_ADDRESS", "135.181.30.153")]


def test_presidio_logs_carry_no_values(caplog: pytest.LogCaptureFixture) -> None:
    find_patterns("warm: a@example.com")  # the engine is built, its loggers quietened
    logger = logging.getLogger("presidio-analyzer")
    with caplog.at_level(logging.DEBUG):
        logger.info("recognizer loaded %s", "EmailRecognizer")
        logger.error("Failed to validate text %s", "DE89370400440532013000")
    assert all("DE89370400440532013000" not in r.getMessage() for r in caplog.records)
    assert not any("EmailRecognizer" in r.getMessage() for r in caplog.records)


def test_types_restrict_the_search_and_model_types_are_ignored() -> None:
    text = "Mail john@example.com or call +44 20 7946 0958."
    assert found(text, ["EMAIL", "PERSON"]) == [("EMAIL", "john@example.com")]
    assert found(text, []) == []


def test_empty_text_and_text_without_pii() -> None:
    assert find_patterns("") == []
    assert find_patterns("Thanks, the parcel arrived on Tuesday. 谢谢，包裹已收到。") == []
    assert redact("", [], "mask") == ("", [])
    assert redact("nothing here", [], "hash", secret=b"k") == ("nothing here", [])


def test_mostly_pii_text_is_fully_replaced() -> None:
    values = [VALID[t][0] for t in PATTERN_TYPES]
    text = "; ".join(values)
    spans = find_patterns(text)
    assert [s.type for s in spans] == list(PATTERN_TYPES)
    masked, findings = redact(text, spans, "mask")
    assert masked == "; ".join(f"<{t}>" for t in PATTERN_TYPES)
    assert type_counts(findings) == dict.fromkeys(PATTERN_TYPES, 1)


@pytest.mark.parametrize("mode", ["mask", "hash"])
def test_redacted_text_holds_no_planted_value(mode: str) -> None:
    text = " ".join(chinese.format(value) for value, _, chinese in VALID.values())
    new, findings = redact(text, find_patterns(text), mode, secret=b"s3cret")
    for value, _, _ in VALID.values():
        assert value not in new
    assert len(findings) == len(VALID)
    for f in findings:
        assert set(f) == {"type", "start", "end", "by"}
        replaced = new[f["start"] : f["end"]]
        assert replaced.startswith(f"<{f['type']}") and replaced.endswith(">")


def test_detect_leaves_the_text_and_points_at_the_values() -> None:
    text = "请发邮件到john@x.com谢谢"
    new, findings = redact(text, find_patterns(text), "detect")
    assert new == text
    assert [(f["type"], text[f["start"] : f["end"]]) for f in findings] == [("EMAIL", "john@x.com")]


def test_hash_tokens_are_keyed() -> None:
    text = "a@example.com wrote, then b@example.com, then a@example.com again"
    spans = find_patterns(text)
    one, _ = redact(text, spans, "hash", secret=b"one")
    other, _ = redact(text, spans, "hash", secret=b"other")
    tok_a, tok_b = token(b"one", "a@example.com"), token(b"one", "b@example.com")
    assert one == f"<EMAIL:{tok_a}> wrote, then <EMAIL:{tok_b}>, then <EMAIL:{tok_a}> again"
    assert len(tok_a) == 16 and tok_a != tok_b
    assert token(b"other", "a@example.com") != tok_a
    assert f"<EMAIL:{token(b'other', 'a@example.com')}>" in other


def test_bad_mode_or_missing_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        redact("x@example.com", [Span("EMAIL", 0, 13)], "hash")
    with pytest.raises(ValueError):
        redact("x@example.com", [Span("EMAIL", 0, 13)], "erase")
    with pytest.raises(ValueError):
        redact("short", [Span("EMAIL", 2, 9)], "mask")


def test_a_model_span_containing_a_pattern_span_gives_one_replacement() -> None:
    text = "Signed: ACME Ltd (acme@example.com), London"
    org = Span("ORG", 8, 35, score=0.9, by="model")  # "ACME Ltd (acme@example.com)"
    new, findings = redact(text, [*find_patterns(text), org], "mask")
    assert new == "Signed: <ORG>, London"
    assert findings == [{"type": "ORG", "start": 8, "end": 13, "by": "model"}]


def test_overlapping_pattern_spans_give_one_replacement_the_longer() -> None:
    text = "ref 4111111111111111 x"
    spans = [Span("PHONE", 4, 14, score=0.4), Span("CREDIT_CARD", 4, 20)]
    new, findings = redact(text, spans, "mask")
    assert new == "ref <CREDIT_CARD> x"
    assert [(f["type"], new[f["start"] : f["end"]]) for f in findings] == [
        ("CREDIT_CARD", "<CREDIT_CARD>")
    ]
    # Equal length: the higher score, then pattern before model.
    tie = [Span("PERSON", 0, 3, 0.9, "model"), Span("EMAIL", 0, 3, 0.9), Span("ORG", 0, 3, 0.5)]
    assert redact("abc", tie, "mask")[0] == "<EMAIL>"


def test_prior_findings_shift_across_a_second_pass() -> None:
    text = "张伟的邮箱是zw@example.cn，电话13812345678，住在北京。"
    first, prior = redact(text, find_patterns(text), "hash", secret=b"k")
    # The second pass is the model's, over the first pass's output: a person, a place, and a
    # span that covers an <EMAIL:...> replacement, which is trimmed to the two characters
    # before it (the replacement is never redacted again).
    person = Span("PERSON", 0, 2, 0.9, "model")
    place = first.index("北京")
    covering = prior[0]
    spans = [
        person,
        Span("PLACE", place, place + 2, 0.8, "model"),
        Span("ORG", covering["start"] - 2, covering["end"], 0.99, "model"),
    ]
    second, findings = redact(first, spans, "hash", secret=b"k", prior=prior)
    assert [(f["type"], f["by"]) for f in findings] == [
        ("PERSON", "model"),
        ("ORG", "model"),
        ("EMAIL", "pattern"),
        ("CN_MOBILE", "pattern"),
        ("PLACE", "model"),
    ]
    for f in findings:
        assert second[f["start"] : f["end"]].startswith(f"<{f['type']}:")
    for value in ("张伟", "zw@example.cn", "13812345678", "北京"):
        assert value not in second
    # Keys a caller added to its findings (where the text came from) survive the shift.
    tagged = [{**f, "field": "text"} for f in prior]
    _, again = redact(first, spans[:1], "mask", prior=tagged)
    assert [f.get("field") for f in again] == [None, "text", "text"]
    assert type_counts(findings) == {"PERSON": 1, "ORG": 1, "EMAIL": 1, "CN_MOBILE": 1, "PLACE": 1}


def test_the_engine_is_built_once_across_threads() -> None:
    engines: list[object] = []
    threads = [threading.Thread(target=lambda: engines.append(analyzer_engine())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(e) for e in engines}) == 1
