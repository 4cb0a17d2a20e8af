"""/openapi.json: FastAPI's document, plus the request bodies that POST /v1/jobs and
/v1/events read themselves (one shape per task, chosen by `task`; see task_bodies.py)."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from producers.api.task_bodies import TaskBodies
from producers.api.uploads import form_encoding, upload_schemas

REF = "#/components/schemas/{model}"


def publish_request_bodies(app: FastAPI, bodies: TaskBodies) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, adapter in (("JobRequest", bodies.job), ("EventRequest", bodies.event)):
            body = adapter.json_schema(ref_template=REF)
            components.update(body.pop("$defs", {}))
            components[name] = body
        uploads = upload_schemas(bodies.options)
        components.update(uploads)
        upload = {
            "oneOf": [{"$ref": REF.format(model=name)} for name in uploads],
            "discriminator": {"propertyName": "task"},
        }
        paths = schema["paths"]
        paths["/v1/jobs"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model="JobRequest")}},
                "multipart/form-data": {
                    "schema": upload,
                    "encoding": form_encoding(bodies.options),
                },
            },
        }
        paths["/v1/events"]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="EventRequest")}}},
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
