"""OpenAI requests as Sluice items (schemas/openai_requests.py) and Sluice rows in OpenAI's
shapes (producers/openai_responses.py): what each line of a batch becomes, every refusal a
line's own with the field named, and a batch's files split back by custom_id."""

import json

import pytest

from producers.openai_responses import requests_of, vector
from schemas.errors import OpenAIRequestError
from schemas.jobs import Item
from schemas.openai_requests import CHAT, EMBEDDINGS, BatchLines, ItemKey, chat_item, split_key
from storage.openai_batches import request_outcomes
from storage.openai_files import Line, lines_of


def line(custom_id: str, body: dict, url: str = CHAT) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body}).encode()


CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_a_chat_request_keeps_its_turns_and_decoding():
    item = chat_item(
        "a",
        {**CHAT_BODY, "max_tokens": 5, "temperature": 0.5, "seed": 2**40, "stop": "\n",
         "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
         "messages": [{"role": "developer", "content": "be brief"},
                      {"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    )  # fmt: skip
    assert item.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert item.options == {"max_new_tokens": 5, "temperature": 0.5, "seed": 2**40 % 2**31,
                            "stop": ["\n"], "json_schema": {"type": "object"}}  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"temperature": 3}, "temperature"),
        ({"stop": ["a"] * 5}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 7}}}},
         "response_format.json_schema"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused_by_name(extra: dict, param: str):
    with pytest.raises(OpenAIRequestError) as refused:
        chat_item("a", {**CHAT_BODY, **extra})
    assert refused.value.param == param


def test_every_bad_line_is_one_invalid_item_and_the_rest_go_on():
    lines = BatchLines(CHAT)
    got = [
        lines.items(line("a", CHAT_BODY), 1),
        lines.items(b"{oops", 2),
        lines.items(line("a", CHAT_BODY), 3),  # repeated
        lines.items(line("b", {**CHAT_BODY, "model": "other"}), 4),
        lines.items(line("c", CHAT_BODY, url=EMBEDDINGS), 5),
        lines.items(line("d\u241e1", CHAT_BODY), 6),
        lines.items(line("e", {**CHAT_BODY, "n": 3}), 7),
    ]
    assert lines.model == "m" and lines.requests == 7
    assert [len(g) for g in got] == [1] * 7
    first, *bad = [g[0] for g in got]
    assert first.invalid is None and first.key == "a"
    assert all(b.invalid for b in bad)
    keys = [b.key for b in bad]
    assert keys == ["\u241eline2", "a\u241edup3", "b", "c", "\u241eline6", "e"]
    assert len(set(keys + ["a"])) == 7  # every item keyed apart, as the ledger needs
    assert "line 3 (custom_id)" in bad[1].invalid and "first on line 1" in bad[1].invalid
    assert "one model per batch" in bad[2].invalid


def test_an_embeddings_list_is_an_item_per_input_and_comes_back_together():
    lines = BatchLines(EMBEDDINGS)
    body = {"model": "m", "input": ["x", "y"], "encoding_format": "base64"}
    items = lines.items(line("many", body, EMBEDDINGS), 1) + lines.items(
        line("one", {"model": "m", "input": "z"}, EMBEDDINGS), 2
    )
    assert [i.key for i in items] == ["many\u241e0/2", "many\u241e1/2", "one"]
    assert split_key(items[1].key) == ItemKey("many", 1, 2)
    assert split_key("one").custom_id == "one"
    rows = [{"key": "many\u241e0/2", "status": "ok"}, {"key": "one", "status": "ok"}]
    grouped = list(requests_of(items, rows))  # the second input never ran (cancelled)
    assert [cid for cid, _ in grouped] == ["many", "one"]
    assert [r is None for _, r in grouped[0][1]] == [False, True]
    assert vector([1.0, -2.5], "base64") == "AACAPwAAIMA="  # little-endian float32


def test_token_ids_and_dimensions_are_refused():
    for body, param in [({"input": [[1, 2]]}, "input"), ({"input": "x", "dimensions": 8},
                        "dimensions")]:  # fmt: skip
        lines = BatchLines(EMBEDDINGS)
        (item,) = lines.items(line("a", {"model": "m", **body}, EMBEDDINGS), 1)
        assert item.invalid and f"({param})" in item.invalid
    assert Item(key="a").messages is None


def test_request_counts_follow_the_files_rule():
    ok, bad = "ok", "error"
    rows = [("a", ok), ("b\u241e0/2", ok), ("c\u241e0/2", ok), ("c\u241e1/2", bad),
            ("\u241eline4", "invalid")]  # fmt: skip
    # running: b is half done (neither), c and line 4 failed
    assert request_outcomes(rows, requests=5, ended=False) == (1, 2)
    # ended: b's second input never ran (cancelled), and request e never ran at all
    assert request_outcomes(rows, requests=5, ended=True) == (1, 4)
    assert request_outcomes([*rows, ("b\u241e1/2", ok)], requests=5, ended=True) == (2, 3)


def test_lines_are_split_across_pieces_and_an_overlong_one_is_never_held_whole():
    pieces = [b'{"a"', b': 1}\n\n{"b": 2', b"}\r\n", b"x" * 50, b"y" * 50, b"\n{}"]
    got = list(lines_of(pieces, max_line=40))
    assert got[:2] == [Line(b'{"a": 1}', 1), Line(b'{"b": 2}\r', 3)]  # blank line 2 counted
    assert got[2].too_long and got[2].number == 4 and got[2].data.startswith(b"xxx")
    assert got[3] == Line(b"{}", 5) and len(got) == 4
    assert list(lines_of([b"z" * 100], max_line=10))[0].too_long  # a file without line ends
    at_cap = list(lines_of([b"a" * 10 + b"\n" + b"b" * 11 + b"\nc"], max_line=10))
    assert [(x.number, x.too_long) for x in at_cap] == [(1, False), (2, True), (3, False)]


def test_nulls_are_as_if_not_sent_and_sampling_alone_takes_a_seed():
    item = chat_item("a", {**CHAT_BODY, "tools": None, "tool_choice": None, "audio": None})
    assert item.options is None  # greedy: no seed, one cache entry whatever the batch
    sampled = chat_item("a", {**CHAT_BODY, "temperature": 1}, seed=99)
    assert sampled.options == {"temperature": 1.0, "seed": 99}
    own = chat_item("a", {**CHAT_BODY, "top_p": 0.5, "seed": 5}, seed=99)
    assert own.options == {"top_p": 0.5, "seed": 5}
    tiny = chat_item("a", {**CHAT_BODY, "temperature": 1e-300}, seed=99)
    assert tiny.options == {"temperature": 1e-300}  # below MIN_TEMPERATURE: greedy, no seed
    shaped = chat_item("a", {**CHAT_BODY, "response_format": {"type": "json_object"}})
    assert shaped.options == {"json_schema": {"type": "object"}}


def test_the_first_usable_line_names_the_batchs_model():
    lines = BatchLines(CHAT)
    (refused,) = lines.items(line("a", {**CHAT_BODY, "model": "x", "n": 2}), 1)
    (used,) = lines.items(line("b", {**CHAT_BODY, "model": "m"}), 2)
    assert "n must be 1" in (refused.invalid or "") and used.invalid is None
    assert lines.model == "m"
