"""`sluice results JOB --format html`: a page a person can read. Images get their saliency
grid as a heatmap over the picture; texts, audio segments and record features get coloured
attributions (red pushed towards the predicted label, blue away from it). Span tasks show
their input with the spans marked (ops/report_spans.py): the question and the context with
the answer, the text with its entities. Detections draw their boxes on the picture, and a
heatmap per explained box (ops/report_boxes.py)."""

import html
import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from ops import report_boxes
from ops.report_spans import SPAN_OUTPUTS
from ops.report_spans import explanation_html as span_explanation_html
from ops.report_spans import result_html as span_result_html
from producers.adapters import ModalityAdapter, adapter_for
from producers.client import Client
from schemas.jobs import Item
from schemas.modalities import Modality
from schemas.states import ExplanationStatus, ItemStatus
from schemas.task_spec import OutputShape


def write_html(client: Client, job_id: str, out: Path, limit: int) -> int:
    view = client.status(job_id)
    drawing = drawing_for(client, view.task)
    rows = list(islice(client.results(job_id), limit))
    shown = {row["key"] for row in rows}  # only the rows drawn are kept in memory
    items = items_of(client, job_id, shown) if drawing.needs_items else {}
    body = [
        f"<h1>Sluice job {html.escape(job_id)}</h1>",
        f"<p>{html.escape(view.task)} with {html.escape(view.model)} "
        f"(version {html.escape(view.model_version)}): {view.status}, "
        f"{view.counts.ok} ok, {view.counts.invalid} invalid, {view.counts.error} error; "
        f"showing {len(rows)} of {view.counts.total}.</p>",
        "<table><tr><th>key</th><th>status</th><th>result</th><th>explanation</th></tr>",
    ]
    for row in rows:
        body.append(row_html(row, drawing.adapter, items.get(row["key"]), client, drawing.shape))
    body.append("</table>")
    out.write_text(
        PAGE.format(title=f"Sluice {job_id}", body="\n".join(body), fonts=FONTS), encoding="utf-8"
    )
    return len(rows)


@dataclass(frozen=True)
class Drawing:
    """How a task's rows are drawn: by its modality's adapter, or by its output's shape."""

    adapter: ModalityAdapter
    shape: OutputShape | None

    @property
    def needs_items(self) -> bool:
        """Span tasks draw their input (the context, the text) with the spans marked,
        detections their picture with the boxes, images their picture under the heatmap."""
        return self.adapter.report_needs_items or self.shape in SPAN_OUTPUTS


def drawing_for(client: Client, task: str) -> Drawing:
    # a task this process does not know (registered elsewhere) is shown as text
    spec = client.catalog.get(task) if task in client.catalog else None
    return Drawing(
        adapter_for(spec.modality if spec else Modality.TEXT), spec.output if spec else None
    )


def items_of(client: Client, job_id: str, keys: set[str]) -> dict[str, Item]:
    return {i.key: i for i in client.ledger.iter_items(job_id) if i.key in keys}


def row_html(
    row: dict[str, Any],
    adapter: ModalityAdapter,
    item: Item | None,
    client: Client,
    shape: OutputShape | None = None,
) -> str:
    ok = row["status"] == ItemStatus.OK
    spans = shape if shape in SPAN_OUTPUTS else None
    boxes = shape == OutputShape.DETECTIONS
    result = None
    if ok and spans:
        result = span_result_html(spans, row.get("output") or {}, item)
    elif ok and boxes:
        result = report_boxes.result_html(row.get("output") or {}, item, client.settings)
    cells = [html.escape(row["key"]), html.escape(row["status"]), result or _result(row)]
    expl = row.get("explanation")
    if not expl:
        cells.append("")
    elif expl.get("status") != ExplanationStatus.OK:
        cells.append(f"<i>explanation failed: {html.escape(str(expl.get('error')))}</i>")
    elif spans:
        cells.append(span_explanation_html(spans, expl, item))
    elif boxes:
        cells.append(report_boxes.explanation_html(expl, item, client.settings))
    else:
        cells.append(adapter.explanation_html(expl, item, client.settings))
    # dir=auto: a cell of Arabic or Hebrew is laid out right to left
    return "<tr>" + "".join(f"<td dir=auto>{c}</td>" for c in cells) + "</tr>"


def _result(row: dict[str, Any]) -> str:
    out = row.get("output") or {}
    if row["status"] != ItemStatus.OK:
        return f"<span class=err>{html.escape(str(row.get('error')))}</span>"
    if "label" in out:
        return f"<b>{html.escape(str(out['label']))}</b> {out.get('score', 0):.3f}"
    if "value" in out:
        return f"<b>{out['value']:.4g}</b> {html.escape(str(out.get('target') or ''))}"
    if "text" in out:
        return html.escape(out["text"])
    return html.escape(json.dumps(out)[:200])


# Named fonts of Debian's fonts-noto-core and fonts-noto-cjk (.ci/run installs them): Chinese,
# Japanese and Arabic show as text, never as boxes; no web font is fetched.
FONTS = (
    '"Noto Sans", "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK KR", '
    '"Noto Sans Arabic", "Noto Naskh Arabic", "Noto Sans Hebrew", sans-serif'
)

PAGE = """<!doctype html><html><head><meta charset=utf-8><title>{title}</title><style>
body{{font-family:{fonts};margin:2em}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}}
.chip{{padding:1px 3px;border-radius:3px;display:inline-block;margin:1px}}
.bar{{padding:2px 4px;margin:1px 0}} .err{{color:#a00}} img{{image-rendering:pixelated}}
mark{{background:#fde68a;outline:2px solid #b45309;border-radius:2px}} mark.ent{{background:#bfdbfe;
outline-color:#1d4ed8}} .ctx,.q{{max-width:60em;margin:3px 0}} sub{{color:#555}}
</style></head><body>
{body}
<p>Red: pushed towards the predicted label (or value); blue: pushed away. Colour strength is
relative to the strongest attribution of each item.</p></body></html>
"""
