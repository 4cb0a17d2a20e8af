"""The result cache (issue 16): a re-run of the same rows is answered from the ledger, marked
and counted; anything that could change a result (a parameter, the model, the explanation
settings, the tenant, the input's bytes) misses; a job may turn it off; sampled explanations
are those a run without the cache would make; entries go with their job or on request.

The worker's chunk step runs here with a stand-in for the model actor that records what it
was asked for; the ledger is real (SQLite, and PostgreSQL when configured)."""

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from schemas.jobs import ExplainPolicy, Explanation, Item, JobSpec, Outcome
from schemas.settings import Settings
from schemas.stack import Endpoints
from schemas.states import ExplanationStatus, ItemStatus
from storage import tables as t
from storage.ledger import JobView, Ledger
from storage.result_cache import CachedResult, CacheScope, ResultCache, answer, item_digest
from workers.chunk_task import WorkerState, compute_outcomes
from workers.ray_calls import ActorCalls


class CountingModel(WorkerState):
    """The worker's chunk step with the model actor replaced: it records the items it ran
    and answers from their text; explains the rows the job's policy picks, as ModelCore."""

    def __init__(self, ledger: Ledger, settings: Settings) -> None:
        super().__init__(settings, Endpoints(broker_url=None, database_url="", ray_address=None))
        self.__dict__["ledger"] = ledger  # the test's, not one made from the endpoints
        self.ran: list[str] = []
        self.gpu = False  # where the cluster's actors run: `auto` precision resolves by it
        self.isolating = False  # the shared actor died: the items ran on a private CPU one
        self.explain_fails = False

    def cluster_has_gpu(self) -> bool:
        return self.gpu

    def run_on_actor(
        self, job: JobView, chunk_id: str, items: list[Item], calls: ActorCalls, isolate: bool
    ) -> list[Outcome]:
        self.ran += [i.key for i in items]
        calls.isolated = self.isolating
        failed = Explanation(method="fake", status=ExplanationStatus.FAILED, error="CUDA OOM")
        policy = ExplainPolicy.parse(job.explain_policy)
        scale = float(job.params.get("scale", 1))
        return [
            Outcome(
                key=i.key,
                status=ItemStatus.OK,
                output={"length": len(str(i.text)) * scale},
                explanation=(
                    failed
                    if self.explain_fails
                    else Explanation(method="fake", tokens=[str(i.text)], attributions=[1.0])
                )
                if policy.wants(job.id, i.key, 0.0)  # every row unsure: low-confidence picks it
                else None,
            )
            for i in items
        ]


@pytest.fixture
def model(ledger: Ledger, tmp_path: Path) -> CountingModel:
    return CountingModel(ledger, Settings(data_dir=tmp_path, input_roots=str(tmp_path)))


def texts(n: int) -> list[Item]:
    return [Item(key=f"k{i}", text=f"text number {i}") for i in range(n)]


def run_job(model: CountingModel, rows: list[Item], **spec: Any) -> str:
    """Record a job of `rows`, run each chunk through the worker's step and complete it."""
    fields: dict[str, Any] = {"task": "embed", "model": "m", "model_version": "v1"}
    job_id, chunks = model.ledger.create_job(JobSpec(**{**fields, **spec}), rows, chunk_size=4)
    for chunk in chunks:
        claim = model.ledger.claim(chunk, "w", 30)
        outcomes, cache, items = compute_outcomes(model, claim, chunk, ActorCalls(float("inf")))
        assert model.ledger.complete(chunk, "w", outcomes, cache=cache, items=items)
    return job_id


def rows(ledger: Ledger, job_id: str) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in ledger.iter_results(job_id)}


def test_a_rerun_is_answered_from_the_cache_marked_and_counted(model: CountingModel):
    first = run_job(model, texts(10))
    assert len(model.ran) == 10 and model.ledger.job(first).counts.cached == 0
    model.ran.clear()
    second = run_job(model, texts(10))
    assert model.ran == []  # the model did not run
    view = model.ledger.job(second)
    assert (view.status, view.counts.ok, view.counts.cached) == ("succeeded", 10, 10)
    assert view.as_dict()["cached"] == 10 and view.as_dict()["counts"]["cached"] == 10
    before, after = rows(model.ledger, first), rows(model.ledger, second)
    assert {k: r["output"] for k, r in after.items()} == {k: r["output"] for k, r in before.items()}
    assert all(r["cached"] for r in after.values())
    assert not any(r.get("cached") for r in before.values())


