"""The HTML report's span cells (ops/report_spans.py): the answer marked in its context, the
entities marked in their text with label and score on hover, attributions coloured word by
word; hostile text (markup in a context, a question, a label) is shown, never run."""

from __future__ import annotations

import html
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ops.report import write_html
from ops.report_spans import SHOWN_CHARS, Mark, explanation_html, render, result_html
from schemas.catalog import load_catalog
from schemas.jobs import Item
from schemas.task_spec import OutputShape

HOSTILE = "<script>alert('x')</script>"
CONTEXT = f"Note {HOSTILE} & more. The capital of Veltria is Orbon."
QUESTION = "What is the capital of Veltria? <img src=x onerror=alert(1)>"
START = CONTEXT.index("Orbon")


def no_markup_from_input(page: str) -> None:
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;" in page


def answer_output(answer: str | None = "Orbon") -> dict[str, Any]:
    if answer is None:
        return {"answer": None, "score": 0.97, "start": None, "end": None, "null_score": 0.97}
    return {"answer": answer, "score": 0.91, "start": START, "end": START + 5, "null_score": 0.01}


def answer_item() -> Item:
    return Item(key="q1", text=CONTEXT, fields={"question": QUESTION})


def test_the_answer_is_marked_in_its_context_and_markup_is_escaped() -> None:
    cell = result_html(OutputShape.ANSWER, answer_output(), answer_item())
    no_markup_from_input(cell)
    assert "<mark class=ans" in cell
    assert re.search(r"<mark class=ans title=\"answer, score 0.910\">Orbon</mark>", cell)
    assert html.escape(QUESTION) in cell
    nothing = result_html(OutputShape.ANSWER, answer_output(None), answer_item())
    assert "<i>no answer</i> 0.970" in nothing and "<mark" not in nothing


def test_an_explained_answer_colours_question_and_context_words() -> None:
    words = ["What", "is", "the", "capital", "of", "Veltria", "?"]
    q_offsets = [[QUESTION.index(w), QUESTION.index(w) + len(w)] for w in words]
    c_words = ["capital", "Orbon"]
    c_offsets = [[CONTEXT.index(w), CONTEXT.index(w) + len(w)] for w in c_words]
    explanation = {
        "tokens": words + c_words,
        "attributions": [0.1] * 7 + [0.5, 2.0],
        "detail": {
            "question_words": 7,
            "offsets": q_offsets + c_offsets,
            "window": {"index": 0, "count": 1, "start": 0, "end": len(CONTEXT)},
            "answer": {"text": "Orbon", "start": START, "end": START + 5},
            "logits": "start + end of the answer's span",
        },
    }
    cell = explanation_html(OutputShape.ANSWER, explanation, answer_item())
    no_markup_from_input(cell)
    # the strongest word at full strength, inside the answer's mark
    assert '<mark class=ans title="answer"><span style="background:rgba(220,40,40,1.00)" ' in cell
    assert 'title="+2">Orbon</span></mark>' in cell
    assert "rgba(220,40,40,0.05)" in cell  # a question word, weakly
    # without the item the words alone are drawn, still escaped
    alone = explanation_html(OutputShape.ANSWER, {**explanation, "tokens": [HOSTILE]}, None)
    assert "<script>" not in alone and "&lt;script&gt;" in alone


def test_entities_are_marked_with_label_and_score_on_hover() -> None:
    text = f"Mail {HOSTILE} to Ada Lovelace at ada@example.com."
    label = 'PER"><script>'

    def entity(words: str, label: str, score: float) -> dict[str, Any]:
        at = text.index(words)
        return {"text": words, "label": label, "start": at, "end": at + len(words), "score": score}

    entities = [entity("Ada Lovelace", label, 0.99), entity("ada@example.com", "EMAIL", 0.5)]
    cell = result_html(OutputShape.ENTITIES, {"entities": entities}, Item(key="k", text=text))
    no_markup_from_input(cell)
    assert '<mark class=ent title="PER&quot;&gt;&lt;script&gt; 0.990">Ada Lovelace</mark>' in cell
    assert "<sub>PER&quot;&gt;&lt;script&gt;</sub>" in cell
    assert '<mark class=ent title="EMAIL 0.500">ada@example.com</mark><sub>EMAIL</sub>' in cell
    assert result_html(OutputShape.ENTITIES, {"entities": []}, None) == "<i>no entities</i>"


