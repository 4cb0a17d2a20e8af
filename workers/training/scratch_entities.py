"""A tiny named-entity tagger trained from scratch (no downloads) on synthetic English and
Chinese sentences: the `tiny-entities` demo model.

Sentences come from templates ("Contact {PERSON} at {EMAIL} or {PHONE} in {PLACE} at {ORG}.",
"请联系{PERSON}，电话{PHONE}，邮箱{EMAIL}，地址{PLACE}，公司{ORG}。") filled at random; every
sentence carries its gold character spans, so a test can compare what the model finds with
what is there. Names, places and organisations are split once into training fills and
held-out fills: `entity_sentences(..., split="heldout")` writes sentences whose fills the
model never saw whole (their subwords and characters it did see; no word of a held-out
English name). E-mails and phones are random. Labels are BIO over EMAIL, PHONE, PERSON, PLACE
and ORG. The model trains on texts of one to four sentences (`entity_passages`), so a longer
text read in overlapping windows (the pipeline's `stride`) is tagged as well.

The tokenizer is a cased WordPiece trained with `tokenizers` (workers/training/scratch_text.py)
on sentences whose names are all made up: BERT's normaliser puts every CJK character in a
token of its own, so a Chinese word is a run of one-character tokens that the
token-classification pipeline groups by their B-/I- tags (`aggregation_strategy="simple"`);
its decoder joins CJK tokens without spaces ("张伟", not "张 伟"). An entity's text is
`text[start:end]`: the pipeline's `word` is decoded from tokens ("ada @ example. com").
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from workers.training.scratch_text import in_heldout, make_wordpiece_tokenizer, tiny_roformer, words

ENTITY_TYPES = ("EMAIL", "PHONE", "PERSON", "PLACE", "ORG")
LABELS = ("O", *(f"{bio}-{kind}" for kind in ENTITY_TYPES for bio in ("B", "I")))
MAX_POSITIONS = 128
VOCAB_SIZE = 1000
# the share of training fills that are made up
MADE_UP = 0.6


EN_FIRST = words(
    "Ada Alan Grace Linus Margaret Tim Barbara Dennis Ken Frances Edsger Donald John Mary "
    "James Patricia Robert Jennifer Michael Linda William Elizabeth David Susan Richard "
    "Jessica Joseph Sarah Thomas Karen Charles Nancy Daniel Lisa Matthew Betty Anthony "
    "Sandra Mark Ashley Paul Emily Steven Donna Andrew Michelle Oliver Chloe Noah Amelia"
)
EN_LAST = words(
    "Lovelace Turing Hopper Torvalds Hamilton Berners-Lee Liskov Ritchie Thompson Allen "
    "Dijkstra Knuth McCarthy Smith Johnson Williams Brown Jones Garcia Miller Davis "
    "Rodriguez Martinez Wilson Anderson Taylor Moore Jackson Martin Lee Harris Clark Lewis "
    "Walker Young King Wright Scott Green Baker Adams Nelson Carter Mitchell Roberts O'Brien"
)
EN_PLACES = words(
    "London|Paris|Berlin|Madrid|Rome|Lisbon|Dublin|Amsterdam|Vienna|Prague|Warsaw|Oslo|"
    "Stockholm|Helsinki|Copenhagen|Brussels|Zurich|Geneva|New York|San Francisco|Los Angeles|"
    "Chicago|Boston|Seattle|Toronto|Vancouver|Montreal|Sydney|Melbourne|Auckland|Tokyo|"
    "Singapore|Mumbai|Cape Town|Buenos Aires|Mexico City|Rio de Janeiro|Edinburgh|"
    "Manchester|Bristol|Cambridge|Oxford|Nairobi|Lagos|Cairo|Seoul|Osaka|Denver",
    sep="|",
)
EN_ORGS = words(
    "Acme Corp|Globex Inc|Initech|Umbrella Ltd|Stark Industries|Wayne Enterprises|Hooli|"
    "Pied Piper|Vandelay Industries|Cyberdyne Systems|Soylent Corp|Wonka Industries|"
    "Tyrell Corporation|Aperture Science|Black Mesa|Massive Dynamic|Oscorp|Dunder Mifflin|"
    "Sterling Cooper|Gringotts Bank|Monarch Labs|Northwind Traders|Contoso Ltd|Fabrikam Inc|"
    "Tailspin Toys|Blue Yonder Airlines|Tessaly Labs|Orbital Group|Quantum Partners|Nimbus AG",
    sep="|",
)
ONSETS = words("b c d f g h j k l m n p r s t v w z br ch cl dr fr gr kl pl sh st th tr")
VOWELS = words("a e i o u ai ea ie ou y")
CODAS = ("", "", "", "n", "r", "s", "l", "m", "nd", "rt", "ck", "th", "x")
ORG_SUFFIXES = words("Corp Inc Ltd Labs Group Systems Industries Bank Partners")
CONNECTORS = words("de la del da of on upon and & von van")
ZH_SURNAMES = (
    "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋"
    "蔡贾丁魏薛叶余潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦史顾侯邵孟龙段钱汤"
)
ZH_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛超秀霞刚桂英玉兰萍红鹏辉玲俊斌宇浩凯晨欣怡雪琳婷晶"
    "健峰波鑫睿哲梓轩涵然思雨佳嘉颖慧倩琪瑶璐蕾薇菲航毅坤帆"
)
ZH_PLACES = words(
    "北京 上海 广州 深圳 杭州 南京 成都 武汉 西安 重庆 天津 苏州 长沙 郑州 青岛 大连 厦门 "
    "昆明 合肥 济南 福州 沈阳 哈尔滨 石家庄 南宁 贵阳 兰州 太原 宁波 无锡 珠海 佛山 东莞 "
    "温州 烟台 洛阳 桂林 拉萨 乌鲁木齐 呼和浩特 香港 澳门 台北 海口 三亚 扬州"
)
ZH_ORGS = words(
    "华为 阿里巴巴 腾讯 百度 小米 京东 联想 中兴 美团 网易 海尔 比亚迪 格力 美的 字节跳动 "
    "滴滴 携程 拼多多 顺丰 招商银行 中国银行 工商银行 中国移动 中国电信 万科 碧桂园 海康威视 "
    "大疆 蔚来 理想汽车 长城汽车 吉利汽车 伊利 蒙牛 茅台 安踏"
)
ZH_ORG_SUFFIXES = words("科技 集团 公司 银行 汽车 传媒")
PINYIN = words("zhang wei li na wang fang liu min chen jing yang qiang zhao lei huang jun zhou yu")
# mailbox names, and words an address may start with ("and" + "rew")
MAILBOX_WORDS = words("info sales contact support hello team office admin a an and the in at to or")
DOMAINS = words(
    "example.com example.org mail.example.net acme.co.uk example.cn qq.com 163.com "
    "corp.example.com.cn globex.io"
)

EN_TEMPLATES = (
    "Contact {PERSON} at {EMAIL} or {PHONE} in {PLACE} at {ORG}.",
    "{PERSON} works for {ORG} in {PLACE}.",
    "Please call {PERSON} on {PHONE}.",
    "Send the invoice to {EMAIL} before Friday.",
    "{ORG} opened a new office in {PLACE} last year.",
    "Our manager {PERSON} can be reached at {EMAIL}.",
    "The meeting with {PERSON} from {ORG} is in {PLACE}.",
    "Call {PHONE} to speak with {PERSON}.",
    "{PERSON} moved from {PLACE} to {PLACE}.",
    "Reply to {EMAIL} or call {PHONE}, thanks!",
    "I met {PERSON} and {PERSON} at the {ORG} office in {PLACE}.",
    "{ORG} hired {PERSON} as chief engineer.",
    "Write to {PERSON} <{EMAIL}> about the order.",
    "The weather in {PLACE} was fine.",
    "Nothing to report today.",
    "Questions? Phone {PHONE} or email {EMAIL}",
    "{PERSON} ({ORG}, {PLACE}) signed the contract.",
    "Ship the parcel to {ORG}, attention {PERSON}, {PLACE}.",
)
ZH_TEMPLATES = (
    "请联系{PERSON}，电话{PHONE}，邮箱{EMAIL}，地址{PLACE}，公司{ORG}。",
    "请联系{PERSON}，电话 {PHONE}，邮箱 {EMAIL}，地址{PLACE}，公司{ORG}。",
    "{PERSON}在{ORG}工作。",
    "{PERSON}住在{PLACE}。",
    "{ORG}总部位于{PLACE}。",
    "下周{PERSON}和{PERSON}去{PLACE}开会。",
    "如有问题请发邮件至{EMAIL}。",
    "请拨打{PHONE}联系{PERSON}。",
    "{PERSON}是{ORG}的工程师。",
    "我们在{PLACE}见到了{ORG}的{PERSON}。",
    "今天没有新的消息。",
    "{PERSON}从{PLACE}搬到了{PLACE}。",
    "客服电话：{PHONE}，邮箱：{EMAIL}",
    "{ORG}在{PLACE}开设了新办公室。",
)
SLOT = re.compile(r"\{(EMAIL|PHONE|PERSON|PLACE|ORG)\}")

Span = tuple[int, int, str]  # start, end (characters), entity type


@dataclass(frozen=True)
class EntitySentence:
    text: str
    spans: tuple[Span, ...]  # gold entities, in order
    lang: str

    def entities(self) -> list[tuple[str, str, int, int]]:
        """(text, type, start, end) of each gold entity."""
        return [(self.text[s:e], kind, s, e) for s, e, kind in self.spans]


def _split(fills: Sequence[str], split: str) -> list[str]:
    return [f for f in fills if in_heldout(f) == (split == "heldout")]


def pseudo_word(rng: random.Random, syllables: tuple[int, int] = (1, 3)) -> str:
    """A made-up capitalised word ("Brandolek")."""
    return "".join(
        rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
        for _ in range(rng.randint(*syllables))
    ).capitalize()


def _zh_chars(rng: random.Random, pool: Sequence[str], k: int) -> str:
    return "".join(rng.choice("".join(pool)) for _ in range(k))


def _made_up(kind: str, lang: str, rng: random.Random) -> str:
    """A made-up training fill: a person, or one to three words, now and then joined by a
    lower-case word (Chinese: two to four characters of the list's), organisations sometimes
    with a suffix ("Corp", "科技")."""
    if kind == "PERSON":
        first, last = pseudo_word(rng), pseudo_word(rng)
        return first if rng.random() < 0.15 else f"{first} {last}"
    if lang == "en":
        words = [pseudo_word(rng) for _ in range(rng.choice((1, 1, 2, 3)))]
        if len(words) > 1 and rng.random() < 0.3:  # "Rio de Janeiro", "Marks and Spencer"
            words.insert(1, rng.choice(CONNECTORS))
        if kind == "ORG" and rng.random() < 0.5:
            words.append(rng.choice(ORG_SUFFIXES))
        return " ".join(words)
    word = _zh_chars(rng, ZH_PLACES if kind == "PLACE" else ZH_ORGS, rng.randint(2, 4))
    return word + rng.choice(ZH_ORG_SUFFIXES) if kind == "ORG" and rng.random() < 0.4 else word


def _fill(kind: str, lang: str, rng: random.Random, split: str, made_up_share: float) -> str:
    """One random fill of the split. Training fills are the training part of the lists and,
    `made_up_share` of the time, made-up names from similar syllables / the same characters,
    so that the model tags names by their context rather than by remembering them. No fill,
    and no word of an English fill, of a training sentence is a held-out one."""
    if kind == "EMAIL":
        return random_email(rng, lang, split)
    if kind == "PHONE":
        return random_phone(rng, lang)
    train = split == "train"
    if train and rng.random() < made_up_share:
        while True:
            fill = _made_up(kind, lang, rng)
            if not any(in_heldout(part) for part in (fill, *fill.split())):
                return fill
    if kind == "PERSON" and lang == "zh":
        while True:
            name = rng.choice(ZH_SURNAMES) + _zh_chars(rng, [ZH_GIVEN], rng.randint(1, 2))
            if in_heldout(name) != train:
                return name
    if kind == "PERSON":
        first, last = rng.choice(_split(EN_FIRST, split)), rng.choice(_split(EN_LAST, split))
        return first if rng.random() < 0.15 else f"{first} {last}"
    fills = {"PLACE": {"en": EN_PLACES, "zh": ZH_PLACES}, "ORG": {"en": EN_ORGS, "zh": ZH_ORGS}}
    return rng.choice(_split(fills[kind][lang], split))


def random_email(rng: random.Random, lang: str, split: str = "heldout") -> str:
    """An address made of pinyin (Chinese) or of the split's names, or made-up words."""
    if lang == "zh":
        local = "".join(rng.choice(PINYIN) for _ in range(rng.randint(1, 3)))
    else:
        made_up = split == "train" and rng.random() < 0.5
        first, last = (
            (pseudo_word(rng), pseudo_word(rng))
            if made_up
            else (rng.choice(_split(EN_FIRST, split)), rng.choice(_split(EN_LAST, split)))
        )
        first, last = first.lower(), last.lower().replace("'", "")
        local = rng.choice([first, f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}"])
        if rng.random() < 0.3:  # "info.smith", "theadams": starting with a common word
            local = rng.choice(MAILBOX_WORDS) + rng.choice(("", ".", "_", "")) + local
    if rng.random() < 0.3:
        local += str(rng.randint(1, 999))
    return f"{local}@{rng.choice(DOMAINS)}"


def random_phone(rng: random.Random, lang: str) -> str:
    def digits(n: int) -> str:
        return "".join(rng.choice(string.digits) for _ in range(n))

    if lang == "zh":
        formats = [
            f"1{digits(2)} {digits(4)} {digits(4)}",
            f"1{digits(10)}",
            f"+86 1{digits(2)} {digits(4)} {digits(4)}",
            f"0{digits(2)}-{digits(4)}-{digits(4)}",
            f"+86 {digits(2)} {digits(4)} {digits(4)}",
        ]
    else:
        formats = [
            f"+44 {digits(2)} {digits(4)} {digits(4)}",
            f"+1 {digits(3)} {digits(3)} {digits(4)}",
            f"({digits(3)}) {digits(3)}-{digits(4)}",
            f"{digits(3)}-{digits(3)}-{digits(4)}",
            f"0{digits(3)} {digits(3)} {digits(4)}",
        ]
    return rng.choice(formats)


def render(template: str, fills: Iterable[tuple[str, str]], lang: str) -> EntitySentence:
    """A template with its slots replaced by (type, fill) in order, and the gold spans."""
    parts, spans, pos, length = [], [], 0, 0
    fills = iter(fills)
    for match in SLOT.finditer(template):
        literal = template[pos : match.start()]
        kind, fill = next(fills)
        parts += [literal, fill]
        length += len(literal)
        spans.append((length, length + len(fill), kind))
        length += len(fill)
        pos = match.end()
    parts.append(template[pos:])
    return EntitySentence("".join(parts), tuple(spans), lang)


def entity_sentences(
    n: int, seed: int, lang: str = "en", *, split: str = "heldout", made_up: float = MADE_UP
) -> list[EntitySentence]:
    """`n` sentences in `lang` ("en", "zh", or "mixed": alternating) with their gold spans;
    `split="heldout"` fills them with names, places and organisations training never used."""
    rng = random.Random(f"{seed}:{lang}:{split}")
    out = []
    for i in range(n):
        language = lang if lang != "mixed" else ("en", "zh")[i % 2]
        template = rng.choice(EN_TEMPLATES if language == "en" else ZH_TEMPLATES)
        fills = [(k, _fill(k, language, rng, split, made_up)) for k in SLOT.findall(template)]
        out.append(render(template, fills, language))
    return out


def join_sentences(sentences: Sequence[EntitySentence]) -> EntitySentence:
    """One text of several sentences (a space after an English one), spans moved along."""
    text, spans = "", []
    for s in sentences:
        if text and not (s.lang == "zh" and text[-1] in "。！？"):
            text += " "
        spans += [(a + len(text), b + len(text), kind) for a, b, kind in s.spans]
        text += s.text
    langs = {s.lang for s in sentences}
    return EntitySentence(text, tuple(spans), langs.pop() if len(langs) == 1 else "mixed")


def entity_passages(
    n: int, seed: int, lang: str = "mixed", *, most: int = 4, split: str = "heldout", **kw: Any
) -> list[EntitySentence]:
    """`n` texts of one to `most` sentences each (`entity_sentences` joined)."""
    rng = random.Random(f"passages:{seed}")
    sentences = iter(entity_sentences(n * most, seed, lang, split=split, **kw))
    return [
        join_sentences([next(sentences) for _ in range(rng.randint(1, most))]) for _ in range(n)
    ]


def alphabet() -> list[str]:
    """Every character any fill or template can use, so none is ever [UNK]."""
    chars = set(string.ascii_letters + string.digits + string.punctuation)
    for text in (ZH_SURNAMES, ZH_GIVEN, *ZH_PLACES, *ZH_ORGS, *ZH_ORG_SUFFIXES, *ZH_TEMPLATES):
        chars.update(text)
    return sorted(chars - set(" {}"))


def make_entity_tokenizer(seed: int) -> Any:
    """The WordPiece vocabulary is learnt from sentences whose names are all made up, so that
    no real name is one token and the pieces of a name say little about its type."""
    corpus = [s.text for s in entity_sentences(8000, seed, "mixed", split="train", made_up=1.0)]
    return make_wordpiece_tokenizer(
        corpus, vocab_size=VOCAB_SIZE, alphabet=alphabet(), max_length=MAX_POSITIONS
    )


def tiny_token_classifier(tokenizer: Any) -> Any:
    """A 2-layer RoFormer token classifier with the BIO labels."""
    return tiny_roformer(
        "RoFormerForTokenClassification",
        tokenizer,
        MAX_POSITIONS,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )


def token_labels(offsets: Sequence[tuple[int, int]], spans: Sequence[Span]) -> list[int]:
    """BIO label ids of one encoding's tokens (-100 for special tokens): a token inside a span
    is B- where the span starts and I- after."""
    labels = []
    for start, end in offsets:
        if start == end:
            labels.append(-100)
            continue
        label = "O"
        for s, e, kind in spans:
            if s <= start and end <= e:
                label = f"{'B' if start == s else 'I'}-{kind}"
        labels.append(LABELS.index(label))
    return labels


def encode_sentences(tokenizer: Any, sentences: Sequence[EntitySentence]) -> list[Any]:
    """Training examples ({"input_ids", "labels"}) made by the tokenizer call the pipeline
    makes."""
    enc = tokenizer([s.text for s in sentences], return_offsets_mapping=True, truncation=True)
    return [
        {"input_ids": ids, "labels": token_labels(offsets, s.spans)}
        for ids, offsets, s in zip(enc["input_ids"], enc["offset_mapping"], sentences, strict=True)
    ]


def pipeline_spans(found: Iterable[dict[str, Any]]) -> set[Span]:
    """The token-classification pipeline's grouped entities as (start, end, type)."""
    return {(int(e["start"]), int(e["end"]), str(e["entity_group"])) for e in found}


def span_scores(
    gold: Sequence[Iterable[Span]], predicted: Sequence[Iterable[Span]]
) -> dict[str, dict[str, float]]:
    """Entity-level precision, recall and F1 per type, as seqeval counts them: a predicted
    entity is right only if its start, end and type all match a gold one."""
    scores = {}
    for kind in ENTITY_TYPES:
        tp = n_gold = n_pred = 0
        for g, p in zip(gold, predicted, strict=True):
            gs, ps = {s for s in g if s[2] == kind}, {s for s in p if s[2] == kind}
            tp, n_gold, n_pred = tp + len(gs & ps), n_gold + len(gs), n_pred + len(ps)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[kind] = {"precision": precision, "recall": recall, "f1": f1, "support": n_gold}
    return scores