def test_only_the_new_rows_of_a_grown_input_run(model: CountingModel):
    run_job(model, texts(6))
    model.ran.clear()
    job = run_job(model, texts(9))
    assert sorted(model.ran) == ["k6", "k7", "k8"]
    assert model.ledger.job(job).counts.cached == 6


@pytest.mark.parametrize(
    "change",
    [
        {"params": {"scale": 2}},  # a task parameter
        {"model_version": "v2"},  # other model files
        {"tenant": "other"},  # another tenant never sees this one's results
        {"params": {"result_cache": False}},  # --no-cache: the model runs
    ],
    ids=["parameter", "model", "tenant", "no-cache"],
)
def test_what_changes_a_result_misses(model: CountingModel, change: dict[str, Any]):
    run_job(model, texts(5))
    model.ran.clear()
    job = run_job(model, texts(5), **change)
    assert len(model.ran) == 5 and model.ledger.job(job).counts.cached == 0


def test_the_explanation_settings_are_keyed(model: CountingModel, monkeypatch):
    run_job(model, texts(4), task="zero-shot-text")
    model.ran.clear()
    monkeypatch.setattr(model.settings, "explain_steps", 50)
    run_job(model, texts(4), task="zero-shot-text")
    assert len(model.ran) == 4


def test_a_jobs_own_explanation_steps_are_keyed(model: CountingModel):
    explained = {"task": "zero-shot-text", "explain": "all"}
    steps = {"method": "layer_integrated_gradients", "steps": 8}
    run_job(model, texts(4), **explained, params={"explainer": steps})
    model.ran.clear()
    run_job(model, texts(4), **explained, params={"explainer": steps})
    assert model.ran == []  # the same steps: answered from the cache
    run_job(model, texts(4), **explained, params={"explainer": {**steps, "steps": 16}})
    assert len(model.ran) == 4


def test_no_cache_runs_the_model_and_teaches_the_cache(model: CountingModel):
    run_job(model, texts(4), params={"result_cache": False})
    model.ran.clear()
    job = run_job(model, texts(4))
    assert model.ran == [] and model.ledger.job(job).counts.cached == 4


def test_a_sample_explains_the_rows_a_run_without_the_cache_would(model: CountingModel):
    rows_, policy = texts(40), ExplainPolicy.parse("sample:0.3")
    first = run_job(model, rows_, task="zero-shot-text", explain="sample:0.3")
    model.ran.clear()
    job = run_job(model, rows_, task="zero-shot-text", explain="sample:0.3")
    explained_first = {i.key for i in rows_ if policy.wants(first, i.key, None)}
    wanted = {i.key for i in rows_ if policy.wants(job, i.key, None)}
    got = rows(model.ledger, job)
    assert {k for k, r in got.items() if r.get("explanation")} == wanted
    # a row of this sample ran again only where the first job had not explained it
    assert set(model.ran) == wanted - explained_first
    assert {k for k, r in got.items() if r.get("cached")} == set(got) - (wanted - explained_first)
    model.ran.clear()
    run_job(model, rows_, task="zero-shot-text", explain="all")
    assert set(model.ran) == set(got) - wanted - explained_first


def test_media_are_keyed_by_their_bytes_not_their_path(model: CountingModel, tmp_path: Path):
    for name, data in (("a.png", b"same"), ("b.png", b"same"), ("c.png", b"other")):
        (tmp_path / name).write_bytes(data)
    images = {"task": "classify-image"}
    run_job(model, [Item(key="a", path=str(tmp_path / "a.png"))], **images)
    model.ran.clear()
    run_job(model, [Item(key=k, path=str(tmp_path / f"{k}.png")) for k in "abc"], **images)
    assert model.ran == ["c"]  # b has a's bytes
    (tmp_path / "a.png").write_bytes(b"changed in place")
    model.ran.clear()
    run_job(model, [Item(key="a", path=str(tmp_path / "a.png"))], **images)
    assert model.ran == ["a"]


