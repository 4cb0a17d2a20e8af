"""Text: a column of strings in files, tables and API bodies; words coloured in the report."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from producers.adapters.base import ModalityAdapter, ReadOptions
from producers.adapters.html_cells import chips
from producers.readers import iter_rows_to_items
from producers.training_checks import need, problems
from schemas.jobs import Item
from schemas.modalities import Modality
from schemas.settings import Settings
from schemas.training import DataSource, TrainSpec


class TextItems(ModalityAdapter):
    modality = Modality.TEXT

    def iter_items_from_rows(
        self, columns: list[str], rows: Iterator[dict[str, Any]], opts: ReadOptions
    ) -> Iterator[Item]:
        return iter_rows_to_items(
            columns,
            rows,
            text_column=opts.text_column,
            key_column=opts.key_column,
            max_chars=opts.settings.max_text_chars,
            source=opts.source,
            keep_fields=opts.keep_fields,
            needs_text=opts.needs_text,
        )

    def body_fields(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        return {**(body.get("fields") or {}), "text": body.get("text")}

    def table_columns(
        self, text_column: str, media_column: str | None, model_path: Path | None
    ) -> list[tuple[str, str, str]]:
        return [(text_column, "text", "text column")]

    def training_inputs(
        self,
        rows: list[dict[str, Any]],
        columns: list[str],
        spec: TrainSpec,
        source: DataSource,
        settings: Settings,
    ) -> list[str]:
        column = spec.text_column
        need(columns, column, "--text-column", source)
        if spec.is_tagger:  # a text or a list of tokens: checked with the spans or tags
            return [column]
        empty = [
            f"row {n}"
            for n, r in enumerate(rows, 1)
            if not isinstance(r.get(column), str) or not r[column].strip()
        ]
        problems(empty, f"rows with no text in {column!r}")
        return [column]

    def explanation_html(
        self, explanation: dict[str, Any], item: Item | None, settings: Settings
    ) -> str:
        return chips(explanation.get("tokens") or [], explanation.get("attributions") or [])
