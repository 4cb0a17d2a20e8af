"""The body of every error answer, for the OpenAPI document, and the status each refusal of
Sluice's is answered with (Sluice's own routes and the OpenAI surface alike)."""

from pydantic import BaseModel

from schemas.errors import (
    ConfigError,
    JobNotFoundError,
    ModelNotFoundError,
    QuotaExceededError,
    SluiceError,
    TooManyItemsError,
)

# The first match counts: the more specific first.
STATUS_OF: list[tuple[type[SluiceError], int]] = [
    (QuotaExceededError, 429),
    (JobNotFoundError, 404),
    (ModelNotFoundError, 404),
    (TooManyItemsError, 413),
    (ConfigError, 503),  # the server's: a broker or database it cannot use
    (SluiceError, 400),
]


def status_of(exc: SluiceError) -> int:
    return next(status for kind, status in STATUS_OF if isinstance(exc, kind))


class Problem(BaseModel):
    detail: str  # what was wrong and what to do
