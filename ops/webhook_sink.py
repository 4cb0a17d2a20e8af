"""A webhook as a pipeline's sink (issue 24): each result POSTed on its own, through the same
egress guard as callbacks (workers/callback_http.py: every address the host resolves to
checked, the connection pinned to a checked one, one deadline per attempt, no redirects),
with `webhook-id` set to the result's stable message id, so a receiver drops a repeat. It
lives in ops, the composition root: the listener (producers/) never imports the workers."""

import asyncio
import time

from producers.buses.base import Outgoing
from schemas import pipelines as p
from schemas.errors import BusError
from schemas.pipelines import expand_env, masked_url
from schemas.settings import Settings
from storage.callback_ledger import ID_HEADER, signature_headers
from workers.callback_http import post


class WebhookSink:
    def __init__(self, conf: p.WebhookSink, settings: Settings) -> None:
        self.conf = conf
        self.settings = settings
        self._gate = asyncio.Semaphore(conf.concurrency)
        self._url = ""
        self._secret: str | None = None

    async def connect(self) -> None:
        """Nothing to open (each POST is its own connection, checked on its own): the URL and
        secret are read from the environment once, here."""
        self._url = expand_env(self.conf.url)
        self._secret = expand_env(self.conf.secret) if self.conf.secret else None

    async def publish(self, messages: list[Outgoing]) -> None:
        await asyncio.gather(*(self._post(m) for m in messages))

    async def _post(self, message: Outgoing) -> None:
        headers = {"Content-Type": "application/json", ID_HEADER: message.message_id}
        if self._secret:
            stamp = int(time.time())
            headers |= signature_headers(self._secret, message.message_id, message.body, stamp)
        async with self._gate:
            answer = await asyncio.to_thread(
                post,
                self._url,
                message.body,
                headers,
                self.settings.callback_timeout,
                self.settings.callback_allow_private,
            )
        if not answer.ok:
            what = answer.failure.value if answer.failure else answer.status_code
            raise BusError(f"webhook {masked_url(self.conf.url)}: {what} ({answer.detail})")

    async def close(self) -> None:
        pass
