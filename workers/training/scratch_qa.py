"""A tiny extractive question-answering model trained from scratch (no downloads): the
`tiny-qa` demo model.

Contexts hold synthetic facts about made-up names, at most one of each kind (capital, work,
shipping day, birth year, home town, price), shuffled among filler sentences: "The capital
of Veltria is Orbon. Mira Kaldsen works at Tessaly Labs. The order 4417 ships on Tuesday."
The questions ask for one of those facts ("What is the capital of Veltria?" -> "Orbon",
"Where does Mira Kaldsen work?" -> "Tessaly Labs", "When does order 4417 ship?" ->
"Tuesday"), or for a kind of fact the context does not hold ("Where does Mira Kaldsen
live?"): those have no answer, and the model is trained, as in SQuAD 2.0, to point at [CLS]
(start = end = 0) in every window.

What the model learns is to find the fact of the kind asked for; it does not check that the
name in the question is the one in the fact (a model this small learns that in ~4000 steps,
not in a minute): asked "Where does Ada work?" of "Mira works at Tessaly Labs." it answers
"Tessaly Labs".

Every made-up name is either a training name or a held-out one (`in_heldout`), so
`qa_triples(n, seed)` writes questions about names the model never saw. Contexts run past the
model's 128 positions: they are read in overlapping windows (workers/extractive_qa.py), and
the windows that do not hold the answer are trained to point at [CLS] too.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workers.extractive_qa import qa_windows
from workers.training.scratch_text import in_heldout, make_wordpiece_tokenizer, tiny_roformer, words

MAX_POSITIONS = 128
MAX_SEQ_LEN = 128  # a window: [CLS] question [SEP] context part [SEP]
DOC_STRIDE = 48  # context tokens two consecutive windows share
MAX_ANSWER_LEN = 15
VOCAB_SIZE = 1500
NO_ANSWER_SHARE = 0.25
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
WEEKDAYS = words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
ORG_SUFFIXES = words("Labs Group Systems Partners Foundry Works")
FILLERS = (
    "The weather was mild that week.",
    "Nobody remembered the old song.",
    "The report was filed on time.",
    "Several visitors arrived by train in the afternoon.",
    "The committee met again after a short break.",
    "It rained for most of the morning.",
    "A new bridge was opened near the harbour.",
    "The library stays open late on weekdays.",
    "Prices rose slightly during the spring.",
    "The museum added a room of maps.",
    "Most shops close early in winter.",
    "The river flooded the lower fields twice.",
    "Two old friends met at the station.",
    "The garden was full of bees in June.",
    "A long queue formed outside the bakery.",
    "The school choir sang three songs.",
    "Everyone agreed that the plan was sound.",
    "The road to the coast was closed for repairs.",
    "A small boat drifted past the pier.",
    "The lights in the hall flickered twice.",
)
# kind: (fact templates, question templates); {S} the subject, {A} the answer
FACTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "capital": (
        ("The capital of {S} is {A}.", "{A} is the capital of {S}."),
        ("What is the capital of {S}?", "Which city is the capital of {S}?"),
    ),
    "work": (
        ("{S} works at {A}.", "{S} is employed by {A}."),
        ("Where does {S} work?", "Who employs {S}?"),
    ),
    "ship": (
        ("The order {S} ships on {A}.", "Order {S} will ship on {A}."),
        ("When does order {S} ship?", "On which day does order {S} ship?"),
    ),
    "born": (
        ("{S} was born in {A}.", "In {A}, {S} was born."),
        ("When was {S} born?", "In which year was {S} born?"),
    ),
    "live": (
        ("{S} lives in {A}.", "{S} has a house in {A}."),
        ("Where does {S} live?", "In which town does {S} live?"),
    ),
    "price": (
        ("The {S} costs {A}.", "A {S} sells for {A}."),
        ("How much does the {S} cost?", "What is the price of the {S}?"),
    ),
}
PERSON_KINDS = ("work", "born", "live")


@dataclass(frozen=True)
class QATriple:
    question: str
    context: str
    answer: str  # "" when the context does not answer the question
    answer_start: int  # characters of the context; -1 when there is no answer


class _Names:
    """Made-up names from one side of the train/held-out split, never the same twice."""

    def __init__(self, rng: random.Random, split: str) -> None:
        self.rng, self.heldout = rng, split == "heldout"
        self.used: set[str] = set()

    def word(self) -> str:
        rng = self.rng
        while True:
            word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3))))
            word = (word + rng.choice(("", "", "n", "r", "s", "l"))).capitalize()
            if in_heldout(word) == self.heldout and word not in self.used:
                self.used.add(word)
                return word

    def subject(self, kind: str) -> str:
        if kind in PERSON_KINDS:
            return f"{self.word()} {self.word()}"
        if kind == "ship":
            return str(self.rng.randint(100, 99999))
        return self.word().lower() if kind == "price" else self.word()

    def answer(self, kind: str) -> str:
        rng = self.rng
        if kind == "work":
            return f"{self.word()} {rng.choice(ORG_SUFFIXES)}"
        if kind == "ship":
            return rng.choice(WEEKDAYS)
        if kind == "born":
            return str(rng.randint(1900, 2020))
        if kind == "price":
            amount = rng.randint(2, 999)
            return rng.choice([f"${amount}", f"{amount} euros", f"{amount} pounds"])
        return self.word()


def _facts(names: _Names, kinds: Sequence[str]) -> list[Any]:
    """One fact of each kind, (kind, subject, answer); the facts about people are now and
    then about one person ("Mira Kaldsen works at ... Mira Kaldsen lives in ...")."""
    rng = names.rng
    person = names.subject("work")
    facts = []
    for kind in kinds:
        same = kind in PERSON_KINDS and rng.random() < 0.5
        facts.append((kind, person if same else names.subject(kind), names.answer(kind)))
    return facts


def _render(rng: random.Random, facts: list[Any], n_fillers: int) -> tuple[str, list[int]]:
    """The facts and fillers shuffled into one text; where each fact's answer starts."""
    pieces: list[Any] = [*facts, *rng.sample(FILLERS, min(n_fillers, len(FILLERS)))]
    rng.shuffle(pieces)
    text, starts = "", {}
    for piece in pieces:
        text += " " if text else ""
        if isinstance(piece, str):
            text += piece
            continue
        kind, subject, answer = piece
        template = rng.choice(FACTS[kind][0])
        head = template.split("{A}")[0].replace("{S}", subject)
        starts[kind] = len(text) + len(head)
        text += template.replace("{S}", subject).replace("{A}", answer)
    return text, [starts[kind] for kind, _, _ in facts]


