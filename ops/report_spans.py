"""Report cells for span tasks: `answer-question` (the question, and the context with the
answer marked) and `extract-entities` (the text with its entities marked, label and score on
hover); explained rows colour the words by attribution (red towards the answer or entity,
blue away). Every piece of the input is escaped: these are the user's texts."""

import html
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from producers.adapters.html_cells import chips, colour
from schemas.jobs import Item
from schemas.task_spec import OutputShape

SPAN_OUTPUTS = frozenset({OutputShape.ANSWER, OutputShape.ENTITIES})
SHOWN_CHARS = 1500  # of a long context or text, around what is marked
ENTITY_WORDS = 12  # words shown each side of an explained entity


@dataclass(frozen=True)
class Mark:
    start: int
    end: int
    css: str
    title: str
    label: str = ""


def result_html(shape: OutputShape, output: dict[str, Any], item: Item | None) -> str:
    if shape == OutputShape.ANSWER:
        return answer_html(output, item)
    return entities_html(output, item)


def explanation_html(shape: OutputShape, explanation: dict[str, Any], item: Item | None) -> str:
    detail = explanation.get("detail") or {}
    if shape == OutputShape.ANSWER:
        return answer_explanation_html(explanation, detail, item)
    return entities_explanation_html(detail, item)


def answer_html(output: dict[str, Any], item: Item | None) -> str:
    answer = output.get("answer")
    if answer is None:
        head = f"<i>no answer</i> {_score(output.get('score'))}"
    else:
        head = f"<b>{html.escape(str(answer))}</b> {_score(output.get('score'))}"
    head += f" <small>(no-answer score {_score(output.get('null_score'))})</small>"
    question = (item.fields or {}).get("question") if item else None
    if item is None or not isinstance(item.text, str):
        return head
    marks = []
    if answer is not None and output.get("start") is not None:
        start, end = int(output["start"]), int(output["end"])
        marks.append(Mark(start, end, "ans", f"answer, score {_score(output.get('score'))}"))
    lo, hi = _around(len(item.text), marks)
    return (
        f"{head}<div class=q>Q: {html.escape(str(question or ''))}</div>"
        f"<div class=ctx>{render(item.text, lo, hi, marks, [])}</div>"
    )


def answer_explanation_html(
    explanation: dict[str, Any], detail: dict[str, Any], item: Item | None
) -> str:
    tokens = explanation.get("tokens") or []
    scores = explanation.get("attributions") or []
    offsets = detail.get("offsets") or []
    n_question = int(detail.get("question_words") or 0)
    question = (item.fields or {}).get("question") if item else None
    if item is None or not isinstance(item.text, str) or not isinstance(question, str):
        return chips(
            [str(t) for t in tokens], [float(a) for a in scores]
        )  # without the item: the words alone
    scale = max((abs(float(s)) for s in scores), default=0.0)
    words = [(int(s), int(e), float(a)) for (s, e), a in zip(offsets, scores, strict=False)]
    q_words, c_words = words[:n_question], words[n_question:]
    marks = []
    answer = detail.get("answer")
    if answer:
        marks.append(Mark(int(answer["start"]), int(answer["end"]), "ans", "answer"))
    window = detail.get("window") or {}
    lo, hi = _around(len(item.text), marks, int(window.get("start", 0)), window.get("end"))
    what = html.escape(str(detail.get("logits") or explanation.get("target") or ""))
    return (
        f"<div class=q>Q: {render(question, 0, len(question), [], q_words, scale)}</div>"
        f"<div class=ctx>{render(item.text, lo, hi, marks, c_words, scale)}</div>"
        f"<small>window {int(window.get('index', 0)) + 1} of {int(window.get('count', 1))}; "
        f"{what}</small>"
    )


def entities_html(output: dict[str, Any], item: Item | None) -> str:
    entities = output.get("entities") or []
    if not entities:
        return "<i>no entities</i>"
    if item is None or not isinstance(item.text, str):
        return "<br>".join(
            f"<b>{html.escape(str(e.get('label')))}</b> {html.escape(str(e.get('text')))} "
            f"{_score(e.get('score'))}"
            for e in entities
        )
    marks = [
        Mark(
            int(e["start"]),
            int(e["end"]),
            "ent",
            f"{e.get('label')} {_score(e.get('score'))}",
            str(e.get("label")),
        )
        for e in entities
    ]
    lo, hi = _around(len(item.text), marks)
    return render(item.text, lo, hi, marks, [])


