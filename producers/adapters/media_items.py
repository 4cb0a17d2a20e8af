"""Images and audio: references (paths under the input roots, file:// or data: URIs) from a
folder, a column of a file or table, or an API body. Nothing is decoded here (that is the
worker's job); every reference is checked against the input roots now and again there."""

import html
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from producers.adapters.base import ModalityAdapter, ReadOptions, need_column
from producers.adapters.html_cells import png
from producers.adapters.waveform import waveform_cell
from producers.readers import iter_build_items
from producers.training_checks import need, problems
from schemas.errors import InputFileError, MediaRefError
from schemas.jobs import Item
from schemas.media_refs import SUFFIXES, confined_path, decode_inline, parse_reference
from schemas.modalities import Modality
from schemas.object_refs import confined_uri, is_object_uri
from schemas.settings import Settings
from schemas.storable import escaped_text, shown_text
from schemas.training import DataSource, TrainSpec
from storage.media_sources import checked_object, checked_size, item_bytes
from storage.object_store import ObjectStore

THUMB = 160


def media_item(key: str, value: Any, base_dir: Path | None, settings: Settings) -> Item:
    """An item for a path, `file://` URI, `data:` URI or object-store URI (s3://...);
    `invalid` says why one is refused."""
    if not isinstance(value, str):
        what = "missing" if value is None else f"a {type(value).__name__}"
        return Item(
            key=key,
            invalid=f"media reference is {what}; expected a path, a file:// URI, a data: URI "
            "or an object-store URI (s3://...)",
        )
    try:
        if is_object_uri(value):
            store = ObjectStore(settings.storage_options)
            found = checked_object(
                value, settings.object_prefix_list(), settings.max_media_bytes, store
            )
            return Item(key=key, path=found.uri, stamp=found.stamp)
        kind, ref = parse_reference(value, base_dir)
        if kind == "data":
            decode_inline(ref, settings.max_inline_bytes)  # refuse now, not in the worker
            return Item(key=key, data=ref)
        real = confined_path(ref, settings.input_root_paths(), settings.max_media_bytes)
        return Item(key=key, path=str(real))
    except MediaRefError as exc:
        return Item(key=key, invalid=str(exc))
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL, a name too long, ~nosuchuser
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Item(
            key=key, invalid=f"media reference {shown_text(value)} is not a usable path ({why})"
        )


