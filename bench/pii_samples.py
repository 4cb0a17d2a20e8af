"""A labelled synthetic set for the PII engine (storage.pii): English and Chinese customer
messages, support tickets and patient notes, made from a seed, nothing downloaded.

Each message plants values of the pattern types with valid checksums (Luhn, IBAN mod 97,
NHS mod 11, resident-ID MOD 11-2 and a real birth date; phone numbers valid in their
numbering plan), invalid look-alikes that must NOT be found (a card with a bad Luhn digit,
an IBAN with wrong check digits, an NHS number with a bad check, a resident ID with a wrong
check character or a 30 February, an address under no real TLD, an SSN of area 000/666),
numbers that are not PII (order ids, amounts, dates, tracking numbers), and names, places and
organisations for the entity tagger: from the lists its generator uses
(workers/training/scratch_entities.py), or, with names="unseen", from lists it never saw.

    samples(n_per_language, seed, names="lists") -> list[Sample]
"""

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers

from storage.pii.cn_ids import check_char
from workers.training.scratch_entities import (
    EN_FIRST,
    EN_LAST,
    EN_ORGS,
    EN_PLACES,
    ZH_GIVEN,
    ZH_ORGS,
    ZH_PLACES,
    ZH_SURNAMES,
)

Gold = tuple[int, int, str]  # start, end, type


@dataclass(frozen=True)
class Sample:
    text: str
    lang: str  # "en" | "zh"
    gold: tuple[Gold, ...]  # pattern PII
    names: tuple[Gold, ...]  # PERSON / PLACE / ORG
    decoys: tuple[Gold, ...]  # look-alikes and non-PII numbers, by the slot that made them


