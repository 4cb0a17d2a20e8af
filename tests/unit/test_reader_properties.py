"""Property tests of the readers: any JSONL, CSV or Parquet input, for a text, records or media
task, either submits (every item then storable by any database, keys unique) or is refused with
a SluiceError that names the line, row or item, or the file-level problem. Never another
exception: `sluice submit` and the REST API would show a traceback or a 500.

The files go through Client.submit_file (the path `sluice submit` takes) on a SQLite ledger;
only the broker (the message is recorded, not sent) and the model (a stand-in with a features
schema) are stubbed, as they are beside the point."""

import csv
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from producers import Client, RecordingDispatcher
from producers.api import create_app
from producers.model_refs import ModelRef
from schemas.errors import SluiceError
from schemas.jobs import Item
from schemas.settings import Settings
from schemas.storable import json_problem, key_problem, unstorable_text
from storage.apikeys import ApiKeys
from tests.media_files import png_bytes

# Hypothesis keeps caches (.hypothesis/) even without a database, some while this module is
# imported: outside the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "sluice-hypothesis")
SETTINGS = settings(
    max_examples=500,
    deadline=None,
    # CI replays the same examples every run (a landing must not depend on the draw); a
    # developer's `make test` explores new ones each time, and what it finds is a bug to fix.
    derandomize=bool(os.environ.get("SLUICE_FAULT_TOOLS_REQUIRED")),
    database=None,  # nothing written in the repository; failures print their example
    suppress_health_check=[  # hostile inputs are large and slow to make, by design
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
TASKS = {"text": "embed", "records": "classify-records", "media": "classify-image"}
FEATURES = [
    {"name": "f1", "type": "number", "min": -10, "max": 10, "mean": 0, "std": 1},
    {"name": "f2", "type": "integer", "min": 0, "max": 100, "mean": 5, "std": 2},
    {"name": "f3", "type": "boolean", "mean": 0.5, "std": 0.5},
]
# How a refusal may name what is wrong: the line, row or item...
NAMES_A_ROW = re.compile(r"\b(line|row|item) \d+|the header row")
# ...or a problem of the whole file.
FILE_LEVEL = (
    "no such file",
    "not JSONL",
    "empty CSV file",
    "not a readable Parquet file",
    "not found; columns are",
    "duplicate keys in the input",
    "no items to process",
)


class Harness:
    """A Client on SQLite whose messages are recorded, with the items of each submit kept."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "inputs"
        self.work.mkdir()
        (self.work / "a.png").write_bytes(png_bytes((4, 4)))
        (self.work / "b.png").write_bytes(png_bytes((4, 4), seed=1))
        (self.work / "empty.png").write_bytes(b"")
        model = root / "records-model"
        model.mkdir()
        (model / "features.json").write_text(json.dumps({"features": FEATURES}))
        self.client = Client(
            Settings(
                data_dir=root / "data",
                database_url=f"sqlite:///{root / 'ledger.db'}",
                broker_url="redis://127.0.0.1:1/0",
                input_roots=str(self.work),
                max_text_chars=300,
                max_inline_bytes=2000,
                api_max_items=6,  # uploads over it are refused (413) while read
            ),
            RecordingDispatcher(),
        )
        self.submitted: list[list[Item]] = []
        stub = ModelRef(name="stub", path=model, version="0123456789abcdef")
        client = self.client
        client.resolve_model = lambda model, task, tenant=None: stub  # type: ignore[method-assign]
        create_job = client.ledger.create_job

        def recording(job: Any, items: list[Item], chunk_size: int) -> Any:
            self.submitted.append(items)
            return create_job(job, items, chunk_size)

        client.ledger.create_job = recording  # type: ignore[method-assign]

    def submit(self, content: bytes, suffix: str, modality: str, key: str | None) -> list[Item]:
        """The items recorded, or [] when the input was refused (and the refusal checked)."""
        path = self.work / f"input{suffix}"
        path.write_bytes(content)
        self.submitted.clear()
        try:
            self.client.submit_file(path, TASKS[modality], key_column=key)
        except SluiceError as exc:
            assert_names_the_problem(str(exc))
            assert not self.submitted
            return []
        [items] = self.submitted
        assert_storable(items)
        return items


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    return Harness(tmp_path_factory.mktemp("reader-properties"))


def assert_names_the_problem(message: str) -> None:
    assert NAMES_A_ROW.search(message) or any(s in message for s in FILE_LEVEL), message


def assert_storable(items: list[Item]) -> None:
    keys = [i.key for i in items]
    assert items and len(set(keys)) == len(keys)
    for item in items:
        assert item.key and key_problem(item.key) is None, item.key
        if item.invalid is not None:
            assert item.invalid and unstorable_text(item.invalid) is None, item
            continue
        fields = [f for f in ("text", "path", "data", "record") if getattr(item, f) is not None]
        assert len(fields) == 1, item
        value = getattr(item, fields[0])
        assert json_problem(value) is None, item
        if item.record is not None:
            assert set(item.record) == {f["name"] for f in FEATURES}
            assert all(math.isfinite(v) for v in item.record.values())


# -- what Hypothesis found, kept as examples ----------------------------------------------------


def parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


DEEP = b"[" * 100_000 + b"]" * 100_000
FOUND = [
    # bytes that are not UTF-8 (was: "position 40" of a decoding buffer, no line)
    (b'{"id": "a", "text": "x"}\n\n{"id": "b", "text": "caf\xff"}\n', ".jsonl", "text",
     "line 3 is not valid UTF-8 (byte 0xff at character 25); save the file as UTF-8"),
    (b"id,text\r\na,x\r\nb,\xc3(\r\n", ".csv", "text",
     "line 3 is not valid UTF-8 (byte 0xc3 at character 3)"),
    (b'id,"text' + b"x" * 140_000 + b'"\n', ".csv", "text",
     "the header row cannot be read (field larger than field limit (131072))"),
    (b"id,text\na,x\nb," + b"x" * 140_000 + b"\n", ".csv", "text",
     "row 2 cannot be read (field larger than field limit (131072))"),
    # a date Python cannot hold (was: OverflowError, a traceback)
    (parquet_bytes(pa.table({
        "id": ["a", "b"], "f1": [1.0, 2.0], "f2": [1, 2], "f3": [True, False],
        "when": pa.array([0, 2**31 - 1], pa.int32()).view(pa.date32())})),
     ".parquet", "records",
     "row 2, column 'when': a value that cannot be read (OverflowError: "),
]  # fmt: skip


@pytest.mark.parametrize("content, suffix, modality, message", FOUND)
def test_what_hypothesis_found_is_refused_naming_the_line(
    harness: Harness, content: bytes, suffix: str, modality: str, message: str
):
    path = harness.work / f"found{suffix}"
    path.write_bytes(content)
    with pytest.raises(SluiceError) as caught:
        harness.client.submit_file(path, TASKS[modality], key_column="id")
    assert str(caught.value).startswith(f"{path}: {message}")


UNREADABLE_LINES = [
    # a line nested deeper than Python's JSON parser goes (was: RecursionError, a traceback)
    (b'{"id": "a", "text": "x"}\n{"id": "b", "text": ' + DEEP + b"}\n",
     "line 2 nests arrays or objects too deeply to be read"),
    # an integer of more digits than Python converts (was: no line, and advice for programmers)
    (b'{"id": "a", "text": "x"}\n{"id": ' + b"9" * 5000 + b', "text": "x"}\n',
     "line 2 cannot be read: Exceeds the limit (4300 digits) for integer string conversion: "
     "value has 5000 digits"),
]  # fmt: skip


@pytest.mark.parametrize("content, message", UNREADABLE_LINES)
def test_a_jsonl_line_json_cannot_read_is_that_items_problem(
    harness: Harness, content: bytes, message: str
):
    """Like a malformed line: that line's item is `invalid` with the reason; the rest goes on."""
    items = harness.submit(content, ".jsonl", "text", "id")
    assert [i.invalid for i in items] == [None, message]


def test_media_references_the_os_refuses_are_invalid_items_not_a_refused_file(harness: Harness):
    """A NUL, a name too long, an unknown ~user or a broken file:// URI was a ValueError,
    OSError or RuntimeError: the whole file refused, or a traceback."""
    refs = ["a.png", "a\x00.png", "n" * 300 + ".png", "~nosuchuser-sluice/a.png", "file://[::1/a"]
    rows = "".join(json.dumps({"id": str(n), "path": r}) + "\n" for n, r in enumerate(refs))
    items = {i.key: i for i in harness.submit(rows.encode(), ".jsonl", "media", "id")}
    assert items["0"].path == str(harness.work / "a.png") and items["0"].invalid is None
    assert (
        items["1"].invalid
        == "media reference 'a\\x00.png' is not a usable path (embedded null byte)"
    )
    assert items["2"].invalid is not None and items["2"].invalid.endswith("(File name too long)")
    assert (
        items["3"].invalid is not None
        and "Could not determine home directory" in items["3"].invalid
    )
    assert (
        items["4"].invalid
        == "media reference 'file://[::1/a' is not a usable path (Invalid IPv6 URL)"
    )


def test_a_boolean_is_not_a_key(harness: Harness):
    """`true` was taken as the key "True" (bool is an int to Python)."""
    items = harness.submit(
        b'{"id": true, "text": "x"}\n{"id": "True", "text": "y"}\n', ".jsonl", "text", "id"
    )
    assert [(i.key, i.invalid) for i in items] == [
        ("row:1", "key column 'id' holds bool, expected a string or an integer"),
        ("True", None),
    ]


# -- values ---------------------------------------------------------------------------------------
# Mostly what a user means, each part sometimes replaced by something hostile: an input that is
# refused at its first line says nothing about the rows after it.

SPECIAL_TEXTS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udcff",
    "\ufeff",
    "\r\n",
    "NaN",
    "1e999",
    "-0",
    "true",
    "k" * 513,
    "y" * 301,
    "line:1",
    "row:2",
    "1",
]
characters = st.characters(exclude_categories=())  # surrogates too
texts = st.text(characters, max_size=12) | st.sampled_from(SPECIAL_TEXTS)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**700), max_value=10**700)
    | st.floats()
    | texts
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(texts, kids, max_size=3),
    max_leaves=8,
)
GOOD_REFS = ["a.png", "b.png", "./a.png", "data:image/png;base64,iVBORw0KGgo="]
MEDIA_REFS = [
    *GOOD_REFS,
    "empty.png",
    "missing.png",
    "../a.png",
    "/etc/passwd",
    "~/a.png",
    "~nosuchuser-sluice/a.png",
    "file:///etc/passwd",
    "file://elsewhere/a.png",
    "file://[::1/a.png",
    "file:a.png",
    "https://example.com/a.png",
    "data:image/png;base64,!!!",
    "data:image/png;base64," + "A" * 4000,
    "data:text/plain,hello",
    "data:image/png;base64,\u00e9",
    "a" * 300 + ".png",
    "/".join(["d"] * 3000),
    "a\x00.png",
    "\ud800.png",
    " ",
]
feature_values = (
    st.sampled_from([0, 1, 5, -3, 2.5, 1e308, True, False, "1", "true", " ", "x", "nan", "inf"])
    | scalars
)
keys = (
    st.integers(min_value=-3, max_value=5)
    | st.sampled_from(["a", "b", "A", "0", "", " ", "\x00", "\ud800"])
    | texts
    | st.integers(min_value=10**500, max_value=10**520)
    | json_values
)
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "text": st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    "path": st.sampled_from(GOOD_REFS),
    "f1": st.floats(-10, 10),
    "f2": st.integers(0, 100),
    "f3": st.booleans(),
}
BAD: dict[str, st.SearchStrategy[Any]] = {
    "text": texts | json_values,
    "path": st.sampled_from(MEDIA_REFS) | texts | json_values,
    "f1": feature_values,
    "f2": feature_values,
    "f3": feature_values,
}
# The columns of one input (shared by its rows): one modality's, or every one's.
COLUMN_SETS = [("text",), ("path",), ("f1", "f2", "f3"), ("text", "path", "f1", "f2", "f3")]
columns_of_the_input = st.shared(st.sampled_from(COLUMN_SETS), key="columns")


