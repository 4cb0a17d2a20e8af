"""An output's embedding is cut out of its JSON text for a write-back without being parsed,
and every other shape of output comes apart the same as when parsed; through the ledger (on
SQLite, and PostgreSQL when configured) a write-back reads each row as the SDK does."""

import json

import pytest

from schemas.jobs import Item, JobSpec, Outcome
from schemas.states import ItemStatus
from storage import json_codec
from storage.ledger import Ledger
from storage.result_rows import split_embedding


@pytest.mark.parametrize(
    "output",
    [
        {"embedding": [0.1, -2.5e-08, 1e300, 3]},
        {"embedding": [0.5], "dims": 1, "note": "a ] and a [ in text"},
        {"embedding": []},
        {"label": "a", "embedding": [1.0, 2.0]},  # not first: parsed
        {"embedding": [[1, 2], [3]]},  # nested: parsed
        {"embedding": ["x]", "y"]},  # strings: parsed
        {"embedding": None},
        {"label": "a", "scores": {"a": 1.0}},  # no embedding
        None,
        [1, 2],  # not an object
    ],
)
def test_the_split_equals_parsing_the_whole_output(output):
    text = None if output is None else json_codec.dumps(output)
    rest, embedding = split_embedding(text)
    expected = dict(output) if isinstance(output, dict) else output
    vector = expected.pop("embedding", None) if isinstance(expected, dict) else None
    assert rest == expected
    assert json.loads(embedding) == vector


def test_a_flat_array_first_is_cut_out_as_the_text_it_is():
    text = json_codec.dumps({"embedding": [0.1, 2e-05, 3.0], "dims": 3})
    rest, embedding = split_embedding(text)
    assert embedding == "[0.1,0.00002,3.0]" and embedding in text and rest == {"dims": 3}


OUTPUTS = {
    "vector": {"embedding": [0.25, -1e-7, 3.0], "dims": 3},
    "legacy": {"label": "a", "probabilities": {"a": 0.9}},  # read as `scores` (current_output)
    "label": {"label": "b", "score": 0.5},
    "nothing": None,
}


def test_a_write_back_reads_every_row_as_the_sdk_does_less_the_embedding(ledger: Ledger):
    spec = JobSpec(task="embed", model="m", model_version="v1")
    items = [Item(key=k, text=k) for k in OUTPUTS]
    job_id, (chunk,) = ledger.create_job(spec, items, chunk_size=10)
    ledger.claim(chunk, "w", 30)
    outcomes = [
        Outcome(key=k, status=ItemStatus.OK, output=o)
        if o is not None
        else Outcome(key=k, status=ItemStatus.ERROR, error="boom")
        for k, o in OUTPUTS.items()
    ]
    assert ledger.complete(chunk, "w", outcomes)
    as_sdk = {r["key"]: r for r in ledger.iter_results(job_id)}
    as_text = {r["key"]: r for r in ledger.iter_results(job_id, embedding_as_text=True)}
    for key, row in as_sdk.items():
        text_row = dict(as_text[key])
        vector = json.loads(text_row.pop("embedding_json"))
        output = dict(row["output"]) if row["output"] is not None else None
        assert vector == (output.pop("embedding", None) if output else None)
        assert text_row == {**row, "output": output}, key
    assert as_sdk["legacy"]["output"] == {"label": "a", "scores": {"a": 0.9}}
    assert list(ledger.iter_results(job_id, seqs=(1, 3))) == list(as_sdk.values())[1:3]