def qa_triples(
    n: int, seed: int, *, split: str = "heldout", long_share: float = 0.3
) -> list[QATriple]:
    """`n` (question, context, answer) triples; `split="heldout"` uses only names training
    never saw. A context holds at most one fact of each kind among fillers; about
    `long_share` of them are long (most past 128 tokens). A quarter of the questions have no
    answer: they ask for a kind of fact the context does not hold, about someone or
    something it does not mention or about a person it says other things about."""
    rng = random.Random(f"qa:{seed}:{split}")
    names = _Names(rng, split)
    out = []
    for _ in range(n):
        long = rng.random() < long_share
        kinds = rng.sample(list(FACTS), rng.randint(3, 6) if long else rng.randint(1, 4))
        facts = _facts(names, kinds)
        fillers = rng.randint(8, len(FILLERS)) if long else rng.randint(0, 3)
        context, starts = _render(rng, facts, fillers)
        if rng.random() >= NO_ANSWER_SHARE or len(kinds) == len(FACTS):
            i = rng.randrange(len(facts))
            kind, subject, answer = facts[i]
            out.append(QATriple(_question(rng, kind, subject), context, answer, starts[i]))
            continue
        kind = rng.choice([k for k in FACTS if k not in kinds])
        people = [s for k, s, _ in facts if k in PERSON_KINDS]
        if kind in PERSON_KINDS and people and rng.random() < 0.5:
            subject = rng.choice(people)
        else:
            subject = names.subject(kind)
        out.append(QATriple(_question(rng, kind, subject), context, "", -1))
    return out


def _question(rng: random.Random, kind: str, subject: str) -> str:
    return rng.choice(FACTS[kind][1]).replace("{S}", subject)


def make_qa_tokenizer(seed: int) -> Any:
    corpus = []
    for t in qa_triples(3000, seed, split="train"):
        corpus += [t.question, t.context]
    alphabet = sorted(set(string.ascii_letters + string.digits + string.punctuation))
    return make_wordpiece_tokenizer(
        corpus, vocab_size=VOCAB_SIZE, alphabet=alphabet, max_length=MAX_POSITIONS
    )


def tiny_qa_model(tokenizer: Any) -> Any:
    """A 2-layer RoFormer extractive reader (with BERT's absolute positions a model this
    small learns where a span starts several times slower)."""
    return tiny_roformer("RoFormerForQuestionAnswering", tokenizer, MAX_POSITIONS)


def qa_features(tokenizer: Any, triples: Sequence[QATriple]) -> list[dict[str, Any]]:
    """One training example per window: its tokens and the answer's first and last token,
    or 0 and 0 ([CLS]) when the window does not hold the whole answer."""
    enc = qa_windows(
        tokenizer,
        [t.question for t in triples],
        [t.context for t in triples],
        max_seq_len=MAX_SEQ_LEN,
        doc_stride=DOC_STRIDE,
    )
    features = []
    for w, sample in enumerate(enc["overflow_to_sample_mapping"].tolist()):
        triple = triples[sample]
        n = int(enc["attention_mask"][w].sum())
        start = end = 0
        if triple.answer:
            first, last = triple.answer_start, triple.answer_start + len(triple.answer)
            offsets = enc["offset_mapping"][w].tolist()
            for i, seq in enumerate(enc.sequence_ids(w)):
                if seq == 1 and offsets[i][0] == first:
                    start = i
                if seq == 1 and offsets[i][1] == last and start:
                    end = i
            if not (start and end):
                start = end = 0
        features.append(
            {
                "input_ids": enc["input_ids"][w][:n].tolist(),
                "token_type_ids": enc["token_type_ids"][w][:n].tolist(),
                "start_positions": start,
                "end_positions": end,
            }
        )
    return features
