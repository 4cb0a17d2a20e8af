"""`sluice train` at submit: every check that can fail does so here, with a message that says
what to change, before a run is recorded or queued. What differs by modality (which columns a
model reads, how they are checked) is asked of the task's modality adapter."""

import math
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from producers.adapters import adapter_for
from producers.training_checks import (
    check_entity_annotations,
    check_target_texts,
    need,
    number,
    problems,
)
from schemas.catalog import check_code_path, load_catalog
from schemas.errors import TrainingError
from schemas.object_refs import is_object_uri, normalised_uri
from schemas.settings import Settings
from schemas.task_spec import Target, TaskSpec
from schemas.training import (
    CURRENT_DEFAULTS,
    MODEL_SELECTOR_RE,
    DataSource,
    DPSpec,
    TrainSpec,
)
from storage.object_store import ObjectStore
from storage.row_sources import MALFORMED, fingerprint, read_all_rows, read_table

MIN_REGRESSION_ROWS = 20  # the held-out part needs a row of each target quartile


def load_source(
    data: str, data_url: str | None, settings: Settings
) -> tuple[DataSource, list[str], list[dict[str, Any]]]:
    """The rows of a SQL table, a file, or an object (s3://...: every worker host reads it
    again there, no shared filesystem needed)."""
    if data_url:
        source = DataSource(url=data_url, table=data)
        columns, rows = read_table(data_url, data)
        return source, columns, list(rows)
    location = (
        normalised_uri(data) if is_object_uri(data) else str(Path(data).expanduser().resolve())
    )
    source = DataSource(file=location)
    columns, listed = read_all_rows(location, ObjectStore(settings.storage_options))
    return source, columns, listed


def trainable_spec(spec: TaskSpec, trainable: list[str]) -> TaskSpec:
    if spec.training is None:
        raise TrainingError(
            f"task {spec.name!r} cannot be trained; trainable tasks: {', '.join(trainable)}"
        )
    return spec


