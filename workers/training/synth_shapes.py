"""Synthetic shapes: coloured circles, squares and triangles on a noisy background, with their
captions ("a small red circle") and boxes, for training and checking an image-text model and
a detector without a downloaded dataset. Every image says exactly what is in it, so retrieval
and boxes can be checked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
SIZES = ("small", "large")


@dataclass(frozen=True)
class Shape:
    shape: str
    colour: str
    box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax in pixels (exclusive ends)


def caption(shape: str, colour: str, size: str) -> str:
    return f"a {size} {colour} {shape}"


def all_captions() -> list[str]:
    return [caption(s, c, z) for z in SIZES for c in COLOURS for s in SHAPES]


def _background(side: int, rng: np.random.Generator) -> Image.Image:
    grey = rng.integers(90, 170)
    noise = rng.normal(0, 12, (side, side, 3)) + grey
    return Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")


def _draw(draw: ImageDraw.ImageDraw, item: Shape) -> None:
    x0, y0, x1, y1 = item.box
    fill = COLOURS[item.colour]
    if item.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif item.shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=fill)


def captioned_shape(side: int, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One shape: small (about two fifths of the side) or large (about four fifths),
    anywhere inside the image; its caption."""
    shape = str(rng.choice(SHAPES))
    colour = str(rng.choice(list(COLOURS)))
    size = str(rng.choice(SIZES))
    low, high = (0.35, 0.45) if size == "small" else (0.7, 0.9)
    extent = int(rng.uniform(low, high) * side)
    x0, y0 = (int(v) for v in rng.integers(0, side - extent + 1, 2))
    image = _background(side, rng)
    _draw(ImageDraw.Draw(image), Shape(shape, colour, (x0, y0, x0 + extent, y0 + extent)))
    return image, caption(shape, colour, size)


def scene(
    side: int, rng: np.random.Generator, most: int = 3, extent: tuple[float, float] = (0.2, 0.45)
) -> tuple[Image.Image, list[Shape]]:
    """An image of 1 to `most` shapes that do not overlap, and their boxes."""
    image = _background(side, rng)
    draw = ImageDraw.Draw(image)
    placed: list[Shape] = []
    for _ in range(int(rng.integers(1, most + 1))):
        for _attempt in range(20):
            n = int(rng.uniform(*extent) * side)
            x0, y0 = (int(v) for v in rng.integers(0, side - n + 1, 2))
            box = (x0, y0, x0 + n, y0 + n)
            if all(_apart(box, other.box) for other in placed):
                item = Shape(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), box)
                _draw(draw, item)
                placed.append(item)
                break
    return image, placed


def _apart(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