def rarely(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """A value from `good`, one time in ten from `bad`."""
    return draw(bad if draw(st.integers(0, 9)) == 0 else good)


def good_key(n: int) -> st.SearchStrategy[Any]:
    return st.sampled_from([n, str(n), f"k{n}"])


@st.composite
def rows(draw: st.DrawFn, n: int) -> dict[str, Any]:
    """Row `n`: a key (mostly), the input's columns (mostly), sometimes other columns."""
    row = {}
    if draw(st.integers(0, 9)):
        row["id"] = rarely(draw, good_key(n), keys)
    for column in draw(columns_of_the_input):
        if draw(st.integers(0, 9)):
            row[column] = rarely(draw, GOOD[column], BAD[column])
    if not draw(st.integers(0, 5)):
        row.update(draw(st.dictionaries(texts, json_values, max_size=2)))
    return row


# -- JSONL ----------------------------------------------------------------------------------------

RAW_JSONL_LINES = [
    b"",
    b"   ",
    b"NaN",
    b"[1, 2]",
    b'"just a string"',
    b'{"id": NaN, "text": Infinity}',
    b'{"id": "n", "text": "x", "f1": -Infinity}',
    b'{"id": 1' + b"9" * 5000 + b', "text": "big"}',
    b'{"id": "big", "f1": ' + b"9" * 5000 + b"}",
    b'{"id": "s", "text": "\\ud800"}',
    b'{"id": "\\udfff", "text": "x"}',
    b'{"id": "z", "text": "\\u0000"}',
    b'{"id": "u", "text": "caf\xc3\xa9"}',
    b'{"id": "v", "text": "bad \xff byte"}',
    b'{"id": "w", "text": "\xed\xa0\x80"}',
    b"\xef\xbb\xbf{}",
    b'{"id": "dup", "id": "dup2", "text": "x"}',
    b'{"id": "t", "text": "unterminated',
]


@st.composite
def jsonl_line(draw: st.DrawFn, n: int) -> bytes:
    kind = draw(st.sampled_from(["row"] * 8 + ["value", "raw", "binary", "deep"]))
    if kind == "row":
        ascii_only = draw(st.booleans())
        text = json.dumps(draw(rows(n)), ensure_ascii=ascii_only)
        return text.encode("utf-8", "surrogatepass")  # a lone surrogate: invalid UTF-8
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    if kind == "raw":
        return draw(st.sampled_from(RAW_JSONL_LINES))
    if kind == "binary":
        return draw(st.binary(max_size=20))
    depth = draw(st.sampled_from([10, 500, 990, 1500, 100_000]))
    value = b"[" * depth + b"]" * depth
    return b'{"id": "deep", "text": "x", "f1": ' + value + b"}"


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    lines = [draw(jsonl_line(n)) for n in range(1, draw(st.integers(0, 8)) + 1)]
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    body = sep.join(lines) + draw(st.sampled_from([b"", sep]))
    return rarely(draw, st.just(b""), st.just(b"\xef\xbb\xbf")) + body


@SETTINGS
@given(
    content=jsonl_files(), modality=st.sampled_from(list(TASKS)), key=st.sampled_from([None, "id"])
)
def test_any_jsonl_submits_or_is_refused_naming_the_line(
    harness: Harness, content: bytes, modality: str, key: str | None
):
    items = harness.submit(content, ".jsonl", modality, key)
    if items:  # nothing lost: one item per line that is not blank (a leading BOM is not text)
        lines = content.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n").split("\n")
        assert len(items) == sum(1 for line in lines if line.strip())


# -- CSV ------------------------------------------------------------------------------------------

COLUMN_NAMES = ["id", "text", "path", "f1", "f2", "f3", "", "other", "\ufeffid", " id"]
CSV_CELLS = ["", "a", "b", "1", "x" * 140_000, '"', '"open', "a,b", "\r", "é"]
cells = texts | st.sampled_from(CSV_CELLS + MEDIA_REFS) | st.integers().map(str)


def csv_cell(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    columns = draw(columns_of_the_input)
    good_header = st.permutations(["id", *columns]) | st.just(list(columns))
    header = rarely(draw, good_header, st.lists(st.sampled_from(COLUMN_NAMES) | texts, max_size=5))
    body = []
    for n in range(1, draw(st.integers(0, 6)) + 1):
        good = {"id": good_key(n), **GOOD}
        row = [csv_cell(rarely(draw, good.get(name, cells), cells.map(str))) for name in header]
        if not draw(st.integers(0, 9)):  # ragged: a cell too few or too many
            row = row[:-1] if draw(st.booleans()) else [*row, draw(cells)]
        body.append(row)
    style = draw(st.sampled_from(["minimal", "all", "none", "raw"]))
    if style == "raw":  # no quoting at all: commas, quotes and newlines in cells break rows
        text = "\n".join(",".join(r) for r in [header, *body])
    else:
        out = io.StringIO()
        quoting = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL, "none": csv.QUOTE_NONE}
        writer = csv.writer(out, quoting=quoting[style], escapechar="\\")
        try:
            writer.writerows([header, *body])
        except csv.Error:  # QUOTE_NONE cannot write a row of one empty field
            reject()
        text = out.getvalue()
    data = text.encode("utf-8", "surrogatepass")
    if not draw(st.integers(0, 9)):
        at = draw(st.integers(0, len(data)))
        bad = draw(st.sampled_from([b"\xff", b"\x00", b"\xc3", b"\xef\xbb\xbf"]))
        data = data[:at] + bad + data[at:]
    return rarely(draw, st.just(b""), st.just(b"\xef\xbb\xbf")) + data


@SETTINGS
@given(
    content=csv_files(), modality=st.sampled_from(list(TASKS)), key=st.sampled_from([None, "id"])
)
def test_any_csv_submits_or_is_refused_naming_the_row(
    harness: Harness, content: bytes, modality: str, key: str | None
):
    harness.submit(content, ".csv", modality, key)


# -- Parquet --------------------------------------------------------------------------------------

STRUCT = pa.struct([("a", pa.int64()), ("b", pa.string())])
# Counts of days, milliseconds, microseconds: mostly far beyond the years Python's dates reach.
TICKS = st.integers(-(2**62), 2**62) | st.sampled_from([0, 2**62, -(2**62), 2**31 - 1])
PARQUET_TYPES = {
    "string": (pa.string(), texts.filter(lambda s: unstorable_text(s) is None or "\x00" in s)),
    "large_string": (pa.large_string(), st.sampled_from(["a", "b", "", "k" * 513, "\x00"])),
    "binary": (pa.binary(), st.binary(max_size=8)),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "int8": (pa.int8(), st.integers(-128, 127)),
    "float64": (pa.float64(), st.floats()),
    "float32": (pa.float32(), st.floats(width=32)),
    "bool": (pa.bool_(), st.booleans()),
    "null": (pa.null(), st.none()),
    "date32": (pa.date32(), st.integers(-(2**31), 2**31 - 1) | st.just(2**31 - 1)),
    "timestamp": (pa.timestamp("ms"), TICKS),
    "timestamp_tz": (pa.timestamp("us", tz="UTC"), TICKS),
    "duration": (pa.duration("ms"), TICKS),
    "decimal": (pa.decimal128(38, 3), st.decimals(-(10**30), 10**30, places=3)),
    "list": (pa.list_(pa.string()), st.lists(st.sampled_from(["a", "\x00", ""]), max_size=3)),
    "struct": (STRUCT, st.fixed_dictionaries({"a": st.integers(-5, 5), "b": st.just("s")})),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), st.sampled_from(["a", "b", "c"])),
}
GOOD_TYPES = {
    "text": pa.string(),
    "path": pa.string(),
    "f1": pa.float64(),
    "f2": pa.int64(),
    "f3": pa.bool_(),
}
ROWS = st.shared(st.integers(0, 6), key="rows")


