"""The handler of fault-probe: no model; predict sleeps, exits the process on the crash
marker (os._exit: no exception, no cleanup, as a native crash would end it), and raises on
the first FAILING_CALLS batches holding the fail marker."""

import os
import time
from typing import Any

from schemas.errors import InvalidInput
from schemas.jobs import Item
from sluice_fault_probe import CRASH_MARKER, FAIL_MARKER, FAILING_CALLS
from workers.handlers.base import Handler


class FaultProbeHandler(Handler):
    def setup(self, model_path: str, device: str) -> None:
        self.device = device
        self.failed_calls = 0

    def preprocess(self, item: Item, params: dict[str, Any]) -> tuple[str, float]:
        if not isinstance(item.text, str) or not item.text.strip():
            raise InvalidInput("fault-probe needs a non-empty text")
        return item.text, float(params.get("seconds_per_item", 0.0))

    def predict(self, batch: list[tuple[str, float]]) -> list[dict[str, Any]]:
        if any(text == CRASH_MARKER for text, _ in batch):
            os._exit(1)
        if self.failed_calls < FAILING_CALLS and any(text == FAIL_MARKER for text, _ in batch):
            self.failed_calls += 1
            raise RuntimeError(f"{FAIL_MARKER}: failing call {self.failed_calls}")
        time.sleep(sum(seconds for _, seconds in batch))
        return [{"length": len(text), "pid": os.getpid()} for text, _ in batch]