EN = [  # customer messages, tickets, patient notes
    "Hi, this is {PERSON} from {PLACE}. My order {ORDER} of {DATE} has not arrived. "
    "You can reach me at {EMAIL} or {PHONE}.",
    "Please refund {AMOUNT} to my card {CARD}, not to the old one {BAD_CARD}. Thanks, {PERSON}",
    "I changed banks: new IBAN {IBAN}. The number {BAD_IBAN} on file is wrong. Order {ORDER}.",
    "Call me back on {PHONE} about invoice {ORDER} ({AMOUNT}), or email {EMAIL}.",
    "{PERSON} at {ORG} asked us to send the contract to {EMAIL} by {DATE}.",
    "My SSN is {SSN} and my employer is {ORG}. Not {BAD_SSN}, that was a typo.",
    "Ticket {ORDER}: login from {IP} on {DATE} for user {EMAIL}; account holder {PERSON}.",
    "Fraud check: card {CARD} used from {IP} for {AMOUNT}. Customer phone {PHONE}.",
    "Escalation from {ORG} ({PLACE}): wire {AMOUNT} to {IBAN} before {DATE}.",
    "User reported that {BAD_EMAIL} bounced; the right address is {EMAIL}.",
    "Patient {PERSON}, NHS number {NHS}, seen in {PLACE} on {DATE}. Contact {PHONE}.",
    "Referral: NHS no. {NHS} (not {BAD_NHS}). GP practice {ORG}. Dose 2 x 500 mg daily.",
    "Patient SSN {SSN}, insurer {ORG}, next visit {DATE}, copay {AMOUNT}.",
    "Thanks for the quick reply, the parcel {ORDER} arrived on {DATE}.",
    "Customer {PERSON} from {PLACE}: mobile {CN_MOBILE}, resident ID {CN_ID}.",
    "The ID {BAD_ID} failed the check; the card {BAD_CARD} too. Tracking {TRACKING}.",
]
ZH = [
    "您好，我是{PERSON}，住在{PLACE}。订单{ORDER}（{DATE}下单）还没到，请联系我：手机{CN_MOBILE}，"
    "邮箱{EMAIL}。",
    "请把{AMOUNT}退到我的信用卡{CARD}，不是旧卡{BAD_CARD}。",
    "我的身份证号是{CN_ID}，之前填的{BAD_ID}有误。",
    "请致电{PHONE}或发邮件到{EMAIL}谢谢",
    "{ORG}的{PERSON}请我们在{DATE}前把合同发到{EMAIL}。",
    "汇款账户{IBAN}，金额{AMOUNT}，订单号{ORDER}。",
    "工单{ORDER}：用户{EMAIL}于{DATE}从IP{IP}登录异常，账号持有人{PERSON}。",
    "风控：信用卡{CARD}在{IP}消费{AMOUNT}，客户手机{CN_MOBILE}。",
    "邮件{BAD_EMAIL}被退回，正确地址是{EMAIL}。",
    "{ORG}（{PLACE}）投诉：退款{AMOUNT}至账户{IBAN}，错误账户{BAD_IBAN}已作废。",
    "患者{PERSON}，身份证{CN_ID}，{DATE}在{PLACE}就诊，联系电话{CN_MOBILE}。",
    "病历：患者手机{CN_MOBILE}，身份证号{BAD_ID}校验失败，需重新核对。每日2次，每次500毫克。",
    "英国患者NHS号{NHS}，美国社会安全号{SSN}，{DATE}复诊。",
    "包裹{ORDER}已于{DATE}签收，快递单号{TRACKING}，谢谢。",
    "客服电话{PHONE}，工作时间9:00-18:00，{ORG}。",
    "NHS号{BAD_NHS}无效，请核对{PERSON}的资料。",
]
PATTERN_SLOTS = {
    "EMAIL": "EMAIL",
    "PHONE": "PHONE",
    "CARD": "CREDIT_CARD",
    "IBAN": "IBAN",
    "IP": "IP_ADDRESS",
    "SSN": "US_SSN",
    "NHS": "UK_NHS",
    "CN_MOBILE": "CN_MOBILE",
    "CN_ID": "CN_RESIDENT_ID",
}
NAME_SLOTS = ("PERSON", "PLACE", "ORG")
SLOT = re.compile(r"\{([A-Z_]+)\}")
UNSEEN = {  # names, places and organisations in no list of the tagger's generator
    ("en", "PERSON"): ["Priya Raghunathan", "Oluwaseun Adebayo", "Siobhan Ni Dhuibhir",
                       "Kwame Mensah", "Ingrid Solberg", "Mateus Carvalho", "Yusuf Demir"],
    ("en", "PLACE"): ["Reykjavik", "Kuala Lumpur", "Addis Ababa", "Wellington", "Porto",
                      "Tbilisi", "Halifax"],
    ("en", "ORG"): ["Zentrix Dynamics", "Brightwater Health", "Halvorsen Shipping",
                    "Kestrel Analytics", "Marlowe & Finch"],
    ("zh", "PERSON"): ["欧阳娜娜", "司马光明", "诸葛亮亮", "上官婉儿", "尉迟恭", "东方明珠"],
    ("zh", "PLACE"): ["乌兰察布", "景德镇", "喀什", "延吉", "日喀则", "攀枝花"],
    ("zh", "ORG"): ["蓝湖科技", "青禾医疗", "远航物流", "云杉数据", "鹏程保险"],
}  # fmt: skip
EMAIL_DOMAINS = ["example.com", "mail.co.uk", "qq.com", "163.com", "company.cn",
                 "outlook.com", "clinic.org", "uni.edu", "shop.com.cn"]  # fmt: skip
BAD_DOMAINS = ["server.local", "example.invalid", "mailhost.lan", "corp.internal"]
IBAN_BBAN = {"DE": "n18", "GB": "a4n14", "FR": "n10c11n2", "NL": "a4n10", "ES": "n20"}
CN_AREAS = ["110105", "310104", "440305", "330106", "510107", "320102", "420106"]


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def luhn_digit(body: str) -> str:
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return str(-total % 10)


def card(rng: random.Random, valid: bool = True) -> str:
    prefix, length, groups = rng.choice(
        [("4", 16, (4, 4, 4, 4)), ("5" + rng.choice("12345"), 16, (4, 4, 4, 4)),
         ("3" + rng.choice("47"), 15, (4, 6, 5))]
    )  # fmt: skip
    body = prefix + digits(rng, length - len(prefix) - 1)
    check = luhn_digit(body)
    number = body + (check if valid else str((int(check) + rng.randint(1, 9)) % 10))
    sep = rng.choice([" ", "-", ""])
    parts, pos = [], 0
    for g in groups:
        parts.append(number[pos : pos + g])
        pos += g
    return sep.join(parts)


