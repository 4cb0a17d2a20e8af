"""Ledger rules, on SQLite and (when configured) PostgreSQL: one transaction per step,
exactly-once effect, statuses that tell the truth."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from schemas.jobs import Item, JobSpec, Outcome
from schemas.states import ItemStatus
from storage import tables as t
from storage.ledger import Ledger


def spec() -> JobSpec:
    return JobSpec(task="embed", model="m", model_version="v1", params={"model_path": "/m"})


def items(n: int, bad: int = 0) -> list[Item]:
    return [Item(key=f"k{i}", text=f"text {i}") for i in range(n)] + [
        Item(key=f"bad{i}", invalid="empty text") for i in range(bad)
    ]


def ok(items_: list[Item]) -> list[Outcome]:
    return [
        Outcome(
            key=i.key,
            status=ItemStatus.INVALID if i.invalid else ItemStatus.OK,
            output={"x": 1} if not i.invalid else None,
            error=i.invalid,
        )
        for i in items_
    ]


def test_job_and_chunks_are_written_together(ledger: Ledger):
    job_id, chunks = ledger.create_job(spec(), items(5), chunk_size=2)
    view = ledger.job(job_id)
    assert len(chunks) == 3 and view.chunks_total == 3 and view.counts.total == 5
    assert view.status == "queued"


def test_a_redelivered_chunk_changes_nothing(ledger: Ledger):
    job_id, (chunk,) = ledger.create_job(spec(), items(3), chunk_size=10)
    claim = ledger.claim(chunk, "w1", 30)
    assert claim.outcome == "claimed" and claim.items and len(claim.items) == 3
    assert ledger.claim(chunk, "w2", 30).outcome == "busy"  # a live lease is respected
    assert ledger.complete(chunk, "w1", ok(claim.items))
    assert ledger.claim(chunk, "w2", 30).outcome == "done"
    assert not ledger.complete(chunk, "w1", ok(claim.items))  # a second completion is refused
    view = ledger.job(job_id)
    assert (view.status, view.counts.ok, view.chunks_done) == ("succeeded", 3, 1)
    assert len(list(ledger.iter_results(job_id))) == 3


def test_status_is_partially_failed_when_any_item_is_not_ok(ledger: Ledger):
    job_id, (chunk,) = ledger.create_job(spec(), items(2, bad=1), chunk_size=10)
    claim = ledger.claim(chunk, "w", 30)
    assert claim.items is not None
    ledger.complete(chunk, "w", ok(claim.items))
    view = ledger.job(job_id)
    assert (view.status, view.counts.ok, view.counts.invalid) == ("partially_failed", 2, 1)
    rows = {r["key"]: r for r in ledger.iter_results(job_id)}
    assert rows["bad0"] == {
        "key": "bad0",
        "status": "invalid",
        "output": None,
        "error": "empty text",
        "model": ledger.job(job_id).model,
        "model_version": ledger.job(job_id).model_version,
    }


def test_expired_lease_is_resent_and_old_owner_cannot_complete(ledger: Ledger):
    job_id, (chunk,) = ledger.create_job(spec(), items(2), chunk_size=10)
    first = ledger.claim(chunk, "dead-worker", lease_seconds=-1)  # already expired
    assert first.outcome == "claimed"
    (stalled,) = ledger.stalled(requeue_after=3600)
    assert (stalled.chunk_id, stalled.expired, stalled.attempts) == (chunk, True, 1)
    assert ledger.requeue([chunk]) == [chunk]
    second = ledger.claim(chunk, "new-worker", 30)
    assert second.outcome == "claimed" and second.attempts == 2
    assert not ledger.complete(chunk, "dead-worker", ok(first.items or []))
    assert ledger.complete(chunk, "new-worker", ok(second.items or []))
    assert ledger.job(job_id).counts.ok == 2


def test_queued_chunks_are_stale_only_after_requeue_after(ledger: Ledger):
    _, (chunk,) = ledger.create_job(spec(), items(1), chunk_size=10)
    assert ledger.stalled(requeue_after=3600) == []
    assert [c.stale for c in ledger.stalled(requeue_after=3600, every_queued=True)] == [False]
    assert [c.stale for c in ledger.stalled(requeue_after=0.0001)] == [True]


def test_requeue_leaves_a_chunk_a_live_worker_holds(ledger: Ledger):
    _, (chunk,) = ledger.create_job(spec(), items(1), chunk_size=10)
    stalled = ledger.stalled(requeue_after=3600, every_queued=True)
    ledger.claim(chunk, "w", 30)  # claimed between the sweeper's look and its update
    assert ledger.requeue([c.chunk_id for c in stalled]) == []
    assert ledger.claim(chunk, "other", 30).outcome == "busy"


def test_exhausted_chunk_is_dead_lettered_and_job_fails(ledger: Ledger):
    job_id, (chunk,) = ledger.create_job(spec(), items(2, bad=1), chunk_size=10)
    ledger.claim(chunk, "w", lease_seconds=30)
    assert not ledger.dead_letter(chunk, None, "boom")  # a live lease is not taken away
    ledger.renew(chunk, "w", lease_seconds=-1)  # ...but an expired one is
    assert ledger.dead_letter(chunk, None, "boom")
    view = ledger.job(job_id)
    assert (view.status, view.counts.error, view.counts.invalid) == ("failed", 2, 1)
    rows = {r["key"]: r for r in ledger.iter_results(job_id)}
    assert "boom" in rows["k0"]["error"] and rows["bad0"]["status"] == "invalid"


def test_cancel_drops_unfinished_chunks(ledger: Ledger):
    job_id, chunks = ledger.create_job(spec(), items(4), chunk_size=2)
    claim = ledger.claim(chunks[0], "w", 30)
    ledger.complete(chunks[0], "w", ok(claim.items or []))
    inflight = ledger.claim(chunks[1], "w", 30)
    assert ledger.cancel(job_id).status == "cancelled"
    assert not ledger.complete(chunks[1], "w", ok(inflight.items or []))
    assert ledger.claim(chunks[1], "w", 30).outcome == "done"
    view = ledger.job(job_id)
    assert (view.status, view.counts.ok) == ("cancelled", 2)


def test_migration_matches_the_models(ledger: Ledger):
    with ledger.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), t.Base.metadata)
    assert diff == []


def test_results_stored_in_the_old_classifier_shape_read_and_export_in_the_new(ledger: Ledger):
    import csv
    import io

    from storage.export import write_csv

    job_id, (chunk,) = ledger.create_job(spec(), items(2), chunk_size=10)
    claim = ledger.claim(chunk, "w", 30)
    assert claim.items is not None
    old = {"label": "spam", "score": 0.9, "probabilities": {"spam": 0.9, "ham": 0.1}}
    new = {"label": "ham", "score": 0.8, "scores": {"ham": 0.8, "spam": 0.2}}
    ledger.complete(
        chunk,
        "w",
        [
            Outcome(key=i.key, status=ItemStatus.OK, output=o)
            for i, o in zip(claim.items, [old, new], strict=True)
        ],
    )
    rows = list(ledger.iter_results(job_id))
    assert [r["output"] for r in rows] == [
        {"label": "spam", "score": 0.9, "scores": {"spam": 0.9, "ham": 0.1}},
        new,
    ]
    out = io.StringIO()
    assert write_csv(iter(rows), out) == 2
    exported = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert all('"scores"' in r["output"] and "probabilities" not in r["output"] for r in exported)


def test_rows_a_database_cannot_store_never_wedge_a_job(ledger: Ledger):
    """NaN, infinity, NUL and lone surrogates (PostgreSQL's JSON refuses them) end as item
    errors or failed explanations; whatever still cannot be written ends the chunk as errors."""
    import pytest

    from schemas.errors import InputFileError
    from schemas.jobs import Explanation

    with pytest.raises(InputFileError, match=r"item 2: the key 'b\\x00' holds a NUL character"):
        ledger.create_job(spec(), [Item(key="a", text="x"), Item(key="b\x00", text="y")], 5)
    with pytest.raises(InputFileError, match="item 1: the key 'kkkk.*' is 513 characters long"):
        ledger.create_job(spec(), [Item(key="k" * 513, text="x")], 5)
    texts = [Item(key="nul", text="a\x00b"), Item(key="sur", text="a\ud800b")] + items(4)
    job_id, (chunk,) = ledger.create_job(spec(), texts, chunk_size=10)
    claim = ledger.claim(chunk, "w", 30)
    assert claim.items is not None
    stored = {i.key: i for i in claim.items}
    assert (
        stored["nul"].invalid
        == "the text holds a NUL character (\\x00), which databases cannot store"
    )
    assert (
        stored["sur"].invalid
        == "the text holds characters that are not valid Unicode (lone surrogates)"
    )
    bad_expl = Explanation(method="m", tokens=["a"], attributions=[float("inf")])
    outcomes = [
        Outcome(key="nul", status=ItemStatus.INVALID, error=stored["nul"].invalid),
        Outcome(key="sur", status=ItemStatus.INVALID, error=stored["sur"].invalid),
        Outcome(key="k0", status=ItemStatus.OK, output={"score": float("nan")}),
        Outcome(key="k1", status=ItemStatus.OK, output={"label": "a\x00"}, explanation=bad_expl),
        Outcome(key="k2", status=ItemStatus.OK, output={"x": 1}, explanation=bad_expl),
        Outcome(key="k3", status=ItemStatus.ERROR, error="boom \x00 \ud800"),
    ]
    assert ledger.complete(chunk, "w", outcomes)
    view = ledger.job(job_id)
    assert (view.status, view.counts.ok, view.counts.invalid, view.counts.error) == (
        "partially_failed", 1, 2, 3)  # fmt: skip
    rows = {r["key"]: r for r in ledger.iter_results(job_id)}
    assert rows["k0"]["error"] == "the model's output holds nan, which JSON cannot represent"
    assert rows["k1"]["error"].startswith("the model's output holds a NUL character")
    assert rows["k2"]["output"] == {"x": 1}
    assert rows["k2"]["explanation"]["status"] == "failed"
    assert (
        rows["k2"]["explanation"]["error"]
        == "the explanation holds inf, which JSON cannot represent"
    )
    assert rows["k3"]["error"] == "boom \\x00 ?"


def test_results_that_still_cannot_be_written_end_the_chunk_as_errors(ledger: Ledger):
    job_id, (chunk,) = ledger.create_job(spec(), items(2), chunk_size=10)
    ledger.claim(chunk, "w", 30)
    unwritable = Outcome.model_construct(
        key="k0", status=ItemStatus.OK, output={"x": object()}, error=None, explanation=None
    )
    fine = Outcome(key="k1", status=ItemStatus.OK, output={"x": 1})
    assert ledger.complete(chunk, "w", [unwritable, fine])
    view = ledger.job(job_id)
    assert (view.status, view.counts.error) == ("failed", 2)  # the job ends
    errors = [r["error"] for r in ledger.iter_results(job_id)]
    assert all(e.startswith("the results could not be stored: ") for e in errors)


def test_exports_are_strict_json_whatever_was_stored():
    import io
    import json

    from storage.export import write_jsonl

    out = io.StringIO()
    write_jsonl(iter([{"key": "a", "output": {"score": float("nan"), "v": [float("inf")]}}]), out)
    assert json.loads(out.getvalue()) == {"key": "a", "output": {"score": None, "v": [None]}}
    assert "NaN" not in out.getvalue() and "Infinity" not in out.getvalue()


def test_an_explanation_the_columns_cannot_hold_fails_alone():
    from schemas.jobs import Explanation
    from schemas.storable import storable_outcome

    long = Outcome(
        key="k", status=ItemStatus.OK, output={"x": 1},
        explanation=Explanation(method="m" * 80, tokens=["a"], attributions=[0.5]),
    )  # fmt: skip
    fixed = storable_outcome(long)
    assert fixed.status == ItemStatus.OK and fixed.output == {"x": 1}
    assert fixed.explanation is not None and fixed.explanation.status == "failed"
    assert fixed.explanation.method == "m" * 64