@st.composite
def any_column(draw: st.DrawFn, name: str | None = None) -> tuple[str, pa.Array]:
    """A column of any type, with nulls."""
    if name is None:
        name = draw(st.sampled_from(COLUMN_NAMES[:7]) | st.text(max_size=6))
    kind = draw(st.sampled_from(sorted(PARQUET_TYPES)))
    type_, values = PARQUET_TYPES[kind]
    column = draw(st.lists(st.none() | values, min_size=draw(ROWS), max_size=draw(ROWS)))
    if kind == "dictionary":
        return name, pa.array(column, pa.string()).dictionary_encode()
    if kind == "date32":  # any day count, far beyond the years Python's dates reach
        return name, pa.array(column, pa.int32()).view(type_)
    if kind in ("timestamp", "timestamp_tz", "duration"):
        return name, pa.array(column, pa.int64()).view(type_)
    return name, pa.array(column, type_)


@st.composite
def good_column(draw: st.DrawFn, name: str) -> tuple[str, pa.Array]:
    """The key or an input column as a user writes it, sometimes with a null."""
    n = draw(ROWS)
    if name == "id":
        as_text = draw(st.booleans())
        return name, pa.array([str(k) if as_text else k for k in range(1, n + 1)])
    values = [rarely(draw, GOOD[name], st.none()) for _ in range(n)]
    return name, pa.array(values, GOOD_TYPES[name])


