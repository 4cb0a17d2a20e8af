"""The REST API (FastAPI). `from producers.api import create_app`."""

from producers.api.app import create_app

__all__ = ["create_app"]
