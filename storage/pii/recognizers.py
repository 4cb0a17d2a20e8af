"""The Presidio recognizers of PATTERN_TYPES, made CJK-safe and offline.

Imports Presidio at the top: only `storage.pii.analyzer` imports this module, inside its lazy
builder. Each class keeps its Presidio parent's checksum (validate_result) and pruning
(invalidate_result); what changes is the regexes (see cjk_regex), the entity names (ours, not
Presidio's), a few context words in Chinese, and the e-mail TLD check (offline)."""

import functools
import re
from typing import Any

import phonenumbers
import tldextract
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    NhsRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)

from storage.pii.cjk_regex import cjk_safe
from storage.pii.cn_ids import is_valid_resident_id

# National formats are read for these regions; any number written with +CC is found whatever
# its country. CN adds Chinese landlines ("010-6552 9988"); its mobiles are CN_MOBILE.
PHONE_REGIONS = ("US", "GB", "CN")
# Regions whose national numbers count only when written with the trunk prefix 0: the Chinese
# plan accepts almost any 10 or 11 digits (order numbers, a failed NHS number), but a landline
# is always written 0 + area code, and a mobile is CN_MOBILE.
TRUNK_PREFIX_ONLY = ("CN",)
# python-phonenumbers reads "135.181.30.153" as a phone number; a dotted quad is an address.
DOTTED_QUAD = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def safe_patterns(patterns: list[Pattern]) -> list[Pattern]:
    return [Pattern(p.name, cjk_safe(p.regex), p.score) for p in patterns]


@functools.cache
def offline_tld_extract() -> tldextract.TLDExtract:
    """tldextract's bundled public-suffix snapshot. Presidio calls `tldextract.extract`, whose
    default extractor downloads the list (and waits on the network when there is none)."""
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class Email(EmailRecognizer):
    PATTERNS = safe_patterns(EmailRecognizer.PATTERNS)
    CONTEXT = [*EmailRecognizer.CONTEXT, "mail", "邮箱", "邮件"]

    def validate_result(self, pattern_text: str) -> bool:
        # the domain alone: on the whole match, a path before it ("x/a@b.com") or a file
        # name's extension after it ("a@b.com.wav") made tldextract reject a real address
        labels = pattern_text.rpartition("@")[2].split(".")
        return any(  # "a@b.com.wav": b.com is a domain (the match, extension and all, goes)
            offline_tld_extract()(".".join(labels[:n])).fqdn for n in range(len(labels), 1, -1)
        )


