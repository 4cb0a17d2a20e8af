"""A task from another package (tests/plugins/sluice_text_stats: a spec and a handler, nothing
else) runs through the real `sluice worker` and `sluice submit`, registered either by
SLUICE_TASK_MODULES or by the `sluice.tasks` entry-point group. Nothing is monkeypatched: the
processes find the package on PYTHONPATH, as an installed package would be found."""

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import SLUICE

pytestmark = pytest.mark.integration
TESTS = Path(__file__).resolve().parent.parent
PLUGINS = TESTS / "plugins"  # the package itself
DISTS = TESTS / "plugin_dists"  # its installed metadata: the entry point
TEXTS = {
    "a": "the quick brown fox jumps over the lazy dog",
    "b": "extraordinary claims require extraordinary evidence",
    "c": "tiny",
    "d": "   ",  # empty: refused at submit, the job still ends
    "e": "Sluice counts words in batches",
}
WAYS = {
    "setting": {"PYTHONPATH": str(PLUGINS), "SLUICE_TASK_MODULES": "sluice_text_stats"},
    "entry-point": {"PYTHONPATH": os.pathsep.join([str(PLUGINS), str(DISTS)])},
}


def run(
    *args: str, env: dict[str, str], extra: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [SLUICE, *args],
        env={**clean, **env, **extra},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def expected(text: str, minimum: int) -> dict[str, Any]:
    words = text.split()
    return {
        "words": len(words),
        "characters": sum(map(len, words)),
        "longest_word": max(words, key=len),
        "long_words": sum(len(w) >= minimum for w in words),
    }


@pytest.mark.parametrize("way", list(WAYS))
def test_a_task_from_another_package_runs_end_to_end(
    way: str, env: dict[str, str], start_worker: Callable[..., Any], tmp_path: Path
):
    extra = WAYS[way]
    help_text = run("submit", "--help", env=env, extra=extra, cwd=tmp_path).stdout
    assert "text-stats" in help_text and "--min-word-length" in help_text
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"id": k, "body": v}) + "\n" for k, v in TEXTS.items()))
    start_worker(**extra)
    submitted = run(
        "submit", str(data), "--task", "text-stats", "--key-column", "id",
        "--text-column", "body", "--min-word-length", "6", "--wait", "--json",
        env=env, extra=extra, cwd=tmp_path,
    )  # fmt: skip
    view = json.loads(submitted.stdout.strip().splitlines()[-1])
    assert submitted.returncode == 1, submitted.stderr  # not every item ok: exit 1
    assert view["status"] == "partially_failed"
    assert (view["ok"], view["invalid"], view["error"]) == (4, 1, 0)
    assert view["model"] == "none"
    results = run("results", view["job_id"], env=env, extra=extra, cwd=tmp_path)
    rows = {r["key"]: r for r in map(json.loads, results.stdout.splitlines())}
    assert set(rows) == set(TEXTS)
    for key, text in TEXTS.items():
        if key == "d":
            assert (rows[key]["status"], rows[key]["error"]) == ("invalid", "empty text")
        else:
            assert rows[key]["status"] == "ok"
            assert rows[key]["output"] == expected(text, 6)


def test_a_plugin_is_refused_clearly_when_it_is_wrong(env: dict[str, str], tmp_path: Path):
    # the same package by both routes is one task; another spec under its name is refused
    both = {**WAYS["entry-point"], "SLUICE_TASK_MODULES": "sluice_text_stats"}
    same = run("submit", "--help", env=env, extra=both, cwd=tmp_path)
    assert same.returncode == 0 and "--min-word-length" in same.stdout
    (tmp_path / "clash_tasks.py").write_text(
        "from dataclasses import replace\n"
        "from sluice_text_stats import TEXT_STATS\n"
        "SLUICE_TASKS = [replace(TEXT_STATS, description='another')]\n"
    )
    clash = {
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(DISTS), str(tmp_path)]),
        "SLUICE_TASK_MODULES": "clash_tasks",
    }
    twice = run("submit", "--help", env=env, extra=clash, cwd=tmp_path)
    assert twice.returncode == 2
    assert (
        "task 'text-stats' is registered twice: by entry point text-stats = "
        "sluice_text_stats:SLUICE_TASKS (sluice.tasks) and by module clash_tasks" in twice.stderr
    )
    missing = run(
        "submit", "--help", env=env, extra={"SLUICE_TASK_MODULES": "nowhere"}, cwd=tmp_path
    )
    assert missing.returncode == 2
    assert "module nowhere (SLUICE_TASK_MODULES) does not import" in missing.stderr
    # a spec whose handler path names nothing: refused at submit, naming the path
    (tmp_path / "broken_tasks.py").write_text(
        "from dataclasses import replace\n"
        "from sluice_text_stats import TEXT_STATS\n"
        "SLUICE_TASKS = [replace(TEXT_STATS, name='broken',"
        " handler='sluice_text_stats.handler:NoSuchHandler')]\n"
    )
    (tmp_path / "in.jsonl").write_text('{"text": "a b c"}\n')
    broken = {
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(tmp_path)]),
        "SLUICE_TASK_MODULES": "broken_tasks",
    }
    refused = run("submit", "in.jsonl", "--task", "broken", env=env, extra=broken, cwd=tmp_path)
    assert refused.returncode == 2
    assert (
        "handler sluice_text_stats.handler:NoSuchHandler does not import: "
        "sluice_text_stats.handler defines no 'NoSuchHandler'" in refused.stderr
    )
    unknown = run("submit", "in.jsonl", "--task", "nope", env=env, extra={}, cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown task 'nope'; known tasks: " in unknown.stderr
