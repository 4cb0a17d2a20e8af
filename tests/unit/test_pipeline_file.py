"""Reading a pipelines file (`sluice listen FILE`): every mistake is reported as
`FILE:LINE: path: what is wrong`, in TOML and in YAML alike.

The line numbers asserted are those of TOML and YAML below; each bad file is the good one
with a line changed in place (so the numbering stays the same) unless a test says otherwise.
"""

from pathlib import Path

import pytest

from producers.pipeline_file import load_pipelines, parse_pipelines
from schemas.errors import PipelineFileError
from schemas.pipelines import PipelinesFile

TOML = '''\
# Two pipelines: tickets from RabbitMQ, sensors from NATS.
[[pipelines]]
name = "tickets"
tenant = "acme"
task = "zero-shot-text"
params = { labels = ["billing", "shipping"] }
map = { key = "id", text = "body.text" }

[pipelines.source]
kind = "rabbitmq"
queue = "tickets"

[[pipelines.sinks]]
kind = "rabbitmq"
routing_key = "tickets.results"

[pipelines.dead_letter]
kind = "rabbitmq"
routing_key = "tickets.dead"

[[pipelines]]
name = "sensors"
task = "generate"
params.prompt = """
[not.a.table]
summarise = this"""
map.record = "reading"
batching = { max_events = 16, max_wait_ms = 20.0 }

[pipelines.source]
kind = "nats"
stream = "SENSORS"
subject = "sensors.>"
durable = "sluice-sensors"

[[pipelines.sinks]]
kind = "mqtt"
topic = "sensors/results"

[[pipelines.sinks]]
kind = "nats"
subject = "sensors.results"

[pipelines.dead_letter]
kind = "nats"
subject = "sensors.dead"
'''

YAML = """\
# Two pipelines: tickets from RabbitMQ, sensors from NATS.
pipelines:
  - name: tickets
    tenant: acme
    task: zero-shot-text
    params: {labels: [billing, shipping]}
    map: {key: id, text: body.text}
    source:
      kind: rabbitmq
      queue: tickets
    sinks:
      - kind: rabbitmq
        routing_key: tickets.results
    dead_letter:
      kind: rabbitmq
      routing_key: tickets.dead
  - name: sensors
    task: generate
    params:
      prompt: |-
        [not.a.table]
        summarise = this
    map: {record: reading}
    batching: {max_events: 16, max_wait_ms: 20.0}
    source: {kind: nats, stream: SENSORS, subject: sensors.>, durable: sluice-sensors}
    sinks:
      - kind: mqtt
        topic: sensors/results
      - kind: nats
        subject: sensors.results
    dead_letter:
      kind: nats
      subject: sensors.dead
"""


