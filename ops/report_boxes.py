"""Report cells for `detect-objects`: the picture with its boxes drawn and labelled, and per
explained box its saliency grid as a heatmap over the picture with that box outlined (red
pushed the box's score up, blue down)."""

import html
from typing import Any

from producers.adapters.html_cells import png
from producers.adapters.media_items import THUMB, heatmap, upright_image
from schemas.errors import MediaRefError
from schemas.jobs import Item
from schemas.settings import Settings

BOX_COLOURS = ("#e11d48", "#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2")
SHOWN_BOX_MAPS = 4  # explained boxes drawn as heatmaps; all are in the stored row


def _picture(item: Item | None, settings: Settings) -> tuple[Any, float]:
    """The item's image at report size (enlarged when tiny) and the factor applied."""
    from PIL import Image

    image = upright_image(item, settings)
    factor = min(THUMB * 2 / max(image.size), 4.0)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR), factor


def _outline(image: Any, boxes: list[dict[str, Any]], factor: float) -> Any:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    for n, obj in enumerate(boxes):
        colour = BOX_COLOURS[n % len(BOX_COLOURS)]
        x0, y0, x1, y1 = (v * factor for v in obj["box"])
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        draw.text((x0 + 2, y0 + 1), f"{obj['label']} {obj['score']:.2f}", fill=colour)
    return image


def result_html(output: dict[str, Any], item: Item | None, settings: Settings) -> str:
    objects = output.get("objects") or []
    listing = ", ".join(
        f"<b>{html.escape(str(o['label']))}</b> {float(o['score']):.3f}" for o in objects
    )
    head = f"{len(objects)} object(s): {listing}" if objects else "<i>no object found</i>"
    try:
        image, factor = _picture(item, settings)
    except (OSError, ValueError, MediaRefError) as exc:
        return f"{head}<br><i>image unavailable ({html.escape(str(exc))})</i>"
    return f"{head}<br>{png(_outline(image, objects, factor), 'the picture with the boxes found')}"


def explanation_html(explanation: dict[str, Any], item: Item | None, settings: Settings) -> str:
    from PIL import Image

    detail = explanation.get("detail") or {}
    boxes = detail.get("boxes") or []
    if not boxes:
        return "<i>no object to explain</i>"
    try:
        image, factor = _picture(item, settings)
    except (OSError, ValueError, MediaRefError) as exc:
        return f"<i>image unavailable ({html.escape(str(exc))})</i>"
    rows, cols = detail["grid"]
    cells = []
    for obj in boxes[:SHOWN_BOX_MAPS]:
        overlay = heatmap(obj["attributions"], rows, cols, image.size)
        shown = Image.alpha_composite(image.convert("LA").convert("RGBA"), overlay)
        cells.append(png(_outline(shown, [obj], factor), "the box explained, with its heatmap"))
    more = len(boxes) - SHOWN_BOX_MAPS
    return " ".join(cells) + (f" <small>(+{more} more in the row)</small>" if more > 0 else "")
