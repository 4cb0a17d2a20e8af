"""What every route of the API shares: the services made once by create_app."""

from dataclasses import dataclass

from fastapi import Request

from producers.api.task_bodies import TaskBodies
from producers.client import Client
from schemas.settings import Settings
from storage.apikeys import ApiKeys
from storage.callback_ledger import Callbacks
from storage.tenancy import TenantReads


@dataclass
class Services:
    settings: Settings
    client: Client
    keys: ApiKeys
    reads: TenantReads
    callbacks: Callbacks
    bodies: TaskBodies


def services(request: Request) -> Services:
    return request.app.state.sluice  # type: ignore[no-any-return]