def entities_explanation_html(detail: dict[str, Any], item: Item | None) -> str:
    explained = detail.get("entities") or []
    parts = []
    if note := detail.get("note"):
        parts.append(f"<i>{html.escape(str(note))}</i>")
    for e in explained:
        scores = [float(a) for a in e.get("attributions") or []]
        offsets = e.get("offsets") or []
        head = f"<b>{html.escape(str(e.get('label')))}</b> {html.escape(str(e.get('text')))}: "
        if item is None or not isinstance(item.text, str) or len(offsets) != len(scores):
            parts.append(head + chips([str(t) for t in e.get("tokens") or []], scores))
            continue
        words = [(int(s), int(t), a) for (s, t), a in zip(offsets, scores, strict=True)]
        start, end = int(e["start"]), int(e["end"])
        inside = [i for i, (s, t, _) in enumerate(words) if s < end and t > start]
        first, last = (inside[0], inside[-1]) if inside else (0, len(words) - 1)
        near = words[max(first - ENTITY_WORDS, 0) : last + ENTITY_WORDS + 1]
        mark = Mark(start, end, "ent", str(e.get("label")))
        lo, hi = (near[0][0], near[-1][1]) if near else (start, end)
        scale = max((abs(a) for a in scores), default=0.0)
        parts.append(f"<div>{head}{render(item.text, lo, hi, [mark], near, scale)}</div>")
    return "".join(parts)


def render(
    text: str,
    lo: int,
    hi: int,
    marks: list[Mark],
    words: list[tuple[int, int, float]],
    scale: float | None = None,
) -> str:
    """text[lo:hi], escaped, with `marks` as <mark> elements (a title to hover, a label
    after) and each word (start, end, attribution) coloured; '…' where text is left out."""
    lo, hi = max(0, lo), min(len(text), hi)
    marks = sorted((m for m in marks if m.start < hi and m.end > lo), key=lambda m: m.start)
    kept: list[Mark] = []
    for m in marks:  # overlapping marks cannot nest: the first one wins
        if not kept or m.start >= kept[-1].end:
            kept.append(m)
    words = sorted((w for w in words if w[0] < hi and w[1] > lo), key=lambda w: w[0])
    if scale is None:
        scale = max((abs(a) for _, _, a in words), default=0.0)
    cuts = sorted(
        {lo, hi}
        | {min(max(p, lo), hi) for m in kept for p in (m.start, m.end)}
        | {min(max(p, lo), hi) for w in words for p in w[:2]}
    )
    mark_spans = [(m.start, m.end) for m in kept]
    word_spans = [(w[0], w[1]) for w in words]
    out = ["…" if lo > 0 else ""]
    open_mark: Mark | None = None
    for s, e in zip(cuts, cuts[1:], strict=False):
        at = _covering(mark_spans, s, e)
        mark = None if at is None else kept[at]
        if mark is not open_mark:
            if open_mark is not None:
                out.append(_close(open_mark))
            if mark is not None:
                out.append(f'<mark class={mark.css} title="{html.escape(mark.title)}">')
            open_mark = mark
        piece = html.escape(text[s:e])
        at = _covering(word_spans, s, e)
        word = None if at is None else words[at]
        if word is not None and piece.strip():
            piece = (
                f'<span style="background:{colour(word[2], scale)}" '
                f'title="{word[2]:+.4g}">{piece}</span>'
            )
        out.append(piece)
    if open_mark is not None:
        out.append(_close(open_mark))
    out.append("…" if hi < len(text) else "")
    return "".join(out)


def _covering(spans: list[tuple[int, int]], s: int, e: int) -> int | None:
    """Which of the (sorted) spans holds [s, e), or None."""
    i = bisect_right(spans, (s, float("inf"))) - 1
    if i >= 0 and spans[i][0] <= s and e <= spans[i][1]:
        return i
    return None


def _close(mark: Mark) -> str:
    label = f"<sub>{html.escape(mark.label)}</sub>" if mark.label else ""
    return f"</mark>{label}"


def _around(length: int, marks: list[Mark], lo: int = 0, hi: Any = None) -> tuple[int, int]:
    """Which characters of a text to show: [lo, hi), at most SHOWN_CHARS of it, from a little
    before the first mark."""
    hi = length if hi is None else min(int(hi), length)
    if hi - lo <= SHOWN_CHARS:
        return lo, hi
    first = min((m.start for m in marks), default=lo)
    start = max(lo, first - SHOWN_CHARS // 4)
    return start, min(hi, start + SHOWN_CHARS)


def _score(value: Any) -> str:
    return f"{float(value):.3f}" if isinstance(value, int | float) else "-"
