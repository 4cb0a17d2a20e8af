"""Parameters several routes share: the caller's key and the Idempotency-Key header."""

from typing import Annotated

from fastapi import Depends, Header

from producers.api.auth import principal
from storage.apikeys import ApiKeyInfo

Principal = Annotated[ApiKeyInfo, Depends(principal)]
# Printable ASCII, as HTTP header values travel; stored in jobs.idempotency_key (128).
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[!-~]+$"),
]
