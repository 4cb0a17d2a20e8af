"""The adapter contract: everything that differs between modalities on the way in (a row of
a file or table, a folder, an SQL column, an API body, training rows) and on the way out (the
HTML report), in one class per modality. Callers ask `adapter_for(modality)`; no other
module branches on the modality."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producers.readers import listed
from schemas.errors import InputFileError
from schemas.jobs import Item, check_unique_keys
from schemas.modalities import Modality
from schemas.settings import Settings
from schemas.training import DataSource, TrainSpec


@dataclass
class ReadOptions:
    """How to read one input's rows: its columns, where relative paths start, and (records)
    the model whose feature schema each row is checked against."""

    settings: Settings
    key_column: str | None = None
    text_column: str = "text"
    media_column: str = "path"
    base_dir: Path | None = None
    source: str = "rows"
    model_path: Path | None = None
    keep_fields: bool = False  # text items carry their row's other fields (Item.fields)
    needs_text: bool = True  # False: rows need no text column (the task reads the fields)


class ModalityAdapter:
    modality: Modality

    def items_from_rows(
        self, columns: list[str], rows: Iterator[dict[str, Any]], opts: ReadOptions
    ) -> list[Item]:
        """iter_items_from_rows, all at once, every repeated key named (DuplicateKeysError)."""
        items = list(self.iter_items_from_rows(columns, rows, opts))
        check_unique_keys(items)
        return items

    def iter_items_from_rows(
        self, columns: list[str], rows: Iterator[dict[str, Any]], opts: ReadOptions
    ) -> Iterator[Item]:
        """Rows (a file, a table, API bodies) to items as they are read; bad rows become
        `invalid` items; a problem of the whole input (a missing column) raises now."""
        raise NotImplementedError

    def items_from_folder(self, folder: Path, settings: Settings) -> list[Item]:
        raise InputFileError(
            f"{folder} is a folder; {self.modality} tasks read a JSONL, CSV or Parquet file"
        )

    def items_from_prefix(self, uri: str, settings: Settings) -> list[Item]:
        raise InputFileError(
            f"{uri} is not a .jsonl, .csv or .parquet object; {self.modality} tasks read a "
            "list file (a prefix of objects is read by image and audio tasks)"
        )

    def body_fields(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        """The fields of an API item (POST /v1/jobs `items`, /v1/events) that this modality
        reads, as the columns `items_from_rows` reads with the default ReadOptions."""
        raise NotImplementedError

    def table_columns(
        self, text_column: str, media_column: str | None, model_path: Path | None
    ) -> list[tuple[str, str, str]]:
        """`sluice enrich`: what to select, as (table column, row column, what a user calls
        it in a message)."""
        raise NotImplementedError

    def training_inputs(
        self,
        rows: list[dict[str, Any]],
        columns: list[str],
        spec: TrainSpec,
        source: DataSource,
        settings: Settings,
    ) -> list[str]:
        """Check the input columns of training rows; the columns the model reads, in order."""
        raise NotImplementedError

    def check_base(self, path: Path, ref: str, spec: TrainSpec) -> None:
        """A --base the spec's data cannot warm-start from raises TrainingError."""

    def explanation_html(
        self, explanation: dict[str, Any], item: Item | None, settings: Settings
    ) -> str:
        """An ok explanation as HTML for the report (attributions coloured)."""
        raise NotImplementedError

    @property
    def reads_model_schema(self) -> bool:
        """Whether items are checked against the model's own schema (records' features)."""
        return False

    @property
    def report_needs_items(self) -> bool:
        """Whether the report shows the input itself (an image), so needs the items."""
        return False


def need_column(columns: list[str], name: str, option: str, source: str) -> None:
    if name not in columns:
        raise InputFileError(
            f"{source}: {option} {name!r} not found; columns are: {listed(columns)}"
        )
