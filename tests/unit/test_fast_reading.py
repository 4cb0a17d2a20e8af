"""The fast paths of a large submit (issue 16) give what the plain ones gave: JSONL lines read
by json's scanner as json.loads reads them (every bad line `invalid` with its number and
message), CSV rows as csv.DictReader makes them (short and long rows too), a batch's
storable check as storable_items decides it, and the garbage collector as it was after a
submit, finished or failed."""

import csv
import gc
import json
from pathlib import Path
from typing import Any

import pytest

from producers import Client, RecordingDispatcher
from producers.readers import read_rows, rows_to_items
from producers.submit_batches import storable_batch
from schemas.errors import InputFileError
from schemas.jobs import Item
from schemas.settings import Settings
from schemas.storable import storable_items
from storage.row_sources import MALFORMED

JSONL_LINES = [
    '{"id": "a", "text": "plain"}\n',
    '{"id": "b", "text": "trailing spaces"}   \n',
    '  {"id": "c", "text": "leading spaces"}\n',
    '{"id": "d", "text": "windows line end"}\r\n',
    "\n",
    "   \t \n",
    '{"id": "e", "text": "two objects"} {"id": "f"}\n',
    '["not", "an", "object"]\n',
    "42\n",
    '{"id": "g", "text": "cut off"\n',
    '{"id": "h", "text": NaN}\n',
    '{"id": "i", "text": "escaped \\u00e9 and \\ud83d\\ude00"}\n',
    '{"id": "j", "text": "tab\\tinside", "extra": {"nested": [1, 2.5, null, true]}}\n',
    '{"id": "k", "text": "lone \\ud800"}\n',
    '{"id": "l", "n": ' + "9" * 5000 + "}\n",
    '{"id": "m", "text": "no newline at the end"}',
]


def rows_as_json_loads_reads_them(lines: list[str]) -> list[dict[str, Any]]:
    """What a line at a time through json.loads gives (the reader before issue 16)."""
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append({MALFORMED: f"line {n} is not valid JSON: {exc.msg}", "_line": n})
            continue
        except ValueError as exc:
            why = str(exc).split(";")[0]
            rows.append({MALFORMED: f"line {n} cannot be read: {why}"[:300], "_line": n})
            continue
        if not isinstance(row, dict):
            rows.append({MALFORMED: f"line {n} is not a JSON object", "_line": n})
            continue
        rows.append(row)
    return rows


def test_jsonl_lines_are_read_as_json_loads_reads_them_one_by_one(tmp_path: Path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(JSONL_LINES), encoding="utf-8")
    _, rows = read_rows(path)
    got = list(rows)
    assert got == rows_as_json_loads_reads_them(JSONL_LINES)
    assert any(MALFORMED in r for r in got) and any(r.get("id") == "m" for r in got)


def test_bad_jsonl_lines_become_invalid_items_named_by_their_line(tmp_path: Path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(JSONL_LINES), encoding="utf-8")
    columns, rows = read_rows(path)
    items = rows_to_items(columns, rows, text_column="text", key_column="id", max_chars=100)
    invalid = {i.key: i.invalid for i in items if i.invalid}
    assert invalid["line:7"] == "line 7 is not valid JSON: Extra data"
    assert invalid["line:8"] == "line 8 is not a JSON object"
    assert invalid["line:10"].startswith("line 10 is not valid JSON")
    assert invalid["line:15"].startswith("line 15 cannot be read: Exceeds the limit")
    ok = [i.key for i in items if i.invalid is None]
    assert ok == ["a", "b", "c", "d", "i", "j", "k", "m"]  # h: NaN is not a text


def test_csv_rows_are_as_dict_reader_makes_them(tmp_path: Path):
    path = tmp_path / "ragged.csv"
    lines = [
        "id,text,extra",
        "1,full row,x",
        "2,short row",
        "",
        '3,"quoted, with comma\nand a newline",y',
        "4,long row,z,spill,more",
        "5",
        ",,",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        expected = list(csv.DictReader(fh))
    columns, rows = read_rows(path)
    assert columns == ["id", "text", "extra"]
    assert list(rows) == expected


PLAIN = [Item(key=f"k{n}", text=f"text {n}") for n in range(5)]
NOT_PLAIN = {
    "a NUL in a text": Item(key="n", text="bad\x00text"),
    "a lone surrogate in a text": Item(key="s", text="bad \ud800"),
    "a NUL in a key": Item(key="bad\x00key", text="x"),
    "a key too long": Item(key="k" * 513, text="x"),
    "a NaN text": Item(key="f", text=float("nan")),
    "a number": Item(key="i", text=7),
    "no text": Item(key="none"),
    "a NUL in why it is invalid": Item(key="v", invalid="why\x00"),
    "fields with a NUL": Item(key="fl", text="x", fields={"title": "a\x00b"}),
    "a record": Item(key="r", record={"f1": float("inf")}),
    "a path": Item(key="p", path="/x/\ud800.png"),
}


@pytest.mark.parametrize("odd", list(NOT_PLAIN), ids=list(NOT_PLAIN))
def test_a_batch_is_made_storable_as_storable_items_makes_it(odd: str):
    batch = [*PLAIN, NOT_PLAIN[odd], *PLAIN[:0]]
    try:
        expected: list[Item] | str = storable_items(batch, 3)
    except InputFileError as exc:
        expected = str(exc)
    try:
        got: list[Item] | str = storable_batch(batch, 3)
    except InputFileError as exc:
        got = str(exc)
    assert got == expected


def test_a_plain_batch_passes_as_it_is():
    batch = [*PLAIN, Item(key="why", invalid="empty text"), Item(key="é", text="naïve ☕")]
    assert storable_batch(batch, 1) is batch


@pytest.mark.parametrize("fails", [False, True])
def test_the_garbage_collector_is_as_before_after_a_submit(tmp_path: Path, fails: bool):
    client = Client(
        Settings(
            data_dir=tmp_path / "data",
            database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            broker_url="redis://127.0.0.1:1/0",
        ),
        RecordingDispatcher(),
    )
    client.receive_batch = 10
    path = tmp_path / "in.jsonl"
    keys = [f"k{n}" for n in range(35)] + (["k3"] if fails else [])
    path.write_text("".join(json.dumps({"id": k, "text": "some words"}) + "\n" for k in keys))
    assert gc.get_freeze_count() == 0
    if fails:
        with pytest.raises(InputFileError, match="k3"):
            client.submit_file(path, "embed", key_column="id")
    else:
        job_id = client.submit_file(path, "embed", key_column="id")
        assert client.status(job_id).counts.total == 35
    assert gc.get_freeze_count() == 0 and gc.isenabled()
