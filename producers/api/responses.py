"""The error answers of the API, documented once: `errors(404, 422)` in a route's `responses`
publishes each status with its body and headers. app.py maps the exceptions to them."""

from typing import Any

from pydantic import BaseModel, Field

from producers.api.problems import Problem


class ValidationErrorOut(BaseModel):
    detail: list[dict[str, Any]] = Field(
        ..., description="one entry per problem: `loc` (where), `msg`, `type`"
    )


RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before submitting again",
        "schema": {"type": "integer", "minimum": 0},
    }
}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}

ERRORS: dict[int, dict[str, Any]] = {
    400: {"description": "the request cannot be carried out as asked (the detail says why)"},
    401: {"description": "no API key, or an unknown or revoked one", "headers": WWW_AUTHENTICATE},
    404: {"description": "no such job for this tenant, or a model or source that does not exist"},
    409: {"description": "the job is not in a state that allows this"},
    413: {"description": "over the body size cap or the item cap (SLUICE_API_MAX_*)"},
    415: {"description": "a body that is neither application/json nor multipart/form-data"},
    422: {"description": "a malformed request: the body or a parameter is not as documented"},
    429: {
        "description": "over this tenant's quota; submit again after Retry-After seconds",
        "headers": RETRY_AFTER,
    },
    503: {"description": "a service the request needs (database, broker) is not available"},
}

# What every route behind an API key may answer; what every submitting route adds.
AUTHENTICATED = (401, 422)
SUBMITTING = (400, 404, 413, 422, 429, 503)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with its description, headers and body."""
    return {
        status: {
            **ERRORS[status],
            "model": ValidationErrorOut if status == 422 else Problem,
        }
        for status in sorted(set(statuses))
    }
