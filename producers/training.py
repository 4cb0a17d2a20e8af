"""`sluice train` at submit: every check that can fail does so here, with a message that says
what to change, before a run is recorded or queued."""

import math
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from producers.media import media_item
from schemas.settings import Settings
from schemas.training import (
    DP_TASKS,
    MODEL_SELECTOR_RE,
    DataSource,
    DPSpec,
    TrainingError,
    TrainSpec,
)
from storage.datasets import _MALFORMED, fingerprint, read_rows, read_table

MAX_PROBLEMS = 5
BASE_TASK = {"classify-text": "embed"}  # a text base is any encoder with a tokenizer
MIN_REGRESSION_ROWS = 20  # the held-out part needs a row of each target quartile


def load_source(
    data: str, data_url: str | None
) -> tuple[DataSource, list[str], list[dict[str, Any]]]:
    if data_url:
        source = DataSource(url=data_url, table=data)
        columns, rows = read_table(data_url, data)
    else:
        path = Path(data).expanduser().resolve()
        source = DataSource(file=str(path))
        columns, rows = read_rows(path)
    return source, columns, list(rows)


def _need(columns: list[str], name: str, option: str, source: DataSource) -> None:
    if name not in columns:
        raise TrainingError(
            f"{source.describe()}: column {name!r} not found ({option}); "
            f"columns are: {', '.join(columns) or '(none)'}"
        )


def _problems(found: list[str], what: str) -> None:
    if found:
        more = f" (and {len(found) - MAX_PROBLEMS} more)" if len(found) > MAX_PROBLEMS else ""
        raise TrainingError(f"{what}: {'; '.join(found[:MAX_PROBLEMS])}{more}")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_labels(
    rows: list[dict[str, Any]], spec: dict[str, Any], declared: list[str] | None
) -> list[str]:
    column = spec["label_column"]
    missing = [f"row {n}" for n, r in enumerate(rows, 1) if r.get(column) in (None, "")]
    _problems(missing, f"rows with no label in {column!r}")
    counts = Counter(str(r[column]) for r in rows)
    if len(counts) < 2:
        raise TrainingError(
            f"column {column!r} holds one class only ({next(iter(counts))!r}); "
            "a classifier needs at least two"
        )
    if declared is not None:
        unseen = sorted(set(counts) - set(declared))
        _problems([repr(u) for u in unseen], "labels in the data that --labels does not list")
        absent = sorted(set(declared) - set(counts))
        _problems(
            [repr(a) for a in absent],
            "labels in --labels that no row has (the model could never learn them)",
        )
    rare = sorted(label for label, n in counts.items() if n < 2)
    _problems(
        [f"{label!r} has 1 row" for label in rare],
        "every label needs at least 2 rows, so that it is both trained on and held out",
    )
    heldout = math.ceil(len(rows) * spec["holdout_fraction"])
    if heldout < len(counts) or len(rows) - heldout < len(counts):
        raise TrainingError(
            f"{len(rows)} rows are too few for {len(counts)} labels with a "
            f"{spec['holdout_fraction']:.0%} held-out part; add rows"
        )
    return sorted(counts)


def check_inputs(
    rows: list[dict[str, Any]],
    columns: list[str],
    spec: dict[str, Any],
    source: DataSource,
    settings: Settings,
) -> list[str]:
    """Checks the input columns; returns the feature columns (records) or []."""
    task = spec["task"]
    if task == "classify-text":
        _need(columns, spec["text_column"], "--text-column", source)
        empty = [
            f"row {n}"
            for n, r in enumerate(rows, 1)
            if not isinstance(r.get(spec["text_column"]), str) or not r[spec["text_column"]].strip()
        ]
        _problems(empty, f"rows with no text in {spec['text_column']!r}")
        return []
    if task in ("classify-image", "classify-audio"):
        _need(columns, spec["media_column"], "--media-column", source)
        base = Path(spec["media_base_dir"]) if spec.get("media_base_dir") else None
        bad = []
        for n, row in enumerate(rows, 1):
            value = row.get(spec["media_column"])
            if isinstance(value, str) and value.startswith("data:"):
                bad.append(f"row {n}: inline data: URIs cannot be trained on; use files")
                continue
            item = media_item(str(n), value, base, settings)
            if item.invalid:
                bad.append(f"row {n}: {item.invalid}")
        _problems(bad, "media that cannot be read")
        return []
    excluded = {spec["label_column"], spec.get("key_column")}
    features = spec.get("feature_columns") or [c for c in columns if c not in excluded]
    leaked = [c for c in features if c in excluded]
    if leaked:
        raise TrainingError(
            f"--feature-columns names {', '.join(map(repr, leaked))}, the "
            "label or key column: a model must not learn from them"
        )
    for name in features:
        _need(columns, name, "--feature-columns", source)
    if not features:
        raise TrainingError(f"{source.describe()}: no feature columns besides the label")
    bad = [
        f"row {n} column {c!r} = {r.get(c)!r}"
        for n, r in enumerate(rows, 1)
        for c in features
        if _number(r.get(c)) is None
    ]
    _problems(bad, "records features must be finite numbers")
    return list(features)