def test_clearing_and_erasing_remove_entries(model: CountingModel):
    first = run_job(model, texts(4))
    other = run_job(model, texts(3), tenant="other")
    cache = ResultCache(model.ledger.engine)
    assert (cache.count(), cache.count("other")) == (7, 3)
    assert cache.clear(tenant="default") == 4 and cache.count() == 3
    model.ran.clear()
    run_job(model, texts(4))
    assert len(model.ran) == 4  # cleared: the model runs again
    assert cache.clear(job_id=other) == 3
    with model.ledger.engine.begin() as conn:  # retention/erasure deleting a job's rows
        conn.execute(delete(t.Job).where(t.Job.id != first))
    assert cache.count() == 0  # the entries went with the job that stored them


def test_erasing_a_tenant_forgets_its_secret(model: CountingModel):
    run_job(model, texts(3), tenant="gone")
    cache = ResultCache(model.ledger.engine)
    secret = cache.secret("gone")
    assert secret == cache.secret("gone") and secret != cache.secret("default")
    cache.forget_secret("gone")
    assert cache.count("gone") == 0 and cache.secret("gone") != secret


def test_digests_are_keyed_per_tenant_and_scope():
    scope = CacheScope("embed", "h", "v1", {"model_path": "/a"}, None)
    moved = CacheScope("embed", "h", "v1", {"model_path": "/b", "input_roots": ["/x"]}, None)
    redacted = CacheScope("embed", "h", "v1", {}, None, redaction={"emails": "mask"})
    item = Item(key="k", text="hello")
    digest = item_digest(b"s1", scope.encoded(), item, None, False)
    assert digest == item_digest(b"s1", moved.encoded(), item, None, False)  # paths: unkeyed
    assert digest != item_digest(b"s2", scope.encoded(), item, None, False)  # another secret
    assert digest != item_digest(b"s1", redacted.encoded(), item, None, False)
    assert digest == item_digest(b"s1", scope.encoded(), Item(key="j", text="hello"), None, False)
    seeded = CacheScope("generate", "h", "v1", {"seed": 7, "temperature": 1.0}, None)
    assert seeded.keys_by_item_key  # each row's seed comes from its key
    assert item_digest(b"s1", seeded.encoded(), item, None, True) != item_digest(
        b"s1", seeded.encoded(), Item(key="j", text="hello"), None, True
    )


def test_a_low_confidence_hit_needs_the_policy_it_was_stored_under():
    entry = CachedResult('{"label": "a"}', None, "low-confidence:0.5")
    assert answer(entry, ExplainPolicy.parse("low-confidence:0.5"), "job", "k") is not None
    assert answer(entry, ExplainPolicy.parse("low-confidence:0.7"), "job", "k") is None
    explained = CachedResult('{"label": "a"}', Explanation(method="m"), "all")
    hit = answer(explained, ExplainPolicy.parse("none"), "job", "k")
    assert hit is not None and hit.explanation is None and hit.cached


def test_what_the_actor_runs_with_is_keyed(model: CountingModel, monkeypatch):
    """The precision `auto` resolves to (bfloat16 on a GPU cluster), another precision, and
    the code that makes outputs each change the key."""
    run_job(model, texts(3))
    model.ran.clear()
    model.gpu = True
    run_job(model, texts(3))
    assert len(model.ran) == 3
    model.ran.clear()
    monkeypatch.setattr(model.settings, "inference_dtype", "float32")
    run_job(model, texts(3))
    assert len(model.ran) == 3
    model.ran.clear()
    monkeypatch.setattr("workers.chunk_task.code_digest", lambda *packages: "other code")
    run_job(model, texts(3))
    assert len(model.ran) == 3


def test_rows_made_while_isolating_a_crash_are_not_cached(model: CountingModel):
    model.isolating = True
    run_job(model, texts(4))
    model.isolating, model.ran = False, []
    job = run_job(model, texts(4))
    assert len(model.ran) == 4 and model.ledger.job(job).counts.cached == 0


def test_a_failed_explanation_is_not_cached_as_none(model: CountingModel):
    """A row whose explanation failed (out of memory, say) is run again next time, under any
    policy, rather than served without the explanation it was chosen for."""
    model.explain_fails = True
    run_job(model, texts(4), task="zero-shot-text", explain="low-confidence:0.9")
    model.explain_fails, model.ran = False, []
    job = run_job(model, texts(4), task="zero-shot-text", explain="low-confidence:0.9")
    assert len(model.ran) == 4 and model.ledger.job(job).counts.cached == 0