def iban(rng: random.Random, valid: bool = True) -> str:
    country = rng.choice(list(IBAN_BBAN))
    bban = ""
    for kind, count in re.findall(r"([anc])(\d+)", IBAN_BBAN[country]):
        pool = {"a": string.ascii_uppercase, "n": string.digits}.get(kind, string.digits)
        bban += "".join(rng.choice(pool) for _ in range(int(count)))
    as_number = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(as_number) % 97
    if not valid:
        check = (check + rng.randint(1, 96) - 2) % 97 + 2  # another of 02..98
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def nhs(rng: random.Random, valid: bool = True) -> str:
    while True:
        body = digits(rng, 9)
        check = 11 - sum(int(d) * w for d, w in zip(body, range(10, 1, -1), strict=True)) % 11
        check = 0 if check == 11 else check
        if check != 10:
            break
    last = check if valid else (check + rng.randint(1, 9)) % 10
    value = f"{body}{last}"
    return rng.choice([f"{value[:3]} {value[3:6]} {value[6:]}", value])


def resident_id(rng: random.Random, valid: bool = True) -> str:
    if valid or rng.random() < 0.5:
        born = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    else:
        born = f"{rng.randint(1950, 2005)}0230"  # no 30 February: the check char is right
    first17 = rng.choice(CN_AREAS) + born + digits(rng, 3)
    check = check_char(first17)
    if not valid and born.endswith("0230"):
        return first17 + check
    return first17 + (check if valid else rng.choice([c for c in "0123456789X" if c != check]))


def phone(rng: random.Random, lang: str) -> str:
    """A number valid in its numbering plan (checked with python-phonenumbers)."""
    while True:
        ex = f"{rng.randint(2, 9)}{digits(rng, 2)}"
        us_area = rng.choice(["212", "415", "646", "312", "617", "206", "303", "512", "713"])
        if lang == "en":
            value, region = rng.choice(
                [(f"({us_area}) {ex}-{digits(rng, 4)}", "US"),
                 (f"{us_area}-{ex}-{digits(rng, 4)}", "US"),
                 (f"+1 {us_area} {ex} {digits(rng, 4)}", "US"),
                 (f"+44 20 7{digits(rng, 3)} {digits(rng, 4)}", "GB"),
                 (f"020 7{digits(rng, 3)} {digits(rng, 4)}", "GB"),
                 (f"07{rng.choice('4579')}{digits(rng, 2)} {digits(rng, 6)}", "GB")]
            )  # fmt: skip
        else:
            city = rng.choice(["10", "21", "755", "20"])
            local = f"{rng.randint(2, 8)}{digits(rng, 3)} {digits(rng, 4)}"
            value, region = rng.choice(
                [(f"0{city}-{local}", "CN"), (f"+86 {city} {local}", "CN"),
                 (f"+44 20 7{digits(rng, 3)} {digits(rng, 4)}", "GB"),
                 (f"+1 {us_area} {ex} {digits(rng, 4)}", "US")]
            )  # fmt: skip
        if phonenumbers.is_valid_number(phonenumbers.parse(value, region)):
            return value


def cn_mobile(rng: random.Random) -> str:
    n = f"1{rng.choice('3456789')}{digits(rng, 9)}"
    return rng.choice([n, n, f"{n[:3]} {n[3:7]} {n[7:]}", f"+86 {n}", f"{n[:3]}-{n[3:7]}-{n[7:]}"])


