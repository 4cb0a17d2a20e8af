"""Jobs for the console tests, and a worker stand-in that ends their chunks through the ledger
as a worker does (claim, then complete with outcomes and explanations in the shapes the
handlers write), optionally at a set pace: the throttled task whose ETA is checked."""

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from schemas.jobs import Explanation, Item, Outcome
from schemas.states import ItemStatus
from storage import tables as t
from storage.ledger import Ledger

OutcomeFor = Callable[[Item], Outcome]


def chunk_ids(ledger: Ledger, job_id: str) -> list[str]:
    with ledger.engine.begin() as c:
        query = select(t.Chunk.id).where(t.Chunk.job_id == job_id).order_by(t.Chunk.seq)
        return list(c.scalars(query))


def settle(ledger: Ledger, job_id: str, outcome_for: OutcomeFor) -> None:
    for chunk in chunk_ids(ledger, job_id):
        end_chunk(ledger, chunk, outcome_for)


def end_chunk(ledger: Ledger, chunk: str, outcome_for: OutcomeFor) -> None:
    claim = ledger.claim(chunk, "console-test-worker", 60)
    assert claim.items is not None, claim.outcome
    assert ledger.complete(chunk, "console-test-worker", [outcome_for(i) for i in claim.items])


class PacedWorker(threading.Thread):
    """Ends a job's chunks one every `every_s` seconds (a throttled task)."""

    def __init__(self, ledger: Ledger, job_id: str, outcome_for: OutcomeFor, every_s: float):
        super().__init__(daemon=True)
        self.ledger, self.job_id, self.outcome_for, self.every_s = (
            ledger, job_id, outcome_for, every_s,
        )  # fmt: skip
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for chunk in chunk_ids(self.ledger, self.job_id):
                if self.stop.wait(self.every_s):  # the pace, not a synchronisation
                    return
                end_chunk(self.ledger, chunk, self.outcome_for)
        except BaseException as exc:  # shown by the test that joins it
            self.error = exc


def labelled(item: Item) -> Outcome:
    """A classification of a text, explained word by word."""
    words = str(item.text or "").split() or ["(empty)"]
    return Outcome(
        key=item.key,
        status=ItemStatus.OK,
        output={"label": "billing", "score": 0.91},
        explanation=Explanation(
            method="layer_integrated_gradients",
            target="billing",
            tokens=words,
            attributions=[0.5 - i * 0.3 for i in range(len(words))],
            convergence_delta=0.01,
        ),
    )


def failing_when(marker: str) -> OutcomeFor:
    def outcome(item: Item) -> Outcome:
        if marker in str(item.text):
            return Outcome(key=item.key, status=ItemStatus.ERROR, error="model ran out of memory")
        return labelled(item)

    return outcome


def image_outcome(item: Item) -> Outcome:
    """A picture's label and its 4x4 saliency grid."""
    return Outcome(
        key=item.key,
        status=ItemStatus.OK,
        output={"label": "cat", "score": 0.8},
        explanation=Explanation(
            method="saliency_grid",
            target="cat",
            attributions=[(i % 5 - 2) / 2 for i in range(16)],
            detail={"grid": [4, 4], "cell": 8},
        ),
    )


def audio_outcome(item: Item) -> Outcome:
    """A clip's label and an attribution per half-second segment."""
    segments = [[i * 0.5, (i + 1) * 0.5] for i in range(4)]
    return Outcome(
        key=item.key,
        status=ItemStatus.OK,
        output={"label": "speech", "score": 0.7},
        explanation=Explanation(
            method="segment_occlusion",
            target="speech",
            tokens=[f"{a:.1f}-{b:.1f}s" for a, b in segments],
            attributions=[0.4, -0.2, 0.9, 0.1],
            detail={"segments": segments},
        ),
    )


def record_outcome(item: Item) -> Outcome:
    top: list[dict[str, Any]] = [
        {"feature": "age", "value": 42.0, "baseline": 37.5, "attribution": 0.31},
        {"feature": "balance", "value": 1200.0, "baseline": 900.0, "attribution": -0.12},
    ]
    return Outcome(
        key=item.key,
        status=ItemStatus.OK,
        output={"label": "churn", "score": 0.66},
        explanation=Explanation(method="integrated_gradients", target="churn", detail={"top": top}),
    )