@st.composite
def parquet_files(draw: st.DrawFn) -> bytes:
    names = (["id"] if draw(st.integers(0, 9)) else []) + list(draw(columns_of_the_input))
    columns = [rarely(draw, good_column(name), any_column(name)) for name in names]
    if not draw(st.integers(0, 3)):
        columns += draw(st.lists(any_column(), max_size=3))
    table = pa.Table.from_arrays([c for _, c in columns], names=[n for n, _ in columns])
    out = io.BytesIO()
    try:
        pq.write_table(table, out, row_group_size=draw(st.sampled_from([1, 2, 1000])))
    except pa.ArrowException:
        reject()  # a table Parquet cannot hold is not an input anyone can submit
    data = out.getvalue()
    damage = draw(st.sampled_from(["none"] * 8 + ["truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    return data


@SETTINGS
@given(
    content=parquet_files(),
    modality=st.sampled_from(list(TASKS)),
    key=st.sampled_from([None, "id"]),
)
def test_any_parquet_submits_or_is_refused_naming_the_row(
    harness: Harness, content: bytes, modality: str, key: str | None
):
    items = harness.submit(content, ".parquet", modality, key)
    if items:  # nothing lost: one item per row
        assert len(items) == pq.ParquetFile(io.BytesIO(content)).metadata.num_rows


# -- anything at all ------------------------------------------------------------------------------


@SETTINGS
@given(
    content=st.binary(max_size=200) | st.sampled_from([b"PAR1", b"PAR1\x00\x00\x00\x00PAR1"]),
    suffix=st.sampled_from([".jsonl", ".ndjson", ".csv", ".parquet", ".JSONL"]),
    modality=st.sampled_from(list(TASKS)),
    key=st.sampled_from([None, "id"]),
)
def test_arbitrary_bytes_submit_or_are_refused(
    harness: Harness, content: bytes, suffix: str, modality: str, key: str | None
):
    harness.submit(content, suffix, modality, key)


# -- the REST API's upload ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(harness: Harness) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = ApiKeys(harness.client.ledger.engine).create("acme")
    with TestClient(create_app(client=harness.client)) as http:
        yield http, {"Authorization": f"Bearer {key.key}"}


@st.composite
def uploads(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["jsonl", "csv", "parquet", "bytes"]))
    if kind == "jsonl":
        return draw(st.sampled_from(["in.jsonl", "IN.NDJSON"])), draw(jsonl_files())
    if kind == "csv":
        return "in.csv", draw(csv_files())
    if kind == "parquet":
        return "in.parquet", draw(parquet_files())
    name = draw(st.sampled_from(["x.jsonl", "x.csv", "x.parquet", "x.txt", "", "dir/x.csv"]))
    return name, draw(st.binary(max_size=100))


@SETTINGS
@given(
    upload=uploads(),
    modality=st.sampled_from(list(TASKS)),
    fields=st.fixed_dictionaries(
        {},
        optional={
            "key_column": st.sampled_from(["id", "", "nope", "\x00"]),
            "text_column": st.sampled_from(["text", "", "id"]),
            "media_column": st.sampled_from(["path", "text"]),
        },
    ),
)
def test_api_uploads_get_2xx_or_4xx_with_a_json_error(
    api: tuple[TestClient, dict[str, str]],
    upload: tuple[str, bytes],
    modality: str,
    fields: dict[str, str],
):
    http, auth = api
    name, content = upload
    r = http.post(
        "/v1/jobs",
        headers=auth,
        files={"file": (name, content)},
        data={"task": TASKS[modality], **fields},
    )
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert isinstance(r.json()["detail"], str | list), r.text
        assert f"{tempfile.gettempdir()}/tmp" not in r.text  # the upload, not the server's copy


def test_an_upload_is_named_by_its_own_name(api: tuple[TestClient, dict[str, str]]):
    """Messages named the server's temporary copy (/tmp/tmpab12cd34.jsonl), not the upload."""
    http, auth = api
    r = http.post(
        "/v1/jobs",
        headers=auth,
        files={"file": ("in.jsonl", b'{"text": "a"}\n{"text": "\xff"}\n')},
        data={"task": "embed"},
    )
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "in.jsonl: line 2 is not valid UTF-8 (byte 0xff at character 11); save the file as UTF-8"
    )


def test_a_column_name_that_is_not_unicode_is_quoted_escaped(
    api: tuple[TestClient, dict[str, str]],
):
    """A JSON key "\\ud800" named in a refusal could not be encoded: a 500, not a 400."""
    http, auth = api
    r = http.post(
        "/v1/jobs",
        headers=auth,
        files={"file": ("in.jsonl", b'{"\\ud800": "x"}\n')},
        data={"task": "embed"},
    )
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "in.jsonl: text column 'text' not found; columns are: \\ud800; "
        "choose one with --text-column"
    )