def ssn(rng: random.Random, valid: bool = True) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666]) if valid else rng.choice([0, 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def email(rng: random.Random, lang: str, valid: bool = True) -> str:
    words = ["zhang.wei", "li_na", "wangfang88", "chen.jing"] if lang == "zh" else [
        "john.smith", "mary_jones", "a.turing", "support", "grace.hopper42"]  # fmt: skip
    domain = rng.choice(EMAIL_DOMAINS if valid else BAD_DOMAINS)
    return f"{rng.choice(words)}{rng.choice(['', str(rng.randint(1, 99))])}@{domain}"


def ipv4_or_6(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    return f"2001:db8:{rng.randint(1, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"


def not_pii(rng: random.Random, slot: str, lang: str) -> str:
    y, m, d = rng.randint(2019, 2025), rng.randint(1, 12), rng.randint(1, 28)
    return {
        "ORDER": rng.choice([f"ORD-{y}{m:02d}{d:02d}-{digits(rng, 4)}", f"#A{digits(rng, 7)}",
                             f"INV-{digits(rng, 5)}", f"{y}{m:02d}{d:02d}{digits(rng, 6)}"]),
        "AMOUNT": rng.choice([f"${rng.randint(1, 9)},{digits(rng, 3)}.{digits(rng, 2)}",
                              f"£{rng.randint(10, 999)}.{digits(rng, 2)}",
                              f"¥{rng.randint(10, 99999)}", f"€ {rng.randint(10, 999)},00"]),
        "DATE": (rng.choice([f"{y}年{m}月{d}日", f"{y}-{m:02d}-{d:02d}"]) if lang == "zh"
                 else rng.choice([f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}"])),
        "TRACKING": rng.choice([f"SF{digits(rng, 12)}", f"1Z{digits(rng, 6)}A{digits(rng, 9)}"]),
    }[slot]  # fmt: skip


def name(rng: random.Random, slot: str, lang: str, names: str) -> str:
    if names == "unseen":
        return rng.choice(UNSEEN[(lang, slot)])
    if slot == "PERSON" and lang == "zh":
        return rng.choice(ZH_SURNAMES) + "".join(rng.choice(ZH_GIVEN) for _ in range(2))
    if slot == "PERSON":
        return f"{rng.choice(EN_FIRST)} {rng.choice(EN_LAST)}"
    lists = {"PLACE": (EN_PLACES, ZH_PLACES), "ORG": (EN_ORGS, ZH_ORGS)}[slot]
    return rng.choice(lists[lang == "zh"])


def fill(rng: random.Random, slot: str, lang: str, names: str) -> str:
    makers: dict[str, Callable[[], str]] = {
        "EMAIL": lambda: email(rng, lang),
        "BAD_EMAIL": lambda: email(rng, lang, valid=False),
        "PHONE": lambda: phone(rng, lang),
        "CARD": lambda: card(rng),
        "BAD_CARD": lambda: card(rng, valid=False),
        "IBAN": lambda: iban(rng),
        "BAD_IBAN": lambda: iban(rng, valid=False),
        "IP": lambda: ipv4_or_6(rng),
        "SSN": lambda: ssn(rng),
        "BAD_SSN": lambda: ssn(rng, valid=False),
        "NHS": lambda: nhs(rng),
        "BAD_NHS": lambda: nhs(rng, valid=False),
        "CN_MOBILE": lambda: cn_mobile(rng),
        "CN_ID": lambda: resident_id(rng),
        "BAD_ID": lambda: resident_id(rng, valid=False),
    }
    if slot in NAME_SLOTS:
        return name(rng, slot, lang, names)
    if slot in makers:
        return makers[slot]()
    return not_pii(rng, slot, lang)


def samples(n_per_language: int = 450, seed: int = 0, names: str = "lists") -> list[Sample]:
    """`n_per_language` English then as many Chinese messages. The same seed gives the same
    messages whatever `names` is, but for the names themselves."""
    out = []
    for lang, templates in (("en", EN), ("zh", ZH)):
        rng = random.Random(f"pii:{seed}:{lang}")
        name_rng = random.Random(f"pii-names:{seed}:{lang}:{names}")
        for _ in range(n_per_language):
            template = rng.choice(templates)
            text, gold, found_names, decoys, pos = "", [], [], [], 0
            for match in SLOT.finditer(template):
                slot = match.group(1)
                text += template[pos : match.start()]
                value = fill(name_rng if slot in NAME_SLOTS else rng, slot, lang, names)
                span = (len(text), len(text) + len(value))
                if slot in PATTERN_SLOTS:
                    gold.append((*span, PATTERN_SLOTS[slot]))
                elif slot in NAME_SLOTS:
                    found_names.append((*span, slot))
                else:
                    decoys.append((*span, slot))
                text += value
                pos = match.end()
            text += template[pos:]
            out.append(Sample(text, lang, tuple(gold), tuple(found_names), tuple(decoys)))
    return out
