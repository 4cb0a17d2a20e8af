"""`sluice results JOB --format html`: a page a person can read. Images get their saliency
grid as a heatmap over the picture; texts, audio segments and record features get coloured
attributions (red pushed towards the predicted label, blue away from it)."""

import base64
import html
import io
import json
from itertools import islice
from pathlib import Path
from typing import Any

from producers.client import Client
from schemas.jobs import Item
from schemas.media import MediaRefError, confined_path, decode_inline
from schemas.tasks import task_info

THUMB = 160


def write_html(client: Client, job_id: str, out: Path, limit: int) -> int:
    view = client.status(job_id)
    modality = task_info(view.task).modality
    items = {i.key: i for i in client.ledger.iter_items(job_id)} if modality == "image" else {}
    rows = list(islice(client.results(job_id), limit))
    body = [
        f"<h1>Sluice job {html.escape(job_id)}</h1>",
        f"<p>{html.escape(view.task)} with {html.escape(view.model)} "
        f"(version {html.escape(view.model_version)}): {view.status}, "
        f"{view.counts.ok} ok, {view.counts.invalid} invalid, {view.counts.error} error; "
        f"showing {len(rows)} of {view.counts.total}.</p>",
        "<table><tr><th>key</th><th>status</th><th>result</th><th>explanation</th></tr>",
    ]
    for row in rows:
        body.append(_row(row, modality, items.get(row["key"]), client))
    body.append("</table>")
    out.write_text(PAGE.format(title=f"Sluice {job_id}", body="\n".join(body)), encoding="utf-8")
    return len(rows)


def _row(row: dict[str, Any], modality: str, item: Item | None, client: Client) -> str:
    cells = [html.escape(row["key"]), html.escape(row["status"]), _result(row)]
    expl = row.get("explanation")
    if not expl:
        cells.append("")
    elif expl.get("status") != "ok":
        cells.append(f"<i>explanation failed: {html.escape(str(expl.get('error')))}</i>")
    elif modality == "image":
        cells.append(_image_cell(expl, item, client))
    elif modality == "records":
        cells.append(_records_cell(expl))
    else:
        cells.append(_chips(expl["tokens"], expl["attributions"]))
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _result(row: dict[str, Any]) -> str:
    out = row.get("output") or {}
    if row["status"] != "ok":
        return f"<span class=err>{html.escape(str(row.get('error')))}</span>"
    if "label" in out:
        return f"<b>{html.escape(str(out['label']))}</b> {out.get('score', 0):.3f}"
    if "value" in out:
        return f"<b>{out['value']:.4g}</b> {html.escape(str(out.get('target') or ''))}"
    if "text" in out:
        return html.escape(out["text"])
    return html.escape(json.dumps(out)[:200])


def _colour(value: float, scale: float) -> str:
    alpha = min(1.0, abs(value) / scale) if scale else 0.0
    rgb = "220,40,40" if value >= 0 else "40,90,220"
    return f"rgba({rgb},{alpha:.2f})"


def _chips(tokens: list[str], scores: list[float]) -> str:
    scale = max((abs(s) for s in scores), default=0.0)
    return " ".join(
        f"<span class=chip style='background:{_colour(s, scale)}' "
        f"title='{s:+.4g}'>{html.escape(t)}</span>"
        for t, s in zip(tokens, scores, strict=False)
    )


def _records_cell(expl: dict[str, Any]) -> str:
    top = (expl.get("detail") or {}).get("top") or []
    scale = max((abs(f["attribution"]) for f in top), default=0.0)
    lines = [
        f"<div class=bar style='background:{_colour(f['attribution'], scale)}'>"
        f"{html.escape(f['feature'])} = {f['value']:.4g} "
        f"(mean {f['baseline']:.4g}): {f['attribution']:+.4g}</div>"
        for f in top
    ]
    return "".join(lines)


def _image_cell(expl: dict[str, Any], item: Item | None, client: Client) -> str:
    from PIL import Image

    detail = expl.get("detail") or {}
    rows, cols = detail.get("grid", [0, 0])
    try:
        image = Image.open(io.BytesIO(_source_bytes(item, client))).convert("RGB")
    except (OSError, ValueError, MediaRefError) as exc:
        return f"<i>image unavailable ({html.escape(str(exc))})</i>"
    image.thumbnail((THUMB, THUMB))
    if image.width < THUMB // 2:  # tiny inputs (8x8 digits) are enlarged to be seen
        factor = THUMB // max(image.width, image.height)
        image = image.resize(
            (image.width * factor, image.height * factor), Image.Resampling.NEAREST
        )
    overlay = heatmap(expl["attributions"], rows, cols, image.size)
    blended = Image.alpha_composite(image.convert("LA").convert("RGBA"), overlay)
    return f"{_png(image)} {_png(blended)}"


def heatmap(scores: list[float], rows: int, cols: int, size: tuple[int, int]) -> Any:
    """An RGBA layer: red where a cell pushed towards the label, blue where it pushed away."""
    from PIL import Image

    scale = max((abs(s) for s in scores), default=0.0) or 1.0
    cells = Image.new("RGBA", (cols, rows))
    cells.putdata(
        [
            (220, 40, 40, int(200 * min(1, s / scale)))
            if s >= 0
            else (40, 90, 220, int(200 * min(1, -s / scale)))
            for s in scores
        ]
    )
    return cells.resize(size, Image.Resampling.BILINEAR)


def _source_bytes(item: Item | None, client: Client) -> bytes:
    if item is None:
        raise ValueError("no such item")
    if item.data is not None:
        return decode_inline(item.data, client.settings.max_inline_bytes)
    assert item.path is not None
    real = confined_path(
        item.path, client.settings.input_root_paths(), client.settings.max_media_bytes
    )
    return Path(real).read_bytes()


def _png(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


PAGE = """<!doctype html><html><head><meta charset=utf-8><title>{title}</title><style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}}
.chip{{padding:1px 3px;border-radius:3px;display:inline-block;margin:1px}}
.bar{{padding:2px 4px;margin:1px 0}} .err{{color:#a00}} img{{image-rendering:pixelated}}
</style></head><body>
{body}
<p>Red: pushed towards the predicted label (or value); blue: pushed away. Colour strength is
relative to the strongest attribution of each item.</p></body></html>
"""
