"""The body of every error answer, for the OpenAPI document."""

from pydantic import BaseModel


class Problem(BaseModel):
    detail: str  # what was wrong and what to do
