"""An audio row's explanation drawn over its waveform: each time segment a band coloured by
its attribution (red towards the label, blue away), the clip's envelope on top."""

import html
import io
from typing import Any

from producers.adapters.html_cells import chips, colour, png

WIDTH, HEIGHT = 480, 72


def waveform_cell(explanation: dict[str, Any], clip: bytes | None) -> str:
    """The waveform with the segments over it (when the clip can be read), and the segments
    as coloured words below, which is all a clip that cannot be read gets."""
    words = chips(explanation.get("tokens") or [], explanation.get("attributions") or [])
    if clip is None:
        return words
    try:
        picture = draw(clip, explanation)
    except (RuntimeError, ValueError, OSError) as exc:  # libsndfile's errors are RuntimeErrors
        return f"<i>waveform unavailable ({html.escape(str(exc))})</i><br>{words}"
    return f"{png(picture, 'the waveform with the explained segments over it')}<br>{words}"


def draw(clip: bytes, explanation: dict[str, Any]) -> Any:
    import numpy as np
    import soundfile as sf
    from PIL import Image, ImageDraw

    samples, rate = sf.read(io.BytesIO(clip), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    seconds = max(len(mono) / rate, 1e-9)
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    pen = ImageDraw.Draw(image, "RGBA")
    scores = [float(s) for s in explanation.get("attributions") or []]
    scale = max((abs(s) for s in scores), default=0.0)
    segments = (explanation.get("detail") or {}).get("segments") or []
    for (start, end), score in zip(segments, scores, strict=False):
        left, right = (int(WIDTH * float(t) / seconds) for t in (start, end))
        pen.rectangle([left, 0, max(left, right - 1), HEIGHT], fill=_rgba(colour(score, scale)))
    columns = np.array_split(mono, WIDTH) if len(mono) >= WIDTH else [mono]
    peak = float(np.abs(mono).max()) or 1.0
    middle = HEIGHT / 2
    for x, column in enumerate(columns):
        if len(column):
            low, high = float(column.min()) / peak, float(column.max()) / peak
            reach = 0.8 * middle  # the bands show above and below the loudest sample
            pen.line([x, middle - high * reach, x, middle - low * reach], fill=(30, 30, 30, 170))
    return image


def _rgba(css: str) -> tuple[int, int, int, int]:
    """`rgba(220,40,40,0.50)` as PIL's fill."""
    r, g, b, a = css[css.index("(") + 1 : -1].split(",")
    return int(r), int(g), int(b), int(float(a) * 160)
