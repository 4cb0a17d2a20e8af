"""`sluice train` at submit: a bad request fails before anything is recorded or queued, with a
message that names the column, label or row and says what to change; a good one becomes the
spec the worker trains (columns, labels and a data fingerprint that is the same whichever
format the data came in). No broker, Ray or worker is involved."""

import json
import os
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer

from producers import model_refs
from producers.client import Client
from producers.training import build_spec
from schemas.catalog import load_catalog
from schemas.errors import ConfigError, InputFileError, SluiceError, TrainingError
from schemas.settings import Settings
from schemas.training import TrainSpec
from storage.row_sources import read_rows, read_table
from tests.media_files import png_bytes

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(autouse=True)
def _no_sluice_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker or database configured in the environment must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("SLUICE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    """Breast-cancer data with an id column first (a key, never a feature)."""
    frame = load_breast_cancer(as_frame=True).frame
    frame.insert(0, "id", [f"p{n:03d}" for n in range(len(frame))])
    return frame


def no_base(ref: str, task: str) -> Any:
    raise AssertionError(f"records training resolved a base model ({ref!r}, {task!r})")


def text_base(cache: Path) -> Callable[[str, str], Any]:
    return lambda ref, task: model_refs.resolve(ref, load_catalog().get(task), cache)


def spec_of(
    tmp_path: Path,
    data: Path | str,
    *,
    task: str = "classify-records",
    label_column: str = "y",
    resolve_base: Any = no_base,
    settings: Settings | None = None,
    **options: Any,
) -> TrainSpec:
    return build_spec(
        settings or Settings(data_dir=tmp_path),
        resolve_base,
        task=task,
        name="model",
        data=str(data),
        label_column=label_column,
        **options,
    )


def refused(
    tmp_path: Path, data: Path | str, error: type[Exception] = TrainingError, **options: Any
) -> str:
    """The message a user reads for a request that must fail at submit."""
    with pytest.raises(error) as caught:
        spec_of(tmp_path, data, **options)
    return str(caught.value)


def csv_file(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl_file(tmp_path: Path, rows: list[dict[str, Any]], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


SMALL = "id,a,b,y\n1,0.1,2,x\n2,0.2,3,z\n3,0.3,4,x\n4,0.4,5,z\n5,0.5,6,x\n6,0.6,7,z\n"


# -- columns ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"label_column": "diagnosis"}, "column 'diagnosis' not found (--label-column)"),
        ({"key_column": "patient"}, "column 'patient' not found (--key-column)"),
        ({"feature_columns": ["a", "height"]}, "column 'height' not found (--feature-columns)"),
        (
            {"task": "classify-text", "text_column": "body"},
            "column 'body' not found (--text-column)",
        ),
    ],
)
def test_an_unknown_column_is_named_with_the_real_columns(tmp_path: Path, options, named):
    data = csv_file(tmp_path, SMALL)
    message = refused(tmp_path, data, resolve_base=text_base(tmp_path / "cache"), **options)
    assert named in message
    assert message.startswith(str(data.resolve()))
    assert message.endswith("columns are: id, a, b, y")


def test_an_unknown_column_of_a_jsonl_file_lists_its_columns_in_file_order(tmp_path: Path):
    data = jsonl_file(
        tmp_path,
        [{"zeta": 1, "alpha": 2, "label": "a"}, {"zeta": 3, "alpha": 4, "label": "b", "extra": 5}],
    )
    assert refused(tmp_path, data, label_column="y").endswith(
        "columns are: zeta, alpha, label, extra"
    )


# -- empty and malformed data -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("header.csv", "a,b,y\n"),
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n\n"),
    ],
)
def test_data_without_rows_is_refused(tmp_path: Path, name: str, content: str):
    data = csv_file(tmp_path, content, name)
    assert refused(tmp_path, data) == f"{data.resolve()}: no rows to train on"


def test_a_missing_or_unreadable_file_is_refused_clearly(tmp_path: Path):
    assert "no such file" in refused(tmp_path, tmp_path / "nope.csv", InputFileError)
    (tmp_path / "data.txt").write_text("a,b\n")
    assert "unknown file type '.txt'; use .jsonl, .csv or .parquet" in refused(
        tmp_path, tmp_path / "data.txt", InputFileError
    )
    assert "empty CSV file (no header row)" in refused(
        tmp_path, csv_file(tmp_path, ""), InputFileError
    )


def test_jsonl_lines_that_are_not_objects_are_named_by_line(tmp_path: Path):
    rows = [{"a": n, "b": n * 2, "y": "xz"[n % 2]} for n in range(10)]
    data = jsonl_file(tmp_path, rows)
    with data.open("a", encoding="utf-8") as fh:
        fh.write("{oops\n[1, 2]\n")
    message = refused(tmp_path, data)
    assert "lines that are not JSON objects" in message
    assert "line 11 is not valid JSON" in message and "line 12 is not a JSON object" in message
    assert "'_line'" not in message


# -- labels -----------------------------------------------------------------------------------


def test_one_class_only_is_refused(tmp_path: Path):
    data = csv_file(tmp_path, "a,y\n1,spam\n2,spam\n3,spam\n")
    assert refused(tmp_path, data) == (
        "column 'y' holds one class only ('spam'); a classifier needs at least two"
    )


def test_a_label_with_a_single_row_is_named(tmp_path: Path):
    data = csv_file(tmp_path, SMALL + "7,0.7,8,rare\n")
    message = refused(tmp_path, data)
    assert message.startswith("every label needs at least 2 rows")
    assert "'rare' has 1 row" in message and "'x'" not in message


def test_declared_labels_must_match_the_data(tmp_path: Path):
    data = csv_file(tmp_path, SMALL)
    message = refused(tmp_path, data, labels=["x"])
    assert message == "labels in the data that --labels does not list: 'z'"
    message = refused(tmp_path, data, labels=["x", "z", "maybe"])
    assert message.startswith("labels in --labels that no row has")
    assert message.endswith(": 'maybe'")
    assert spec_of(tmp_path, data, labels=["z", "x"]).labels == ["x", "z"]


def test_rows_with_no_label_are_named(tmp_path: Path):
    data = csv_file(tmp_path, SMALL + "7,0.7,8,\n8,0.8,9,x\n")
    assert refused(tmp_path, data) == "rows with no label in 'y': row 7"
    data = jsonl_file(
        tmp_path, [{"a": 1, "y": "x"}, {"a": 2}, {"a": 3, "y": None}, {"a": 4, "y": "z"}]
    )
    assert refused(tmp_path, data) == "rows with no label in 'y': row 2; row 3"


def test_too_few_rows_for_the_held_out_part(tmp_path: Path):
    data = csv_file(tmp_path, "a,y\n1,x\n2,x\n3,z\n4,z\n")
    message = refused(tmp_path, data)
    assert message.startswith("4 rows are too few for 2 labels") and message.endswith("add rows")


# -- records features and regression targets --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("high", "'high'"),
        ("nan", "'nan'"),
        ("inf", "'inf'"),
        ("-Infinity", "'-Infinity'"),
        ("", "''"),
    ],
)
def test_a_records_feature_that_is_not_a_finite_number_is_named(tmp_path: Path, value, shown):
    data = csv_file(tmp_path, SMALL.replace("3,0.3,4,x", f"3,0.3,{value},x"))
    message = refused(tmp_path, data, key_column="id")
    assert message == f"records features must be finite numbers: row 3 column 'b' = {shown}"


def test_jsonl_nan_infinity_and_null_features_are_named(tmp_path: Path):
    data = tmp_path / "data.jsonl"
    data.write_text(
        '{"a": 1, "y": "x"}\n{"a": NaN, "y": "z"}\n{"a": Infinity, "y": "x"}\n'
        '{"a": null, "y": "z"}\n{"a": true, "y": "x"}\n',
        encoding="utf-8",
    )
    message = refused(tmp_path, data)
    assert message == (
        "records features must be finite numbers: row 2 column 'a' = nan; "
        "row 3 column 'a' = inf; row 4 column 'a' = None; "
        "row 5 column 'a' = True"
    )


def test_parquet_nan_inf_and_null_features_are_named(tmp_path: Path, cancer: pd.DataFrame):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = cancer.head(40).to_dict("records")
    rows[4]["mean area"] = float("nan")
    rows[9]["mean radius"] = float("-inf")
    rows[11]["worst area"] = None
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    message = refused(tmp_path, tmp_path / "data.parquet", label_column="target", key_column="id")
    assert message == (
        "records features must be finite numbers: row 5 column 'mean area' = "
        "nan; row 10 column 'mean radius' = -inf; "
        "row 12 column 'worst area' = None"
    )


def test_many_bad_values_are_counted_not_all_listed(tmp_path: Path):
    rows = "".join(f"{n},bad,{'xz'[n % 2]}\n" for n in range(1, 13))
    message = refused(tmp_path, csv_file(tmp_path, "id,a,y\n" + rows), key_column="id")
    assert message.count("row ") == 5 and message.endswith("(and 7 more)")


def test_a_records_file_with_only_a_label_has_no_features(tmp_path: Path):
    data = csv_file(tmp_path, "id,y\n1,x\n2,z\n")
    assert refused(tmp_path, data, key_column="id").endswith("no feature columns besides the label")


def test_a_regression_target_must_be_numeric(tmp_path: Path):
    rows = "".join(f"{n},{n * 1.5}\n" for n in range(12))
    data = csv_file(tmp_path, "a,y\n" + rows + "12,high\n13,\n")
    message = refused(tmp_path, data, task="regress-records")
    assert message == "target column 'y' must hold finite numbers: row 13 = 'high'; row 14 = ''"


def test_a_regressor_needs_enough_rows_and_no_labels(tmp_path: Path):
    data = csv_file(tmp_path, "a,y\n" + "".join(f"{n},{n * 1.5}\n" for n in range(5)))
    assert refused(tmp_path, data, task="regress-records") == (
        "5 rows are too few to train and evaluate a regressor; give at least 20"
    )
    data = csv_file(tmp_path, "a,y\n" + "".join(f"{n},{n * 1.5}\n" for n in range(20)))
    assert "--labels is for classifiers" in refused(
        tmp_path, data, task="regress-records", labels=["a", "b"]
    )
    spec = spec_of(tmp_path, data, task="regress-records")
    assert (spec.labels, spec.input_columns, spec.n_rows) == ([], ["a"], 20)


# -- the request's own shape (checked before any data is read) --------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"name": "Spam Filter"}, "name: model names are lower-case letters, digits"),
        ({"name": "spam filter"}, "name: model names are lower-case letters, digits"),
        ({"name": "x" * 64}, "at most 63 characters"),
        (
            {"task": "transcribe"},
            "task 'transcribe' cannot be trained; trainable tasks: classify-audio, "
            "classify-image, classify-records, classify-text, extract-entities, generate, "
            "regress-records",
        ),
        ({"epochs": 0}, "epochs: Input should be greater than or equal to 1"),
        ({"workers": 0}, "workers: Input should be greater than or equal to 1"),
        ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
        ({"holdout_fraction": 0.95}, "holdout_fraction: Input should be less than 0.9"),
        ({"dp_epsilon": 1.0}, "differential privacy needs both --dp-epsilon and --dp-delta"),
        ({"dp_delta": 1e-5}, "differential privacy needs both --dp-epsilon and --dp-delta"),
        ({"dp_epsilon": 0.0, "dp_delta": 1e-5}, "epsilon: Input should be greater than 0"),
        ({"dp_epsilon": 1.0, "dp_delta": 1.0}, "delta: Input should be less than 1"),
        (
            {"task": "classify-image", "dp_epsilon": 1.0, "dp_delta": 1e-5},
            "--dp-epsilon is supported for classify-records, classify-text, extract-entities, "
            "generate, regress-records; classify-image cannot be trained privately: its model "
            "family holds BatchNorm",
        ),
        (
            {"task": "classify-audio", "dp_epsilon": 1.0, "dp_delta": 1e-5},
            "--dp-epsilon is supported for classify-records, classify-text, extract-entities, "
            "generate, regress-records",
        ),
        (
            {"task": "classify-text", "dp_epsilon": 1.0, "dp_delta": 1e-5, "train_encoder": True},
            "--dp-epsilon trains the classification head only; drop --train-encoder",
        ),
    ],
)
def test_a_bad_request_fails_before_the_data_is_read(tmp_path: Path, options, expected):
    name = options.pop("name", "model")
    task = options.pop("task", "classify-records")
    with pytest.raises(TrainingError) as caught:  # the data does not even exist
        build_spec(
            Settings(data_dir=tmp_path),
            no_base,
            task=task,
            name=name,
            data=str(tmp_path / "missing.csv"),
            label_column="y",
            **options,
        )
    assert expected in str(caught.value)


def test_dp_is_accepted_for_records(tmp_path: Path):
    spec = spec_of(
        tmp_path, csv_file(tmp_path, SMALL), key_column="id", dp_epsilon=3.0, dp_delta=1e-5
    )
    assert spec.dp is not None and (spec.dp.epsilon, spec.dp.delta, spec.dp.max_grad_norm) == (
        3.0,
        1e-5,
        1.0,
    )


# -- images and audio -------------------------------------------------------------------------


def media_setup(tmp_path: Path) -> tuple[Path, Settings]:
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    for n in range(4):
        (root / "img" / f"{n}.png").write_bytes(png_bytes(seed=n))
    return root, Settings(data_dir=tmp_path / "data", input_roots=str(root))


def test_images_outside_the_input_roots_missing_or_inline_are_refused(tmp_path: Path):
    root, settings = media_setup(tmp_path)
    (tmp_path / "secret.png").write_bytes(png_bytes())
    data = csv_file(
        root,
        "path,y\nimg/0.png,cat\nimg/1.png,dog\n"
        f"{tmp_path / 'secret.png'},cat\nimg/gone.png,dog\n"
        "data:image/png;base64,iVBORw0KGgo=,cat\n",
        "list.csv",
    )
    message = refused(tmp_path, data, task="classify-image", settings=settings)
    assert message.startswith("media that cannot be read: ")
    assert f"row 3: {tmp_path / 'secret.png'} is outside the input roots ({root})" in message
    assert f"row 4: {root / 'img' / 'gone.png'}: no such file" in message
    assert "row 5: inline data: URIs cannot be trained on; use files" in message
    assert "row 1" not in message and "row 2" not in message


def test_media_need_input_roots_and_a_media_column(tmp_path: Path):
    root, settings = media_setup(tmp_path)
    data = csv_file(root, "path,y\nimg/0.png,cat\nimg/1.png,dog\n", "list.csv")
    message = refused(tmp_path, data, task="classify-image")  # no SLUICE_INPUT_ROOTS
    assert "no input roots are open to this job; an operator sets SLUICE_INPUT_ROOTS" in message
    message = refused(tmp_path, data, task="classify-audio", settings=settings, media_column="file")
    assert "column 'file' not found (--media-column); columns are: path, y" in message


def test_a_good_image_request(tmp_path: Path):
    root, settings = media_setup(tmp_path)
    data = csv_file(
        root,
        "path,y\nimg/0.png,dog\nimg/1.png,cat\nimg/2.png,dog\n"
        f"{root / 'img' / '3.png'},cat\nimg/0.png,dog\nimg/1.png,cat\n"
        "img/2.png,dog\nimg/3.png,cat\n",
        "list.csv",
    )
    spec = spec_of(tmp_path, data, task="classify-image", settings=settings)
    assert spec.labels == ["cat", "dog"] and spec.n_rows == 8
    assert spec.media_base_dir == str(root) and spec.input_columns == ["path"]
    assert spec.used_columns() == ["path", "y"] and HEX64.match(spec.data_fingerprint)
    assert spec.base is None and spec.dp is None


# -- good requests ----------------------------------------------------------------------------


def write_all_formats(tmp_path: Path, frame: pd.DataFrame) -> dict[str, dict[str, str]]:
    """The same rows as CSV, JSONL, Parquet and a SQLite table: build_spec's data options."""
    frame.to_csv(tmp_path / "bc.csv", index=False)
    frame.to_json(tmp_path / "bc.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "bc.parquet", index=False)
    with sqlite3.connect(tmp_path / "bc.db") as conn:
        frame.to_sql("patients", conn, index=False)
    conn.close()
    return {
        "csv": {"data": str(tmp_path / "bc.csv")},
        "jsonl": {"data": str(tmp_path / "bc.jsonl")},
        "parquet": {"data": str(tmp_path / "bc.parquet")},
        "sqlite": {"data": "patients", "data_url": f"sqlite:///{tmp_path / 'bc.db'}"},
    }


def test_a_good_records_request_becomes_the_spec(tmp_path: Path, cancer: pd.DataFrame):
    cancer.to_csv(tmp_path / "bc.csv", index=False)
    spec = spec_of(
        tmp_path, tmp_path / "bc.csv", label_column="target", key_column="id", epochs=3, workers=2
    )
    assert spec.input_columns == list(load_breast_cancer().feature_names)
    assert spec.labels == ["0", "1"] and spec.n_rows == len(cancer) == 569
    assert HEX64.match(spec.data_fingerprint)
    assert spec.data.file == str((tmp_path / "bc.csv").resolve()) and spec.data.url is None
    assert (spec.task, spec.name, spec.label_column, spec.key_column) == (
        "classify-records",
        "model",
        "target",
        "id",
    )
    assert (spec.epochs, spec.workers, spec.base, spec.dp) == (3, 2, None, None)
    assert spec.used_columns() == [*spec.input_columns, "target"]
    assert TrainSpec.model_validate(spec.model_dump()) == spec  # what the ledger stores


def test_chosen_feature_columns_keep_their_order(tmp_path: Path):
    spec = spec_of(tmp_path, csv_file(tmp_path, SMALL), feature_columns=["b", "a"])
    assert spec.input_columns == ["b", "a"]


def test_the_same_data_in_any_format_has_the_same_fingerprint(tmp_path: Path, cancer: pd.DataFrame):
    sources = write_all_formats(tmp_path, cancer.head(120))
    specs = {
        fmt: spec_of(tmp_path, label_column="target", key_column="id", **source)
        for fmt, source in sources.items()
    }
    fingerprints = {fmt: s.data_fingerprint for fmt, s in specs.items()}
    assert len(set(fingerprints.values())) == 1, fingerprints
    assert HEX64.match(fingerprints["csv"])
    for fmt, spec in specs.items():
        assert spec.input_columns == list(load_breast_cancer().feature_names), fmt
        assert (spec.labels, spec.n_rows) == (["0", "1"], 120), fmt
    assert specs["sqlite"].data.table == "patients" and specs["sqlite"].data.file is None
    assert specs["sqlite"].data.describe().endswith("bc.db table patients")


def test_the_fingerprint_follows_the_trained_values_only(tmp_path: Path, cancer: pd.DataFrame):
    frame = cancer.head(60).copy()
    frame.to_csv(tmp_path / "a.csv", index=False)
    before = spec_of(tmp_path, tmp_path / "a.csv", label_column="target", key_column="id")
    changed = frame.copy()
    changed.loc[17, "worst symmetry"] += 0.001
    changed.to_csv(tmp_path / "b.csv", index=False)
    after = spec_of(tmp_path, tmp_path / "b.csv", label_column="target", key_column="id")
    assert after.data_fingerprint != before.data_fingerprint
    relabelled = frame.copy()
    relabelled.loc[3, "target"] = 1 - relabelled.loc[3, "target"]
    relabelled.to_csv(tmp_path / "c.csv", index=False)
    assert (
        spec_of(
            tmp_path, tmp_path / "c.csv", label_column="target", key_column="id"
        ).data_fingerprint
        != before.data_fingerprint
    )
    rekeyed = frame.assign(id=[f"k{n}" for n in range(len(frame))])  # not trained on
    rekeyed.to_csv(tmp_path / "d.csv", index=False)
    assert (
        spec_of(
            tmp_path, tmp_path / "d.csv", label_column="target", key_column="id"
        ).data_fingerprint
        == before.data_fingerprint
    )


def test_a_good_text_request_resolves_its_base_model(tmp_path: Path):
    rows = [
        {"text": f"{word} message {n}", "topic": word}
        for n in range(4)
        for word in ("billing", "praise", "bug")
    ]
    data = jsonl_file(tmp_path, rows)
    spec = spec_of(
        tmp_path,
        data,
        task="classify-text",
        label_column="topic",
        resolve_base=text_base(tmp_path / "cache"),
        dp_epsilon=8.0,
        dp_delta=1e-5,
    )
    assert spec.labels == ["billing", "bug", "praise"] and spec.n_rows == 12
    assert spec.base_ref == "all-MiniLM-L6-v2" and Path(spec.base or "").is_dir()
    assert spec.used_columns() == ["text", "topic"] and HEX64.match(spec.data_fingerprint)
    assert spec.dp is not None and spec.feature_columns == []


def test_text_rows_without_text_are_named(tmp_path: Path):
    data = jsonl_file(
        tmp_path,
        [{"text": "fine", "y": "a"}, {"text": "  ", "y": "b"}, {"y": "a"}, {"text": 5, "y": "b"}],
    )
    assert refused(
        tmp_path, data, task="classify-text", resolve_base=text_base(tmp_path / "cache")
    ) == ("rows with no text in 'text': row 2; row 3; row 4")


# -- storage.row_sources -------------------------------------------------------------------------


def test_read_table_names_an_unknown_table(tmp_path: Path, cancer: pd.DataFrame):
    sources = write_all_formats(tmp_path, cancer.head(5))
    url = sources["sqlite"]["data_url"]
    with pytest.raises(InputFileError, match=r"^no table 'nope' in the database$"):
        read_table(url, "nope")
    columns, rows = read_table(url, "patients")
    assert columns == list(cancer.columns) and len(list(rows)) == 5
    message = refused(tmp_path, "nope", InputFileError, data_url=url)
    assert message == "no table 'nope' in the database"


@pytest.mark.parametrize("url", ["not a url", "nosuchdialect://host/db"])
def test_read_table_refuses_an_unusable_url_clearly(url: str):
    with pytest.raises(InputFileError, match="cannot open the database URL"):
        read_table(url, "patients")


def test_jsonl_columns_come_in_file_order(tmp_path: Path):
    data = jsonl_file(tmp_path, [{"b": 1, "a": 2}, {"c": 3, "b": 4}])
    columns, rows = read_rows(data)
    assert columns == ["b", "a", "c"] and len(list(rows)) == 2


# -- the SDK and the CLI ----------------------------------------------------------------------


def test_the_client_records_nothing_for_a_bad_request(tmp_path: Path, cancer: pd.DataFrame):
    client = Client(Settings(data_dir=tmp_path / "data"))
    bad = csv_file(tmp_path, "a,y\n1,x\n2,x\n")
    with pytest.raises(TrainingError, match="one class only"):
        client.submit_training(task="classify-records", name="model", data=bad, label_column="y")
    with pytest.raises(TrainingError, match="name: model names are lower-case"):
        client.submit_training(task="classify-records", name="My Model", data=bad, label_column="y")
    cancer.to_csv(tmp_path / "bc.csv", index=False)
    with pytest.raises(ConfigError, match="no broker"):  # valid: only the broker is missing
        client.submit_training(
            task="classify-records",
            name="model",
            data=tmp_path / "bc.csv",
            label_column="target",
            key_column="id",
        )
    assert client.runs.list() == []


def test_the_cli_prints_the_error_and_exits_2(tmp_path: Path):
    from ops.cli import main

    data = csv_file(tmp_path, "a,y\n1,x\n2,x\n3,x\n")
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--task",
            "classify-records",
            "--data",
            str(data),
            "--label-column",
            "y",
            "--name",
            "model",
        ],
        env={"SLUICE_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: column 'y' holds one class only ('x')")
    assert result.stdout == ""
    assert isinstance(result.exception, SystemExit)
    assert not isinstance(result.exception, SluiceError)


def test_a_records_base_must_read_the_same_features_and_predict_the_same_labels(
    tmp_path: Path, cancer: pd.DataFrame
):
    import numpy as np

    from workers.training.records_mlp import RecordsMLP, feature_spec, save_records_model

    data = tmp_path / "cancer.csv"
    cancer.to_csv(data, index=False)
    names = [c for c in cancer.columns if c not in ("id", "target")]

    def base_with(features: list[str], labels: list[str]) -> Path:
        out = tmp_path / f"base-{len(features)}-{len(labels)}"
        specs = [feature_spec(n, np.asarray(cancer[n], dtype=float)) for n in features]
        save_records_model(
            out,
            RecordsMLP(len(specs), [8], len(labels)),
            {"task": "classify-records", "hidden_sizes": [8], "labels": labels},
            specs,
        )
        return out

    resolve = text_base(tmp_path / "cache")
    same = spec_of(
        tmp_path,
        data,
        label_column="target",
        key_column="id",
        resolve_base=resolve,
        base=str(base_with(names, ["0", "1"])),
    )
    assert same.base and same.base.endswith("base-30-2")
    message = refused(
        tmp_path,
        data,
        label_column="target",
        key_column="id",
        resolve_base=resolve,
        base=str(base_with(names[:5], ["0", "1"])),
    )
    assert "reads the features" in message and "--feature-columns" in message
    message = refused(
        tmp_path,
        data,
        label_column="target",
        key_column="id",
        resolve_base=resolve,
        base=str(base_with(names, ["no", "yes"])),
    )
    assert "predicts the labels ['no', 'yes']" in message


def test_the_smallest_regression_set_accepted_at_submit_can_be_split(tmp_path: Path):
    """What submit accepts, the worker can prepare: even 20 rows with tied targets."""
    from storage.row_sources import read_rows as rows_of
    from workers.training.recipes import recipe_for

    data = csv_file(tmp_path, "a,y\n" + "".join(f"{n},{n // 7}\n" for n in range(20)))
    spec = spec_of(tmp_path, data, task="regress-records")
    prepared = recipe_for(spec).prepare(spec, list(rows_of(data)[1]), Settings().media_limits())
    assert (prepared.n_train, prepared.n_heldout) == (16, 4)


# -- generate: (input, target) text pairs -------------------------------------------------------


PAIRS = [{"text": "a b c", "target": "c b a"}, {"text": "d e", "target": "e d"}] * 3


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {},
            "generate fine-tunes a pretrained sequence-to-sequence or decoder-only model and "
            "cannot train one from nothing: give --base",
        ),
        (
            {"base": "m@1", "label_column": "text"},
            "--label-column 'text' is also the input (--text-column)",
        ),
        ({"base": "m@1", "labels": ["a", "b"]}, "--labels is for classifiers; generate has a"),
        ({"base": "m@1", "train_encoder": True}, "--train-encoder is for classifiers' heads"),
    ],
)
def test_a_generate_request_without_a_base_or_with_classifier_options_is_refused(
    tmp_path: Path, options: dict[str, Any], expected: str
):
    options.setdefault("label_column", "target")
    with pytest.raises(TrainingError) as caught:  # before the data is read: it does not exist
        build_spec(
            Settings(data_dir=tmp_path),
            no_base,
            task="generate",
            name="model",
            data=str(tmp_path / "missing.jsonl"),
            **options,
        )
    assert expected in str(caught.value)