class OverlappedRegex:
    """A compiled regex whose finditer also returns matches that overlap an earlier one.
    Presidio scans with finditer, which resumes after each match: a card number right after
    another number ("13812345678 4111 1111 1111 1111") is consumed by a longer false match
    that its checksum then refuses, and the card is never tried. Overlaps are settled later
    (storage/pii/spans.py)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def finditer(self, text: str, **kwargs: Any) -> Any:
        return self.compiled.finditer(text, overlapped=True, **kwargs)


def scan_overlapped(recognizer: PatternRecognizer) -> None:
    import regex

    patterns: list[Any] = getattr(recognizer, "patterns")  # noqa: B009 (untyped in Presidio)
    for pattern in patterns:
        flags = recognizer.global_regex_flags
        pattern.compiled_regex = OverlappedRegex(regex.compile(pattern.regex, flags=flags))
        pattern.compiled_with_flags = flags


class CreditCard(CreditCardRecognizer):
    PATTERNS = safe_patterns(CreditCardRecognizer.PATTERNS)
    CONTEXT = [*CreditCardRecognizer.CONTEXT, "信用卡", "卡号", "银行卡"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        scan_overlapped(self)


class Iban(IbanRecognizer):
    # Already bounded by (?<![A-Z0-9]) / (?![A-Z0-9]) rather than \b; rewritten all the same.
    PATTERNS = safe_patterns(IbanRecognizer.PATTERNS)
    CONTEXT = [*IbanRecognizer.CONTEXT, "账户", "账号", "银行", "汇款"]


def ip_patterns() -> list[Pattern]:
    """Presidio's, CJK-safe, and an address may follow letters directly, as in Chinese
    "从IP10.0.0.8登录": only a digit or dot before an IPv4 address, or a hex digit or colon
    before an IPv6 one, would make it part of something longer."""
    out = []
    for p in IpRecognizer.PATTERNS:
        regex = p.regex.replace(r"(?<![\w:])", r"(?<![0-9A-Fa-f:])")
        if p.name == "IPv4":
            regex = regex.replace(r"\b", r"(?<![0-9.])", 1)
        out.append(Pattern(p.name, cjk_safe(regex), p.score))
    return out


class IpAddress(IpRecognizer):
    PATTERNS = ip_patterns()
    CONTEXT = [*IpRecognizer.CONTEXT, "地址", "服务器"]


class UsSsn(UsSsnRecognizer):
    PATTERNS = safe_patterns(UsSsnRecognizer.PATTERNS)
    CONTEXT = [*UsSsnRecognizer.CONTEXT, "社会安全号", "社保号"]


class UkNhs(NhsRecognizer):
    PATTERNS = safe_patterns(NhsRecognizer.PATTERNS)
    CONTEXT = [*NhsRecognizer.CONTEXT, "医保号", "nhs号"]


class Phone(PhoneRecognizer):
    """python-phonenumbers finds and validates the numbers (no regex here); it already accepts
    a number touching CJK characters (it only rejects adjacent Latin letters). Presidio's loop
    over the regions, less what TRUNK_PREFIX_ONLY and DOTTED_QUAD leave out."""

    CONTEXT = [*PhoneRecognizer.CONTEXT, "tel", "电话", "手机", "致电", "联系"]

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        results = []
        leniency = phonenumbers.Leniency.VALID if self.leniency is None else self.leniency
        for region in self.supported_regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency):
                raw = match.raw_string
                if DOTTED_QUAD.fullmatch(raw):
                    continue
                if region in TRUNK_PREFIX_ONLY and not raw.lstrip("(").startswith(("0", "+")):
                    continue
                results.append(self._get_recognizer_result(match, text, region, nlp_artifacts))
        return EntityRecognizer.remove_duplicates(results)


class CnMobile(PatternRecognizer):
    """A mainland mobile number: 1[3-9] and 9 more digits, optionally +86/0086/86 before it and
    written 3-4-4 with spaces or hyphens; never part of a longer run of digits or letters."""

    PATTERNS = [
        Pattern(
            "CN mobile",
            r"(?<![0-9A-Za-z+])(?:(?:\+86|0086|86)[ -]?|\(\+?86\)[ -]?)?"
            r"1[3-9][0-9](?:[0-9]{8}|-[0-9]{4}-[0-9]{4}| [0-9]{4} [0-9]{4})(?![0-9A-Za-z])",
            0.5,
        )
    ]
    # At least Phone's words, so that context never lifts a PHONE reading of the same digits
    # above this one (0.5 against 0.4, both raised alike).
    CONTEXT = [*Phone.CONTEXT, "号码"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            supported_entity="CN_MOBILE", patterns=self.PATTERNS, context=self.CONTEXT, **kwargs
        )


class CnResidentId(PatternRecognizer):
    """An 18-character resident identity number; counts only with a real birth date and the
    right ISO 7064 MOD 11-2 check character."""

    PATTERNS = [
        Pattern(
            "CN resident ID",
            r"(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])"
            r"(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx](?![0-9A-Za-z])",
            0.5,
        )
    ]
    CONTEXT = ["身份证", "证件", "id card", "resident id", "identity"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            supported_entity="CN_RESIDENT_ID",
            patterns=self.PATTERNS,
            context=self.CONTEXT,
            **kwargs,
        )

    def validate_result(self, pattern_text: str) -> bool:
        return is_valid_resident_id(pattern_text)


def pattern_recognizers() -> list[EntityRecognizer]:
    """One recognizer per type of PATTERN_TYPES, each emitting our type name."""
    return [
        Email(supported_entity="EMAIL"),
        Phone(supported_entity="PHONE", supported_regions=PHONE_REGIONS),
        CreditCard(supported_entity="CREDIT_CARD"),
        Iban(supported_entity="IBAN"),
        IpAddress(supported_entity="IP_ADDRESS"),
        UsSsn(supported_entity="US_SSN"),
        UkNhs(supported_entity="UK_NHS"),
        CnMobile(),
        CnResidentId(),
    ]