class MediaItems(ModalityAdapter):
    def __init__(self, modality: Modality) -> None:
        self.modality = modality

    def iter_items_from_rows(
        self, columns: list[str], rows: Iterator[dict[str, Any]], opts: ReadOptions
    ) -> Iterator[Item]:
        need_column(columns, opts.media_column, "media column", opts.source)
        return iter_build_items(
            columns,
            rows,
            key_column=opts.key_column,
            source=opts.source,
            build=lambda key, row: media_item(
                key, row.get(opts.media_column), opts.base_dir, opts.settings
            ),
        )

    def items_from_prefix(self, uri: str, settings: Settings) -> list[Item]:
        """Every object of the modality under the prefix `uri` (one listing: its stamps are
        the ones pinned), keyed by its key relative to the prefix."""
        suffixes = SUFFIXES[self.modality.value]
        prefix = confined_uri(uri, settings.object_prefix_list()).rstrip("/") + "/"
        listed = [
            o
            for o in ObjectStore(settings.storage_options).list_objects(prefix)
            if Path(o.uri).suffix.lower() in suffixes
        ]
        if not listed:
            raise InputFileError(f"{uri}: no {self.modality} objects ({', '.join(suffixes)}) found")
        items = []
        for obj in listed:
            key = escaped_text(obj.uri[len(prefix) :])
            try:
                found = checked_size(obj, settings.max_media_bytes)
                items.append(Item(key=key, path=found.uri, stamp=found.stamp))
            except MediaRefError as exc:
                items.append(Item(key=key, invalid=str(exc)))
        return items

    def items_from_folder(self, folder: Path, settings: Settings) -> list[Item]:
        """Every file of the modality under `folder`, keyed by its path relative to it."""
        suffixes = SUFFIXES[self.modality.value]
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in suffixes and (p.is_file() or p.is_symlink())
        )
        if not files:
            raise InputFileError(
                f"{folder}: no {self.modality} files ({', '.join(suffixes)}) found"
            )
        # a name that is not valid Unicode keys its item escaped; the item ends invalid
        return [
            media_item(escaped_text(p.relative_to(folder).as_posix()), str(p), None, settings)
            for p in files
        ]

    def body_fields(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        return {"path": body.get("media")}

    def table_columns(
        self, text_column: str, media_column: str | None, model_path: Path | None
    ) -> list[tuple[str, str, str]]:
        if not media_column:
            raise InputFileError(
                f"{self.modality} tasks read media: name the column of paths "
                "or URIs with --media-column"
            )
        return [(media_column, "path", "media column")]

    def training_inputs(
        self,
        rows: list[dict[str, Any]],
        columns: list[str],
        spec: TrainSpec,
        source: DataSource,
        settings: Settings,
    ) -> list[str]:
        need(columns, spec.media_column, "--media-column", source)
        base = Path(spec.media_base_dir) if spec.media_base_dir else None
        bad = []
        for n, row in enumerate(rows, 1):
            value = row.get(spec.media_column)
            if isinstance(value, str) and value.startswith("data:"):
                bad.append(f"row {n}: inline data: URIs cannot be trained on; use files")
                continue
            item = media_item(str(n), value, base, settings)
            if item.invalid:
                bad.append(f"row {n}: {item.invalid}")
        problems(bad, "media that cannot be read")
        return [spec.media_column]

    @property
    def report_needs_items(self) -> bool:
        return True  # a picture under its heatmap, a waveform under its segments

    def explanation_html(
        self, explanation: dict[str, Any], item: Item | None, settings: Settings
    ) -> str:
        if self.modality is not Modality.IMAGE:  # audio: attribution per time segment
            return waveform_cell(explanation, clip_bytes(item, settings))
        return image_cell(explanation, item, settings)


def image_cell(explanation: dict[str, Any], item: Item | None, settings: Settings) -> str:
    """The picture, and its saliency grid as a heatmap over it."""
    from PIL import Image

    rows, cols = (explanation.get("detail") or {}).get("grid", [0, 0])
    try:
        image = upright_image(item, settings)
    except (OSError, ValueError, MediaRefError) as exc:
        return f"<i>image unavailable ({html.escape(str(exc))})</i>"
    image.thumbnail((THUMB, THUMB))
    if image.width < THUMB // 2:  # tiny inputs (8x8 digits) are enlarged to be seen
        factor = THUMB // max(image.width, image.height)
        image = image.resize(
            (image.width * factor, image.height * factor), Image.Resampling.NEAREST
        )
    overlay = heatmap(explanation["attributions"], rows, cols, image.size)
    blended = Image.alpha_composite(image.convert("LA").convert("RGBA"), overlay)
    return f"{png(image, 'the picture')} {png(blended, 'saliency heatmap over the picture')}"


def clip_bytes(item: Item | None, settings: Settings) -> bytes | None:
    try:
        return source_bytes(item, settings)
    except (OSError, ValueError, MediaRefError):
        return None


def upright_image(item: Item | None, settings: Settings) -> Any:
    """The item's picture in RGB, turned as its EXIF orientation says (as the worker reads
    it: workers/media_decoding.py), so a drawing over it lines up."""
    from PIL import Image, ImageOps

    image = Image.open(io.BytesIO(source_bytes(item, settings)))
    return ImageOps.exif_transpose(image).convert("RGB")


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


def source_bytes(item: Item | None, settings: Settings) -> bytes:
    """The item's media, read again under the input roots (never a path it was not given)."""
    if item is None:
        raise ValueError("no such item")
    return item_bytes(
        item.data,
        item.path,
        item.stamp,
        settings.media_limits(),
        ObjectStore(settings.storage_options),
    )