def test_generate_rows_without_a_target_text_are_named_not_taken_as_labels(tmp_path: Path):
    rows: list[dict[str, Any]] = [
        {"text": "a b", "target": "b a"},
        {"text": "c", "target": ""},
        {"text": "d e", "target": "   "},
        {"text": "f", "target": 5},
        {"text": "g"},
        {"text": "h a", "target": "a h"},
    ]
    message = refused(
        tmp_path, jsonl_file(tmp_path, rows), task="generate", label_column="target", base="m@1"
    )
    assert message == "rows with no target text in 'target': row 2; row 3; row 4; row 5"


def test_generate_rows_without_an_input_text_are_named(tmp_path: Path):
    rows = [{"text": "", "target": "b a"}, {"text": "a", "target": "a"}, {"target": "x"}]
    message = refused(
        tmp_path, jsonl_file(tmp_path, rows), task="generate", label_column="target", base="m@1"
    )
    assert message == "rows with no text in 'text': row 1; row 3"


def test_one_generate_row_is_too_few_to_hold_out_a_part(tmp_path: Path):
    data = jsonl_file(tmp_path, PAIRS[:1])
    message = refused(tmp_path, data, task="generate", label_column="target", base="m@1")
    assert message.startswith("1 rows are too few to train on and hold out 20%")