def test_an_explained_entity_colours_the_words_around_it() -> None:
    text = "Contact Ada Lovelace today."
    words = ["Contact", "Ada", "Lovelace", "today", "."]
    offsets, at = [], 0
    for w in words:
        at = text.index(w, at)
        offsets.append([at, at + len(w)])
        at += len(w)
    entity = {
        "label": "PERSON", "start": 8, "end": 20, "text": "Ada Lovelace", "score": 0.99,
        "tokens": words, "attributions": [0.2, 1.0, 0.8, -0.4, 0.0], "offsets": offsets,
    }  # fmt: skip
    cell = explanation_html(
        OutputShape.ENTITIES, {"detail": {"entities": [entity]}}, Item(key="k", text=text)
    )
    assert cell.startswith("<div><b>PERSON</b> Ada Lovelace: ")
    assert '<mark class=ent title="PERSON"><span style="background:rgba(220,40,40,1.00)"' in cell
    assert "rgba(40,90,220,0.40)" in cell  # "today" pushed away
    none = explanation_html(
        OutputShape.ENTITIES,
        {"detail": {"entities": [], "note": "no entities were found: nothing to explain"}},
        None,
    )
    assert none == "<i>no entities were found: nothing to explain</i>"


def test_a_long_text_is_shown_around_its_marks() -> None:
    text = "filler " * 2000 + "Orbon" + " tail" * 500
    start = text.index("Orbon")
    cell = result_html(
        OutputShape.ANSWER,
        {"answer": "Orbon", "score": 0.9, "start": start, "end": start + 5, "null_score": 0.0},
        Item(key="k", text=text, fields={"question": "Where?"}),
    )
    assert ">Orbon</mark>" in cell and cell.count("…") == 2
    assert len(cell) < SHOWN_CHARS + 500


def test_overlapping_marks_keep_the_first_and_words_split_at_mark_edges() -> None:
    text = "zhangwei@example.cn"
    marks = [Mark(0, 8, "ent", "PERSON", "PERSON"), Mark(5, 19, "ent", "EMAIL", "EMAIL")]
    shown = render(text, 0, len(text), marks, [(0, 19, 1.0)])
    assert shown.count("<mark") == 1 and "<sub>PERSON</sub>" in shown
    # one word across the mark's edge: coloured on both sides, the tags properly nested
    assert shown == (
        '<mark class=ent title="PERSON"><span style="background:rgba(220,40,40,1.00)" '
        'title="+1">zhangwei</span></mark><sub>PERSON</sub><span style="background:'
        'rgba(220,40,40,1.00)" title="+1">@example.cn</span>'
    )


def test_the_report_page_draws_span_rows_from_their_items(tmp_path: Path) -> None:
    """write_html loads the items of a span task (the context and question are there)."""
    rows = [
        {"key": "q1", "status": "ok", "output": answer_output(), "explanation": None},
        {"key": "q2", "status": "invalid", "output": None, "error": f"bad {HOSTILE}"},
    ]
    client = SimpleNamespace(
        status=lambda job_id: SimpleNamespace(
            task="answer-question",
            model="tiny-qa",
            model_version="1",
            status="partially_failed",
            counts=SimpleNamespace(ok=1, invalid=1, error=0, total=2),
        ),
        catalog=load_catalog(),
        ledger=SimpleNamespace(iter_items=lambda job_id: iter([answer_item()])),
        results=lambda job_id: iter(rows),
        settings=None,
    )
    out = tmp_path / "report.html"
    assert write_html(client, "job-1", out, 10) == 2  # type: ignore[arg-type]
    page = out.read_text(encoding="utf-8")
    no_markup_from_input(page)
    assert ">Orbon</mark>" in page and html.escape(QUESTION) in page
    assert f"bad {html.escape(HOSTILE)}" in page
