"""Reading files and checking items: clear errors for every kind of bad input."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from producers.readers import read_rows, rows_to_items
from schemas.errors import DuplicateKeysError, InputFileError, SluiceError
from schemas.jobs import ExplainPolicy
from tests.media_files import png_bytes


def items_of(path: Path, key: str | None = "id", cap: int = 100):
    columns, rows = read_rows(path)
    return rows_to_items(columns, rows, text_column="text", key_column=key, max_chars=cap)


def test_jsonl_csv_and_parquet_give_the_same_items(tmp_path: Path):
    rows = [{"id": "a", "text": "hello"}, {"id": "b", "text": "你好"}]
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "x.csv").write_text("id,text\na,hello\nb,你好\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    for name in ("x.jsonl", "x.csv", "x.parquet"):
        got = [(i.key, i.text, i.invalid) for i in items_of(tmp_path / name)]
        assert got == [("a", "hello", None), ("b", "你好", None)], name


def test_without_a_key_column_rows_are_numbered(tmp_path: Path):
    (tmp_path / "x.csv").write_text("text\none\ntwo\n")
    assert [i.key for i in items_of(tmp_path / "x.csv", key=None)] == ["1", "2"]


def test_bad_rows_become_invalid_items_with_reasons(tmp_path: Path):
    (tmp_path / "x.jsonl").write_text(
        '{"id": "e", "text": ""}\n{"id": "l", "text": "' + "y" * 101 + '"}\n'
        '{"id": "t", "text": ["a"]}\n{"text": "keyless"}\n[1, 2]\n{"id": "n"}\n'
    )
    got = {i.key: i.invalid for i in items_of(tmp_path / "x.jsonl")}
    assert got == {
        "e": "empty text",
        "l": "text is 101 characters, over the cap of 100 (SLUICE_MAX_TEXT_CHARS)",
        "t": "text column 'text' holds list, expected a string",
        "row:4": "missing key column 'id' in row 4",
        "line:5": "line 5 is not a JSON object",
        "n": "missing text column 'text'",
    }


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        (None, ".jsonl", "no such file"),
        ("a,b\n", ".txt", "unknown file type '.txt'"),
        ("\x00\x01garbage\nmore garbage\n", ".jsonl", "not JSONL"),
        ("PAR1 not really", ".parquet", "not a readable Parquet file"),
        ("", ".csv", "empty CSV file"),
    ],
)
def test_unreadable_files_are_refused_clearly(tmp_path: Path, content, suffix, message):
    path = tmp_path / f"input{suffix}"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputFileError, match=message):
        items_of(path)


def test_missing_columns_and_duplicate_keys_are_refused_at_submit(tmp_path: Path):
    (tmp_path / "x.csv").write_text("id,body\n1,a\n")
    with pytest.raises(InputFileError, match="text column 'text' not found; columns are: id, body"):
        items_of(tmp_path / "x.csv")
    with pytest.raises(InputFileError, match="key column 'key' not found"):
        items_of(tmp_path / "x.csv", key="key")
    (tmp_path / "d.csv").write_text("id,text\n1,a\n2,b\n1,c\n3,d\n3,e\n")
    with pytest.raises(DuplicateKeysError, match="'1', '3'"):
        items_of(tmp_path / "d.csv")


def test_duplicate_keys_are_refused_by_every_sdk_path_and_by_the_ledger(tmp_path: Path):
    """A media list naming one file twice, or prepared items sharing a key, would count two
    items but keep one result: refused before anything is recorded (no broker needed)."""
    from producers import Client
    from schemas.jobs import Item, JobSpec
    from schemas.settings import Settings

    image = tmp_path / "a.png"
    image.write_bytes(png_bytes())
    client = Client(Settings(data_dir=tmp_path / "d", input_roots=str(tmp_path)))
    with pytest.raises(DuplicateKeysError, match=f"duplicate keys in the input: '{image}'"):
        client.submit_media([image, image], "classify-image", model="unused")
    twice = [Item(key="k", text="a"), Item(key="k", text="b"), Item(key="j", text="c")]
    with pytest.raises(DuplicateKeysError, match="'k'; every item needs a unique key"):
        client.submit_items(twice, "embed")
    with pytest.raises(DuplicateKeysError, match="'k'"):
        client.ledger.create_job(JobSpec(task="embed", model="m", model_version="v"), twice, 2)
    assert client.ledger.jobs(10) == []  # nothing recorded


def test_explain_policies():
    assert ExplainPolicy.parse("none").wants("j", "k", 0.1) is False
    assert ExplainPolicy.parse("all").wants("j", "k", None) is True
    low = ExplainPolicy.parse("low-confidence:0.6")
    assert low.wants("j", "k", 0.5) and not low.wants("j", "k", 0.7)
    sample = ExplainPolicy.parse("sample:0.25")
    chosen = [sample.wants("job", str(i), None) for i in range(4000)]
    assert 0.2 < sum(chosen) / 4000 < 0.3
    assert chosen == [sample.wants("job", str(i), None) for i in range(4000)]  # stable on retry
    for bad in ("sometimes", "sample:2", "sample", "low-confidence:x", "all:1"):
        with pytest.raises(SluiceError, match="bad explain policy"):
            ExplainPolicy.parse(bad)


def test_a_bad_byte_deep_in_a_csv_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_bytes(
        b"id,text\n"
        + b"".join(b"%d,fine text\n" % i for i in range(5000))
        + b"5000,broken \xff\xfe byte\n"
    )
    with pytest.raises(InputFileError, match=r"line 5002 is not valid UTF-8 \(byte 0xff at"):
        items_of(path)


def test_overlong_keys_are_refused_at_submit(tmp_path: Path):
    (tmp_path / "x.csv").write_text("id,text\n" + "k" * 513 + ",hello\n")
    with pytest.raises(InputFileError, match="key in row 1 is 513 characters long"):
        items_of(tmp_path / "x.csv")


def test_job_fields_no_database_can_store_are_refused_at_submit(tmp_path: Path):
    """A NUL in a task parameter or a callback URL is refused before anything is recorded;
    a folder entry whose name is not valid Unicode becomes one invalid item, named escaped."""
    import os

    from producers import Client
    from producers.adapters.media_items import MediaItems
    from schemas.modalities import Modality
    from schemas.settings import Settings

    client = Client(Settings(data_dir=tmp_path / "d", input_roots=str(tmp_path)))
    with pytest.raises(SluiceError, match="a parameter holds a NUL character"):
        client.submit_texts(["hi"], "zero-shot-text", labels=["a\x00", "b"])
    with pytest.raises(SluiceError, match="callback_url holds a NUL character"):
        client.submit_texts(["hi"], "embed", callback_url="http://h/\x00")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "ok.png").write_bytes(png_bytes())
    (folder / os.fsdecode(b"bad\xff.png")).write_bytes(png_bytes())
    items = {
        i.key: i for i in MediaItems(Modality.IMAGE).items_from_folder(folder, client.settings)
    }
    assert set(items) == {"ok.png", "bad\\udcff.png"}
    assert items["ok.png"].invalid is None
    from schemas.storable import storable_items

    stored = {i.key: i for i in storable_items(list(items.values()))}
    assert stored["bad\\udcff.png"].invalid == (
        "the path holds characters that are not valid Unicode (lone surrogates)"
    )
    assert stored["ok.png"].path is not None


def test_a_number_beyond_float_range_is_an_invalid_record():
    from schemas.records import check_record

    features = [{"name": "f", "type": "number", "min": 0, "max": 1, "mean": 0.5, "std": 0.1}]
    assert (
        check_record({"f": 10**400}, features)[1] == "column 'f' is too large a number (401 digits)"
    )


def test_files_saved_with_a_byte_order_mark_read_like_any_other(tmp_path):
    """Excel and Notepad write UTF-8 with a BOM: the first key and column name stay clean."""
    from storage.row_sources import read_rows

    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes('\ufeff{"id": "a", "text": "hi"}\n{"id": "b", "text": "yo"}\n'.encode())
    csv_file = tmp_path / "bom.csv"
    csv_file.write_bytes("\ufeffid,text\na,hi\n".encode())
    assert [r["id"] for r in read_rows(jsonl, 10)[1]] == ["a", "b"]
    columns, rows = read_rows(csv_file, 10)
    assert columns[0] == "id" and [r["id"] for r in rows] == ["a"]