def changed(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must be in the text once"
    return text.replace(old, new)


def error(text: str, fmt: str, name: str) -> str:
    with pytest.raises(PipelineFileError) as caught:
        parse_pipelines(text, fmt, name)  # type: ignore[arg-type]
    return str(caught.value)


def test_the_toml_and_the_yaml_file_give_the_same_pipelines() -> None:
    from_toml = parse_pipelines(TOML, "toml", "p.toml")
    assert from_toml == parse_pipelines(YAML, "yaml", "p.yaml")
    tickets, sensors = from_toml.pipelines
    assert (tickets.name, tickets.tenant, tickets.map.text, tickets.map.key) == (
        "tickets",
        "acme",
        "body.text",
        "id",
    )
    assert tickets.params == {"labels": ["billing", "shipping"]}
    assert sensors.params == {"prompt": "[not.a.table]\nsummarise = this"}
    assert [s.kind for s in sensors.sinks] == ["mqtt", "nats"]
    assert (sensors.batching.max_events, sensors.rollover.max_items) == (16, 100_000)


@pytest.mark.parametrize(
    ("fmt", "old", "new", "expected"),
    [
        # line 9 is `[pipelines.source]`: the table the key is missing from
        ("toml", 'queue = "tickets"', "# no queue", "p.toml:9: pipelines[0].source.queue"),
        # line 8 is `source:`, the key of the mapping the key is missing from
        ("yaml", "queue: tickets", "# no queue", "p.yaml:8: pipelines[0].source.queue"),
    ],
)
def test_a_missing_field_is_reported_at_the_table_it_is_missing_from(
    fmt: str, old: str, new: str, expected: str
) -> None:
    text = changed(TOML if fmt == "toml" else YAML, old, new)
    assert error(text, fmt, f"p.{fmt}") == f"{expected}: Field required"


@pytest.mark.parametrize(
    ("fmt", "old", "new", "line"),
    [("toml", 'kind = "nats"\nsubject = "sensors.results"', 'kind = "kafka"', 41)]
    + [("yaml", "- kind: nats\n", "- kind: kafka\n", 29)],
)
def test_a_bad_kind_is_reported_at_its_line_with_the_kinds_allowed(
    fmt: str, old: str, new: str, line: int
) -> None:
    """The second sink of the second pipeline: array indices are counted per pipeline."""
    text = changed(TOML if fmt == "toml" else YAML, old, new)
    assert error(text, fmt, f"p.{fmt}").startswith(
        f"p.{fmt}:{line}: pipelines[1].sinks[1].kind: 'kafka' is not one of "
        "'rabbitmq', 'nats', 'mqtt'"
    )


def test_a_missing_kind_is_reported_with_the_kinds_allowed() -> None:
    text = changed(TOML, 'kind = "nats"\nsubject = "sensors.dead"', 'subject = "sensors.dead"')
    # line 44 is the second pipeline's `[pipelines.dead_letter]`
    assert error(text, "toml", "p.toml").startswith(
        "p.toml:44: pipelines[1].dead_letter.kind: Field required: one of "
        "'rabbitmq', 'nats', 'mqtt'"
    )


@pytest.mark.parametrize(
    ("fmt", "old", "new"),
    [("toml", 'tenant = "acme"', 'tennant = "acme"'), ("yaml", "tenant: acme", "tennant: acme")],
)
def test_an_unknown_key_is_reported_at_its_line(fmt: str, old: str, new: str) -> None:
    text = changed(TOML if fmt == "toml" else YAML, old, new)
    assert error(text, fmt, f"p.{fmt}") == (
        f"p.{fmt}:4: pipelines[0].tennant: unknown key (not a field here: a typo, or in the "
        "wrong table?)"
    )


@pytest.mark.parametrize(
    ("fmt", "old", "new"),
    [
        ("toml", 'text = "body.text"', 'text = "body..text"'),
        ("yaml", "text: body.text", "text: body..text"),
    ],
)
def test_a_bad_field_path_in_map_is_reported_at_its_line(fmt: str, old: str, new: str) -> None:
    text = changed(TOML if fmt == "toml" else YAML, old, new)
    assert error(text, fmt, f"p.{fmt}") == (
        f"p.{fmt}:7: pipelines[0].map.text: 'body..text' is not a dotted field path such as "
        "`ticket.body`"
    )


def test_a_map_with_two_inputs_is_reported_at_the_map() -> None:
    text = changed(TOML, 'map.record = "reading"', 'map.record = "reading"\nmap.text = "t"')
    assert error(text, "toml", "p.toml") == (
        "p.toml:27: pipelines[1].map: give exactly one of text, media or record "
        "(the path of the item's input)"
    )


@pytest.mark.parametrize(
    ("fmt", "old", "new", "line"),
    [
        ("toml", 'name = "sensors"', 'name = "tickets"', 22),
        ("yaml", "- name: sensors", "- name: tickets", 17),
    ],
)
def test_a_repeated_pipeline_name_is_reported_at_the_repeat(
    fmt: str, old: str, new: str, line: int
) -> None:
    text = changed(TOML if fmt == "toml" else YAML, old, new)
    assert error(text, fmt, f"p.{fmt}") == (
        f"p.{fmt}:{line}: pipelines[1].name: pipeline names must be unique: tickets repeated"
    )


def test_every_mistake_is_reported_on_its_own_line_in_line_order() -> None:
    text = changed(TOML, 'durable = "sluice-sensors"', "")
    text = changed(text, 'queue = "tickets"', 'queue = ""')
    text = changed(text, 'name = "tickets"', 'name = "Tickets!"')
    assert error(text, "toml", "p.toml").splitlines() == [
        "p.toml:3: pipelines[0].name: a pipeline name is lower-case letters, digits, '.', '_' "
        "or '-' (at most 64)",
        "p.toml:11: pipelines[0].source.queue: String should have at least 1 character",
        "p.toml:30: pipelines[1].source.durable: Field required",
    ]


def test_toml_lines_after_a_multi_line_array_are_still_right() -> None:
    """A hand-written file may list its sinks inline over several lines: the `[` of the array
    and the tables in it must not be taken for table headers."""
    text = """\
[[pipelines]]
name = "tickets"
task = "zero-shot-text"
map.text = "body"
source = { kind = "mqtt", topic = "in", client_id = "sluice" }
sinks = [
  { kind = "mqtt", topic = "out" },  # [not.a.header]
  { kind = "kafka" },
]

[pipelines.dead_letter]
kind = "mqtt"
"""
    bad_kind, missing = error(text, "toml", "p.toml").splitlines()
    assert bad_kind.startswith("p.toml:6: pipelines[0].sinks[1].kind: 'kafka' is not one of ")
    assert missing == "p.toml:11: pipelines[0].dead_letter.topic: Field required"


def test_a_toml_syntax_error_gives_the_line_tomllib_reports() -> None:
    text = changed(TOML, 'queue = "tickets"', 'queue = "tickets')
    assert error(text, "toml", "p.toml") == (
        "p.toml:11: TOML syntax error: Illegal character '\\n' (column 17)"
    )


def test_a_yaml_syntax_error_gives_the_line_pyyaml_reports() -> None:
    text = changed(YAML, "task: zero-shot-text", "task: zero-shot-text: oops")
    assert error(text, "yaml", "p.yaml") == (
        "p.yaml:5: YAML syntax error: mapping values are not allowed here"
    )


def test_a_key_given_twice_in_yaml_is_a_mistake_not_a_silent_overwrite() -> None:
    text = changed(YAML, "queue: tickets\n", "queue: tickets\n      queue: orders\n")
    assert error(text, "yaml", "p.yaml") == (
        "p.yaml:11: pipelines[0].source.queue: duplicate key (given twice)"
    )


def test_yaml_tags_that_build_objects_are_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f'pipelines: !!python/object/apply:os.system ["touch {marker}"]\n'
    assert error(text, "yaml", "p.yaml").startswith(
        "p.yaml:1: YAML error: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'"
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        ("yaml", "", "p.yaml:1: pipelines: Field required"),
        ("toml", "# nothing yet\n", "p.toml:1: pipelines: Field required"),
        ("yaml", "- 1\n", "p.yaml:1: the top level must be a mapping with a `pipelines` list"),
        ("toml", "a = " + "[" * 2000, "p.toml: nested too deeply to be a pipelines file"),
        ("yaml", "a: " + "[" * 2000, "p.yaml: nested too deeply to be a pipelines file"),
    ],
)
def test_a_file_without_pipelines_says_so(fmt: str, text: str, expected: str) -> None:
    assert error(text, fmt, f"p.{fmt}") == expected


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".yml", ".YAML"])
def test_load_pipelines_reads_the_format_its_suffix_names(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"pipelines{suffix}"
    path.write_text(TOML if suffix == ".toml" else YAML, encoding="utf-8")
    loaded = load_pipelines(path)
    assert isinstance(loaded, PipelinesFile)
    assert loaded == parse_pipelines(TOML, "toml")


def test_load_pipelines_names_the_path_in_each_mistake(tmp_path: Path) -> None:
    path = tmp_path / "listen.yml"
    path.write_text(changed(YAML, "tenant: acme", "tennant: acme"), encoding="utf-8")
    with pytest.raises(PipelineFileError, match=rf"^{path}:4: pipelines\[0\]\.tennant: "):
        load_pipelines(path)


def test_an_unknown_suffix_is_refused_with_the_suffixes_that_work(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.json"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(PipelineFileError) as caught:
        load_pipelines(path)
    assert str(caught.value) == (
        f"{path}: a pipelines file is TOML (.toml) or YAML (.yaml, .yml); "
        "rename it with one of those suffixes (not '.json')"
    )


def test_a_missing_or_undecodable_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PipelineFileError, match="cannot be read"):
        load_pipelines(tmp_path / "absent.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[[pipelines]]\nname = "caf\xe9"\n')
    with pytest.raises(PipelineFileError) as caught:
        load_pipelines(path)
    assert str(caught.value) == f"{path}:2: not UTF-8 text (save it as UTF-8)"
