"""Small HTML pieces the adapters draw report cells with."""

import base64
import html
import io
from typing import Any


def colour(value: float, scale: float) -> str:
    """Red pushed towards the prediction, blue away; stronger for larger attributions."""
    alpha = min(1.0, abs(value) / scale) if scale else 0.0
    rgb = "220,40,40" if value >= 0 else "40,90,220"
    return f"rgba({rgb},{alpha:.2f})"


def chips(tokens: list[str], scores: list[float]) -> str:
    scale = max((abs(s) for s in scores), default=0.0)
    return " ".join(
        f"<span class=chip style='background:{colour(s, scale)}' "
        f"title='{s:+.4g}'>{html.escape(t)}</span>"
        for t, s in zip(tokens, scores, strict=False)
    )


def png(image: Any, alt: str) -> str:
    """The picture inline; `alt` says what it shows to who cannot see it."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return f"<img src='data:image/png;base64,{data}' alt='{html.escape(alt)}'>"
