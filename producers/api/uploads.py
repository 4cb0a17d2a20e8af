"""POST /v1/jobs as multipart/form-data: a `file` part (JSONL, CSV or Parquet) and the job's
options as form fields, one shape per task like the JSON body. A list parameter is repeated
parts (`labels=a`, `labels=b`; one part is read comma-separated), an object parameter one part
of JSON."""

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from producers.api.services import Services
from producers.api.task_bodies import JobOptions, validation_error
from producers.readers import capped, detect_format, read_rows
from schemas.catalog import unknown_task_message
from schemas.errors import SluiceError, TooManyItemsError, UnknownTaskError
from schemas.jobs import Item
from schemas.task_spec import field_kind
from storage.row_sources import declared_rows

COLUMNS = {
    "text_column": "the column of texts (default `text`)",
    "key_column": "the column of keys (default: rows are numbered 1, 2, ...)",
    "media_column": "images/audio: the column of paths under the server's input roots, "
    "file:// or data: URIs (default `path`)",
}
FILE = {"type": "string", "format": "binary", "description": "a .jsonl, .csv or .parquet file"}


def upload_schemas(options: dict[str, type[JobOptions]]) -> dict[str, dict[str, Any]]:
    """The multipart form of each task, named `<Task>Upload`, from its options model."""
    found = {}
    for model in options.values():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
        props = schema["properties"]
        for prop in props.values():  # a form has no null: a field left out is unset
            _no_null(prop)
        props["file"] = FILE
        props.update(
            {
                name: {"type": "string", "minLength": 1, "description": d}
                for name, d in COLUMNS.items()
            }
        )
        schema["required"] = ["file", *schema.get("required", [])]
        schema["title"] = model.__name__.replace("Options", "Upload")
        found[schema["title"]] = schema
    return found


def _no_null(prop: dict[str, Any]) -> None:
    if prop.get("default", ...) is None:
        del prop["default"]
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        del prop["anyOf"]
        prop.update(branches[0])


def form_encoding(options: dict[str, type[JobOptions]]) -> dict[str, dict[str, str]]:
    """Object parameters travel as one part of JSON."""
    return {
        name: {"contentType": "application/json"}
        for model in options.values()
        for name, field in model.model_fields.items()
        if field_kind(field.annotation) is dict
    }


async def from_upload(
    request: Request, svc: Services, tenant: str
) -> tuple[JobOptions, list[Item], str]:
    catalog = svc.client.catalog
    params = catalog.parameters()
    fields_allowed = 1 + len(JobOptions.model_fields) + len(COLUMNS) + len(params)
    form = await request.form(max_files=1, max_fields=fields_allowed + svc.settings.api_max_items)
    upload = form.get("file")
    if isinstance(upload, str):  # a part without a file name: its content, read as JSONL
        upload = UploadFile(io.BytesIO(upload.encode("utf-8")), filename="upload.jsonl")
    if not isinstance(upload, UploadFile):
        raise RequestValidationError(
            [{"loc": ("body", "file"), "msg": "a `file` part is required", "type": "missing"}]
        )
    name = Path(upload.filename or "upload.jsonl").name
    detect_format(Path(name))
    task = form.get("task")
    model = svc.bodies.options.get(task) if isinstance(task, str) else None
    if model is None:
        if not isinstance(task, str):
            raise RequestValidationError(
                [{"loc": ("body", "task"), "msg": "a `task` field is required", "type": "missing"}]
            )
        raise UnknownTaskError(unknown_task_message(task, catalog.names()))
    raw = {name: value for name in model.model_fields if (value := _field(form, name, model))}
    unknown = sorted(
        {k for k in form if k not in model.model_fields and k not in COLUMNS} - {"file"}
    )
    if unknown:
        raise RequestValidationError(
            [
                {"loc": ("body", k), "msg": "not a field of this task", "type": "extra_forbidden"}
                for k in unknown
            ]  # fmt: skip
        )
    try:
        options = model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc) from None
    columns = {k: v for k in COLUMNS if isinstance(v := form.get(k), str)}
    items = await _read(upload, name, svc, options, columns, tenant)
    return options, items, f"upload:{name}"


def _field(form: FormData, name: str, model: type[JobOptions]) -> Any:
    values = [v for v in form.getlist(name) if isinstance(v, str)]
    if not values:
        return None
    kind = field_kind(model.model_fields[name].annotation)
    if kind is list:
        extra = model.model_fields[name].json_schema_extra
        if isinstance(extra, dict) and extra.get("repeatable"):
            return values  # each part as it is (a stop string may be "," or a newline)
        if len(values) == 1:  # `labels=a,b,c` as one part
            return [part.strip() for part in values[0].split(",") if part.strip()]
        return values
    if kind is dict:
        try:
            return json.loads(values[-1])
        except json.JSONDecodeError as exc:
            raise RequestValidationError(
                [{"loc": ("body", name), "msg": f"not JSON: {exc}", "type": "json_invalid"}]
            ) from None
    return values[-1]


async def _read(
    upload: UploadFile,
    name: str,
    svc: Services,
    options: JobOptions,
    columns: dict[str, str],
    tenant: str,
) -> list[Item]:
    fd, tmp = tempfile.mkstemp(suffix=Path(name).suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            while block := await upload.read(1 << 20):
                out.write(block)

        def parse() -> list[Item]:
            cap = svc.settings.api_max_items
            declared = declared_rows(Path(tmp))  # a Parquet file's count, from its metadata
            if declared is not None and declared > cap:
                raise TooManyItemsError(name, cap, "SLUICE_API_MAX_ITEMS")
            header, rows = read_rows(Path(tmp), limit=cap + 1, source=name)
            return svc.client.items_from_rows(
                header,
                capped(rows, cap, name),
                options.task,
                model=options.model,
                key_column=columns.get("key_column"),
                text_column=columns.get("text_column", "text"),
                media_column=columns.get("media_column", "path"),
                source=name,
                tenant=tenant,
            )

        return await run_in_threadpool(parse)
    except UnicodeError as exc:
        raise SluiceError(f"{name} is not UTF-8 text ({exc})") from None
    finally:
        os.unlink(tmp)