def check_regression_target(rows: list[dict[str, Any]], column: str) -> None:
    bad = [
        f"row {n} = {r.get(column)!r}"
        for n, r in enumerate(rows, 1)
        if _number(r.get(column)) is None
    ]
    _problems(bad, f"target column {column!r} must hold finite numbers")
    if len(rows) < MIN_REGRESSION_ROWS:
        raise TrainingError(
            f"{len(rows)} rows are too few to train and evaluate a regressor; "
            f"give at least {MIN_REGRESSION_ROWS}"
        )


def build_spec(
    settings: Settings,
    resolve_base: Any,
    *,
    task: str,
    name: str,
    data: str,
    label_column: str,
    data_url: str | None = None,
    labels: list[str] | None = None,
    base: str | None = None,
    dp_epsilon: float | None = None,
    dp_delta: float | None = None,
    dp_max_grad_norm: float = 1.0,
    **options: Any,
) -> TrainSpec:
    """Read the data once, check everything, and return the spec the worker will train."""
    if (dp_epsilon is None) != (dp_delta is None):
        raise TrainingError("differential privacy needs both --dp-epsilon and --dp-delta")
    fields: dict[str, Any] = {
        "task": task,
        "name": name,
        "label_column": label_column,
        **{k: v for k, v in options.items() if v is not None},
    }
    try:  # the request's own shape first: a bad name or number fails before any reading
        spec = TrainSpec(data=DataSource(file=data), **fields)
        dp = (
            DPSpec(epsilon=dp_epsilon, delta=dp_delta, max_grad_norm=dp_max_grad_norm)
            if (dp_epsilon is not None and dp_delta is not None)
            else None
        )
    except ValidationError as exc:
        raise TrainingError(_validation_message(exc)) from exc
    if dp and task not in DP_TASKS:
        raise TrainingError(
            f"--dp-epsilon is supported for {', '.join(DP_TASKS)}; {task}'s "
            "model family has layers Opacus cannot train privately"
        )
    if dp and spec.train_encoder:
        raise TrainingError(
            "--dp-epsilon trains the classification head only; drop --train-encoder"
        )
    source, columns, rows = load_source(data, data_url)
    _problems(
        [r[_MALFORMED] for r in rows if _MALFORMED in r],
        f"{source.describe()}: lines that are not JSON objects; fix or remove them",
    )
    if not rows:
        raise TrainingError(f"{source.describe()}: no rows to train on")
    _need(columns, label_column, "--label-column", source)
    if spec.key_column:
        _need(columns, spec.key_column, "--key-column", source)
    if source.file and task in ("classify-image", "classify-audio"):
        fields["media_base_dir"] = str(Path(source.file).parent)
    features = check_inputs(rows, columns, {**spec.model_dump(), **fields}, source, settings)
    if task == "regress-records":
        check_regression_target(rows, label_column)
        if labels:
            raise TrainingError("--labels is for classifiers; regress-records has a target")
        class_names: list[str] = []
    else:
        class_names = check_labels(rows, spec.model_dump(), labels)
    spec = spec.model_copy(
        update={
            "data": source,
            "feature_columns": features,
            "labels": class_names,
            "dp": dp,
            "n_rows": len(rows),
            "media_base_dir": fields.get("media_base_dir"),
        }
    )
    if base or task == "classify-text":
        base_ref = base or settings.default_model
        # a registered version is a model of the task itself; a text directory any encoder
        base_task = task if MODEL_SELECTOR_RE.match(base_ref) else BASE_TASK.get(task, task)
        ref = resolve_base(base_ref, base_task)
        if spec.modality == "records":
            _check_records_base(ref.path, base_ref, spec)
        spec = spec.model_copy(update={"base": str(ref.path), "base_ref": ref.name})
    columns_used = spec.used_columns()
    kept = [{c: row.get(c) for c in columns_used} for row in rows]
    return spec.model_copy(update={"data_fingerprint": fingerprint(kept, columns_used)})


def _check_records_base(path: Path, ref: str, spec: TrainSpec) -> None:
    """A records model warm-starts only from one with the same inputs and outputs."""
    import json

    from producers.models import record_features

    names = [f["name"] for f in record_features(path)]
    if names != spec.feature_columns:
        raise TrainingError(
            f"--base {ref} reads the features {names}; this data gives "
            f"{spec.feature_columns}; pass --feature-columns in its order"
        )
    labels = json.loads((path / "config.json").read_text()).get("labels")
    if spec.is_classifier and labels != spec.labels:
        raise TrainingError(
            f"--base {ref} predicts the labels {labels}; this data has {spec.labels}"
        )


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "request"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
