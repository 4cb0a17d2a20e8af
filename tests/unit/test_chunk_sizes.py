"""How many items a chunk holds: the task's size (512 short texts, sorted by length within
the chunk), fewer when every row is explained (a chunk then runs ~70x longer), and
SLUICE_CHUNK_SIZE over both."""

import pytest

from producers.job_specs import EXPLAINED_CHUNK, chunk_size_for
from schemas.catalog import load_catalog
from schemas.jobs import JobSpec

CATALOG = load_catalog()


def job(task: str, explain: str = "none") -> JobSpec:
    return JobSpec(task=task, model="m", model_version="v", explain=explain)


@pytest.mark.parametrize("task", ["embed", "classify-text", "zero-shot-text"])
def test_short_texts_run_512_to_a_chunk(task: str):
    assert chunk_size_for(CATALOG.get(task), job(task), None) == 512


def test_a_job_that_explains_every_row_gets_small_chunks():
    spec = CATALOG.get("zero-shot-text")
    assert chunk_size_for(spec, job("zero-shot-text", "all"), None) == EXPLAINED_CHUNK == 64
    # a sample or a low-confidence policy explains few rows: the task's size stands
    assert chunk_size_for(spec, job("zero-shot-text", "sample:0.01"), None) == 512
    clips = CATALOG.get("classify-audio")  # already smaller than EXPLAINED_CHUNK
    assert chunk_size_for(clips, job("classify-audio", "all"), None) == clips.chunk_size


def test_a_configured_chunk_size_wins():
    spec = CATALOG.get("embed")
    assert chunk_size_for(spec, job("embed", "all"), 100) == 100
    assert chunk_size_for(spec, job("embed"), 7) == 7