def check_labels(
    rows: list[dict[str, Any]], spec: dict[str, Any], declared: list[str] | None
) -> list[str]:
    column = spec["label_column"]
    missing = [f"row {n}" for n, r in enumerate(rows, 1) if r.get(column) in (None, "")]
    problems(missing, f"rows with no label in {column!r}")
    counts = Counter(str(r[column]) for r in rows)
    if len(counts) < 2:
        raise TrainingError(
            f"column {column!r} holds one class only ({next(iter(counts))!r}); "
            "a classifier needs at least two"
        )
    if declared is not None:
        unseen = sorted(set(counts) - set(declared))
        problems([repr(u) for u in unseen], "labels in the data that --labels does not list")
        absent = sorted(set(declared) - set(counts))
        problems(
            [repr(a) for a in absent],
            "labels in --labels that no row has (the model could never learn them)",
        )
    rare = sorted(label for label, n in counts.items() if n < 2)
    problems(
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


def check_regression_target(rows: list[dict[str, Any]], column: str) -> None:
    bad = [
        f"row {n} = {r.get(column)!r}"
        for n, r in enumerate(rows, 1)
        if number(r.get(column)) is None
    ]
    problems(bad, f"target column {column!r} must hold finite numbers")
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
    catalog = load_catalog(settings.task_modules)
    task_spec = trainable_spec(catalog.get(task), catalog.trainable())
    training = task_spec.training
    assert training is not None
    check_code_path(training.recipe, f"task {task}: training recipe")
    fields: dict[str, Any] = {
        "task": task,
        "name": name,
        "label_column": label_column,
        "recipe": training.recipe,
        "classifier": training.target is Target.LABEL,
        "target": training.target,
        "defaults": CURRENT_DEFAULTS,
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
    if dp and not training.dp:
        private = ", ".join(s.name for s in catalog if s.training and s.training.dp)
        raise TrainingError(
            f"--dp-epsilon is supported for {private}; {task} cannot be "
            f"trained privately: {training.dp_refusal or 'not declared'}"
        )
    if spec.is_generator:
        check_generator_request(spec, base, labels)
    if spec.is_tagger:
        check_tagger_request(spec, base or training.base_defaults_to_default_model)
    if dp and spec.train_encoder:
        raise TrainingError(
            "--dp-epsilon trains the classification head only; drop --train-encoder"
        )
    source, columns, rows = load_source(data, data_url, settings)
    problems(
        [r[MALFORMED] for r in rows if MALFORMED in r],
        f"{source.describe()}: lines that are not JSON objects; fix or remove them",
    )
    if not rows:
        raise TrainingError(f"{source.describe()}: no rows to train on")
    need(columns, label_column, "--label-column", source)
    if spec.key_column:
        need(columns, spec.key_column, "--key-column", source)
    if source.file and not is_object_uri(source.file):  # relative media: beside the file
        spec = spec.model_copy(update={"media_base_dir": str(Path(source.file).parent)})
    adapter = adapter_for(task_spec.modality)
    inputs = adapter.training_inputs(rows, columns, spec, source, settings)
    annotation = ""
    if spec.is_generator:
        check_target_texts(rows, label_column, spec.holdout_fraction)
        class_names: list[str] = []
    elif spec.is_tagger:
        annotation, class_names = check_entity_annotations(
            rows, spec.text_column, label_column, labels, spec.holdout_fraction
        )
    elif not spec.is_classifier:
        check_regression_target(rows, label_column)
        if labels:
            raise TrainingError(f"--labels is for classifiers; {task} has a numeric target")
        class_names = []
    else:
        class_names = check_labels(rows, spec.model_dump(), labels)
    spec = spec.model_copy(
        update={
            "data": source,
            "input_columns": inputs,
            "labels": class_names,
            "annotation": annotation,
            "dp": dp,
            "n_rows": len(rows),
        }
    )
    if base or training.base_defaults_to_default_model:
        base_ref = base or settings.default_model
        # a registered version is a model of the task itself; a directory fits base_task
        base_task = task if MODEL_SELECTOR_RE.match(base_ref) else training.base_task or task
        ref = resolve_base(base_ref, base_task)
        adapter.check_base(ref.path, base_ref, spec)
        spec = spec.model_copy(
            update={"base": ref.load_from, "base_ref": ref.name, "base_version": ref.version}
        )
    columns_used = spec.used_columns()
    kept = [{c: row.get(c) for c in columns_used} for row in rows]
    return spec.model_copy(update={"data_fingerprint": fingerprint(kept, columns_used)})


def check_generator_request(spec: TrainSpec, base: str | None, labels: list[str] | None) -> None:
    """What a text-to-text request must say before its data is read: a base to fine-tune,
    a target column that is not the input, and none of the classifiers' options."""
    if not base:
        raise TrainingError(
            f"{spec.task} fine-tunes a pretrained sequence-to-sequence or decoder-only model "
            "and cannot train one from nothing: give --base (a model directory or "
            "NAME@VERSION of a generate model)"
        )
    if spec.label_column == spec.text_column:
        raise TrainingError(
            f"--label-column {spec.label_column!r} is also the input (--text-column): "
            f"{spec.task} learns to write the target text of another column"
        )
    if labels:
        raise TrainingError(f"--labels is for classifiers; {spec.task} has a target text")
    if spec.train_encoder:
        raise TrainingError(
            f"--train-encoder is for classifiers' heads; {spec.task} fine-tunes the whole model"
        )


def check_tagger_request(spec: TrainSpec, has_base: object) -> None:
    """What an entity-tagging request must say before its data is read."""
    if not has_base:
        raise TrainingError(
            f"{spec.task} fine-tunes a pretrained encoder or token classifier: give --base "
            "(a model directory, such as all-MiniLM-L6-v2 or tiny-entities, or NAME@VERSION "
            f"of an {spec.task} model)"
        )
    if spec.label_column == spec.text_column:
        raise TrainingError(
            f"--label-column {spec.label_column!r} is also the input (--text-column): "
            f"{spec.task} reads the text there and its spans or tags in another column"
        )
    if spec.train_encoder:
        raise TrainingError(
            f"--train-encoder is for classifiers' heads; {spec.task} fine-tunes the whole model"
        )


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "request"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