@pytest.fixture(scope="module")
def generator_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.generation_bases import build

    return build("llama", tmp_path_factory.mktemp("bases") / "llama")


def test_a_good_generate_request_keeps_its_targets_as_text(tmp_path: Path, generator_base: Path):
    """Unique targets are no classes: no label list, no stratification, DP accepted; what
    submit accepts, the worker can prepare."""
    from workers.training.recipes import recipe_for

    rows = [{"text": f"a {w}", "target": f"{w} a"} for w in "bcdefgh"]
    data = jsonl_file(tmp_path, rows)
    spec = spec_of(
        tmp_path,
        data,
        task="generate",
        label_column="target",
        resolve_base=text_base(tmp_path / "cache"),
        base=str(generator_base),
        dp_epsilon=8.0,
        dp_delta=1e-5,
    )
    assert spec.is_generator and not spec.is_classifier and spec.labels == []
    assert spec.used_columns() == ["text", "target"] and spec.n_rows == 7
    assert spec.base == str(generator_base) and spec.dp is not None
    assert TrainSpec.model_validate(spec.model_dump()).is_generator  # as the worker reads it
    prepared = recipe_for(spec).prepare(spec, rows, Settings().media_limits())
    assert (prepared.n_train, prepared.n_heldout) == (5, 2)
    assert prepared.meta["dp_frozen"] == {}  # a Llama: Opacus handles every layer


def test_a_run_recorded_before_targets_were_named_keeps_its_kind():
    recorded = {"name": "m", "task": "regress-records", "recipe": "x:Y", "classifier": False,
                "data": {"file": "d.csv"}, "label_column": "y"}  # fmt: skip
    assert TrainSpec.model_validate(recorded).target == "value"
    assert TrainSpec.model_validate({**recorded, "classifier": True}).target == "label"


def test_the_cli_refuses_generate_without_a_base(tmp_path: Path):
    from ops.cli import main

    data = jsonl_file(tmp_path, PAIRS)
    result = CliRunner().invoke(
        main,
        ["train", "--task", "generate", "--data", str(data), "--label-column", "target",
         "--name", "spell"],
        env={"SLUICE_DATA_DIR": str(tmp_path / "data")},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: generate fine-tunes a pretrained")
    assert "--base" in result.stderr
