"""The catalog walked against itself and against every front door: each task's handler and
recipe import and fit their contracts, each parameter reaches `sluice submit --help`,
`sluice enrich --help` and /openapi.json, and an unknown task gets one message everywhere."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from pydantic import Field

from ops.cli import main
from producers import Client
from producers.api import create_app
from schemas.catalog import (
    Catalog,
    Modality,
    OutputShape,
    TaskParams,
    TaskSpec,
    load_catalog,
    unknown_task_message,
)
from schemas.errors import ConfigError, SluiceError, UnknownTaskError
from schemas.settings import Settings
from storage.apikeys import ApiKeys
from workers.explain import audio, generation, image, records, text
from workers.handlers import Handler, handler_class
from workers.training.recipes.base import Recipe

CATALOG = load_catalog()
TASKS = CATALOG.names()
UNKNOWN = unknown_task_message("summarise", TASKS)


def test_the_builtin_catalog_is_consistent():
    assert CATALOG.problems() == []
    assert (
        sorted(
            [
                "embed",
                "zero-shot-text",
                "classify-text",
                "classify-image",
                "detect-objects",
                "embed-image",
                "classify-audio",
                "transcribe",
                "classify-records",
                "regress-records",
                "generate",
                "answer-question",
                "extract-entities",
            ]
        )
        == TASKS
    )
    assert CATALOG.queues() == ["sluice.audio", "sluice.image", "sluice.records", "sluice.text"]


@pytest.mark.parametrize("task", TASKS)
def test_every_handler_and_recipe_imports_and_fits_its_contract(task: str):
    spec = CATALOG.get(task)
    cls = handler_class(spec.handler)
    assert issubclass(cls, Handler)
    if spec.explainable:  # an explainer is declared only where the handler explains
        assert "explain" in vars(cls) or any("explain" in vars(b) for b in cls.__mro__[1:-2])
    if spec.training:
        from schemas.task_spec import import_object

        recipe = import_object(spec.training.recipe)
        methods = ("prepare", "build", "loss", "evaluate", "save")
        assert all(callable(getattr(recipe, m, None)) for m in methods)
        assert all(callable(getattr(Recipe, m)) for m in methods)  # the contract names them


def test_explainer_methods_are_the_ones_the_explainers_record():
    methods = {CATALOG.get(t).explainer.method for t in TASKS if CATALOG.get(t).explainer}  # type: ignore[union-attr]
    assert methods == {
        text.METHOD,
        image.INTEGRATED_GRADIENTS,
        audio.METHOD,
        records.METHOD,
        generation.METHOD,
    }


def test_every_parameter_is_an_option_of_submit_and_enrich():
    runner = CliRunner()
    for command in ("submit", "enrich"):
        shown = runner.invoke(main, [command, "--help"], terminal_width=200).output
        for name, (_, tasks) in CATALOG.parameters().items():
            assert "--" + name.replace("_", "-") in shown, (command, name)
            assert all(t in shown for t in tasks)


@pytest.fixture
def http(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0")
    client = Client(settings)
    key = ApiKeys(client.ledger.engine).create("acme").key
    with TestClient(create_app(client=client)) as http:
        yield http, key


def test_every_parameter_is_in_the_published_request_schemas(http: tuple[TestClient, str]):
    schema = http[0].get("/openapi.json").json()
    shapes = schema["components"]["schemas"]  # one body per task, for each way in
    for spec in CATALOG:
        title = "".join(part.title() for part in spec.name.split("-"))
        for way in ("Job", "Event", "Upload"):
            props = shapes[title + way]["properties"]
            assert props["task"]["const"] == spec.name
            for name, (_, tasks) in CATALOG.parameters().items():
                assert (name in props) == (spec.name in tasks), (spec.name, way, name)


def test_an_unknown_task_gets_the_same_message_at_every_front_door(
    http: tuple[TestClient, str], tmp_path: Path
):
    with pytest.raises(UnknownTaskError) as sdk:
        Client(Settings(data_dir=tmp_path)).submit_texts(["hi"], "summarise")
    assert str(sdk.value) == UNKNOWN
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "hi"}\n')
    runner = CliRunner()
    for args in (
        ["submit", str(data), "--task", "summarise"],
        ["enrich", "--source", "sqlite://", "--table", "t", "--key-column", "id"]
        + ["--dest-table", "d", "--task", "summarise"],
        ["train", "--task", "summarise", "--data", str(data), "--label-column", "y"]
        + ["--name", "m"],
    ):
        result = runner.invoke(main, args, terminal_width=400)
        assert result.exit_code == 2 and UNKNOWN in result.output, (args, result.output)
    client, key = http
    auth = {"Authorization": f"Bearer {key}"}
    for path, body in (
        ("/v1/jobs", {"task": "summarise", "items": ["hi"]}),
        ("/v1/events", {"task": "summarise", "text": "hi"}),
    ):
        r = client.post(path, json=body, headers=auth)
        assert (r.status_code, r.json()["detail"]) == (400, UNKNOWN), path
    upload = client.post(
        "/v1/jobs",
        files={"file": ("in.jsonl", b'{"text": "hi"}\n')},
        data={"task": "summarise"},
        headers=auth,
    )
    assert (upload.status_code, upload.json()["detail"]) == (400, UNKNOWN)


def test_a_task_that_cannot_be_trained_says_which_can(tmp_path: Path):
    data = tmp_path / "in.csv"
    data.write_text("text,y\nhi,a\n")
    result = CliRunner().invoke(
        main,
        ["train", "--task", "embed", "--data", str(data), "--label-column", "y", "--name", "m"],
    )
    assert result.exit_code == 2
    assert f"task 'embed' cannot be trained; trainable tasks: {', '.join(CATALOG.trainable())}" in (
        result.output
    )


class WordParams(TaskParams):
    top: int = Field(3, description="how many")


def spec(name: str, params: type[TaskParams] = WordParams, **extra: object) -> TaskSpec:
    fields = {"handler": "pkg.mod:Handler", "description": "d", "output": OutputShape.FIELDS,
              "modality": Modality.TEXT}  # fmt: skip
    return TaskSpec(name, params=params, **{**fields, **extra})  # type: ignore[arg-type]


def test_a_task_that_does_not_fit_the_catalog_is_refused_when_it_registers():
    assert Catalog([(spec("a-task"), "one"), (spec("a-task"), "two")]).names() == ["a-task"]

    class Clash(TaskParams):
        top: str = Field("x")

    class Reserved(TaskParams):
        model: str = Field("x")

    cases = [
        ([spec("a-task"), spec("a-task", description="e")], "task 'a-task' is registered twice"),
        ([spec("Bad Name")], "task name 'Bad Name': use lower-case letters"),
        ([spec("x-task", handler="no-colon")], "'no-colon' is not a 'module:Class' path"),
        ([spec("x-task", Reserved)], "parameter 'model' is a job option's name"),
        (
            [spec("x-task"), spec("y-task", Clash)],
            "parameter 'top' is <class 'str'> in task y-task but <class 'int'> in task x-task",
        ),
    ]
    for specs, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Catalog([(s, "test") for s in specs])


def test_parameters_are_checked_by_the_task_with_its_own_messages():
    zero_shot = CATALOG.get("zero-shot-text")
    assert zero_shot.check_params({"labels": [" a", "b ", ""]})["labels"] == ["a", "b"]
    for given, message in (
        ({}, "needs 'labels'"),
        ({"labels": ["a"]}, "give at least two labels"),
        ({"labels": ["a", "a"]}, "duplicate labels"),
        ({"labels": ["a", "b"], "label_descriptions": {"c": "x"}}, "unknown labels: ['c']"),
        ({"labels": ["a", "b"], "temperature": 2}, "takes no parameter 'temperature'"),
    ):
        with pytest.raises(SluiceError, match=re.escape(message)):
            zero_shot.check_params(given)
    with pytest.raises(SluiceError, match="descriptions over 200 characters"):
        zero_shot.check_params({"labels": ["a", "b"], "label_descriptions": {"a": "x" * 201}})
    with pytest.raises(
        SluiceError, match=r"takes no parameter 'labels' \(its parameters: long_text, stride\)"
    ):
        CATALOG.get("embed").check_params({"labels": ["a", "b"]})
    with pytest.raises(SluiceError, match=r"takes no parameter 'labels' \(its parameters: none\)"):
        CATALOG.get("classify-records").check_params({"labels": ["a", "b"]})


def test_a_spec_with_a_wrong_value_is_refused_as_it_is_made():
    assert spec("x-task", modality="records").modality is Modality.RECORDS  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"TaskSpec.modality 'txt' is not one of: text, image"):
        spec("x-task", modality="txt")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="params must be a TaskParams subclass"):
        spec("x-task", params=dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="parameter 'where' is a job option's name"):

        class Where(TaskParams):
            where: str = "x"

        Catalog([(spec("x-task", Where), "test")])


def test_a_training_run_recorded_before_the_catalog_resumes_with_its_recipe():
    from schemas.training import TrainSpec

    old = {"name": "m", "task": "regress-records", "data": {"file": "d.csv"},
           "label_column": "y", "feature_columns": ["a", "b"]}  # fmt: skip
    spec_ = TrainSpec.model_validate(old)
    assert spec_.recipe == "workers.training.recipes.records:RecordsRecipe"
    assert (spec_.is_classifier, spec_.used_columns()) == (False, ["a", "b", "y"])
    text_run = TrainSpec.model_validate({**old, "task": "classify-text", "text_column": "body"})
    assert text_run.is_classifier and text_run.used_columns() == ["body", "y"]


def test_a_handler_path_is_checked_without_running_the_module():
    from schemas.catalog import check_code_path

    check_code_path("workers.handlers.text:EmbedHandler", "handler")  # torch is not imported
    for path, problem in (
        ("workers.handlers.text:EmbedHandlr", "workers.handlers.text defines no 'EmbedHandlr'"),
        ("workers.handlers.nope:X", "no module named 'workers.handlers.nope'"),
        ("no_such_package.mod:X", "no module named 'no_such_package.mod'"),
    ):
        with pytest.raises(
            ConfigError, match=re.escape(f"handler {path} does not import: {problem}")
        ):
            check_code_path(path, "handler")
