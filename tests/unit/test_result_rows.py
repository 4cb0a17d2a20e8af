"""An output's embedding is cut out of its JSON text for a write-back without being parsed,
and every other shape of output comes apart the same as when parsed."""

import json

import pytest

from storage import json_codec
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
