"""Records: rows of features checked against the model's feature schema (features.json), from
a file, a table (the model's feature columns) or an API body (`record`); features coloured by
attribution in the report."""

import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from producers.adapters.base import ModalityAdapter, ReadOptions
from producers.adapters.html_cells import colour
from producers.model_refs import record_features
from producers.readers import iter_build_items
from producers.training_checks import need, number, problems
from schemas.errors import SluiceError, TrainingError
from schemas.jobs import Item
from schemas.modalities import Modality
from schemas.records import check_record
from schemas.settings import Settings
from schemas.training import DataSource, TrainSpec


def record_item(
    key: str, row: dict[str, Any], features: list[dict[str, Any]], ignore: tuple[str, ...]
) -> Item:
    values, problem = check_record(row, features, ignore)
    return Item(key=key, invalid=problem) if problem else Item(key=key, record=values)


class RecordItems(ModalityAdapter):
    modality = Modality.RECORDS

    def iter_items_from_rows(
        self, columns: list[str], rows: Iterator[dict[str, Any]], opts: ReadOptions
    ) -> Iterator[Item]:
        if opts.model_path is None:
            raise SluiceError("records are checked against a model's features: pass --model")
        features = record_features(opts.model_path)
        ignore = (opts.key_column,) if opts.key_column else ()
        return iter_build_items(
            columns,
            rows,
            key_column=opts.key_column,
            source=opts.source,
            build=lambda key, row: record_item(key, row, features, ignore),
        )

    @property
    def reads_model_schema(self) -> bool:
        return True

    def body_fields(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        if not isinstance(body.get("record"), dict):
            raise SluiceError(f"item {n}: records tasks need `record`: {{feature: value}}")
        return dict(body["record"])

    def table_columns(
        self, text_column: str, media_column: str | None, model_path: Path | None
    ) -> list[tuple[str, str, str]]:
        if model_path is None:
            raise SluiceError("records are read by a model's feature columns: pass --model")
        return [(f["name"], f["name"], "feature column") for f in record_features(model_path)]

    def training_inputs(
        self,
        rows: list[dict[str, Any]],
        columns: list[str],
        spec: TrainSpec,
        source: DataSource,
        settings: Settings,
    ) -> list[str]:
        excluded = {spec.label_column, spec.key_column}
        features = spec.feature_columns or [c for c in columns if c not in excluded]
        leaked = [c for c in features if c in excluded]
        if leaked:
            raise TrainingError(
                f"--feature-columns names {', '.join(map(repr, leaked))}, "
                "the label or key column: a model must not learn from them"
            )
        for name in features:
            need(columns, name, "--feature-columns", source)
        if not features:
            raise TrainingError(f"{source.describe()}: no feature columns besides the label")
        bad = [
            f"row {n} column {c!r} = {r.get(c)!r}"
            for n, r in enumerate(rows, 1)
            for c in features
            if number(r.get(c)) is None
        ]
        problems(bad, "records features must be finite numbers")
        return list(features)

    def check_base(self, path: Path, ref: str, spec: TrainSpec) -> None:
        """A records model warm-starts only from one with the same inputs and outputs."""
        names = [f["name"] for f in record_features(path)]
        if names != spec.input_columns:
            raise TrainingError(
                f"--base {ref} reads the features {names}; this data gives "
                f"{spec.input_columns}; pass --feature-columns in its order"
            )
        labels = json.loads((path / "config.json").read_text()).get("labels")
        if spec.is_classifier and labels != spec.labels:
            raise TrainingError(
                f"--base {ref} predicts the labels {labels}; this data has {spec.labels}"
            )

    def explanation_html(
        self, explanation: dict[str, Any], item: Item | None, settings: Settings
    ) -> str:
        top = (explanation.get("detail") or {}).get("top") or []
        scale = max((abs(f["attribution"]) for f in top), default=0.0)
        return "".join(
            f"<div class=bar style='background:{colour(f['attribution'], scale)}'>"
            f"{html.escape(f['feature'])} = {f['value']:.4g} "
            f"(mean {f['baseline']:.4g}): {f['attribution']:+.4g}</div>"
            for f in top
        )
