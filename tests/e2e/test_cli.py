"""The `sluice` command as a user runs it, from a fresh directory with nothing running."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLES

pytestmark = pytest.mark.e2e
SLUICE = str(Path(sys.executable).parent / "sluice")


def sluice(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [SLUICE, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_unreadable_input_is_a_clear_error_and_a_failing_exit(tmp_path: Path):
    env = {"SLUICE_BROKER_URL": "redis://127.0.0.1:1/0"}  # never reached: the file is checked first
    (tmp_path / "bad.jsonl").write_bytes(b"\x00\xff\x00 not json at all\n")
    run = sluice("submit", "bad.jsonl", "--task", "embed", cwd=tmp_path, env=env)
    assert run.returncode == 2 and "error: bad.jsonl" in run.stderr
    run = sluice("submit", "missing.csv", "--task", "embed", cwd=tmp_path, env=env)
    assert run.returncode == 2 and "missing.csv: no such file" in run.stderr
    run = sluice(
        "submit", str(SAMPLES), "--task", "embed", "--explain", "all", cwd=tmp_path, env=env
    )
    assert run.returncode == 2 and "makes no explanation" in run.stderr
    run = sluice("submit", str(SAMPLES), "--task", "embed", cwd=tmp_path)  # nothing running
    assert run.returncode == 2 and "no broker: start the embedded stack" in run.stderr


def test_worker_fails_fast_on_an_unsafe_visibility_timeout(tmp_path: Path):
    env = {
        "SLUICE_BROKER_URL": "redis://127.0.0.1:1/0",
        "SLUICE_VISIBILITY_TIMEOUT": "30",
        "SLUICE_CHUNK_TIME_LIMIT": "60",
    }
    run = sluice("worker", cwd=tmp_path, env=env, timeout=60)
    assert run.returncode == 2
    assert (
        "SLUICE_VISIBILITY_TIMEOUT (30s) must be longer than SLUICE_CHUNK_TIME_LIMIT" in run.stderr
    )


def test_embedded_stack_submit_status_results_cancel(tmp_path: Path, demo_models: Path):
    photos = tmp_path / "photos"
    photos.mkdir()
    roots = {"SLUICE_INPUT_ROOTS": str(photos)}  # read by the worker that `stack up` starts
    up = sluice("stack", "up", cwd=tmp_path, env=roots, timeout=180)
    assert up.returncode == 0, up.stderr
    pids = json.loads(up.stdout)["pids"]
    try:
        data = tmp_path / "msgs.jsonl"
        lines = SAMPLES.read_text(encoding="utf-8").splitlines()[:40]
        data.write_text("\n".join(lines + ['{"id": "blank", "text": ""}']) + "\n")
        run = sluice(
            "submit",
            "msgs.jsonl",
            "--task",
            "zero-shot-text",
            "--labels",
            "billing,shipping,technical,account,praise",
            "--key-column",
            "id",
            "--explain",
            "sample:0.1",
            "--wait",
            "--json",
            cwd=tmp_path,
        )
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert run.returncode == 1  # one item was invalid, so not a complete success
        assert (summary["status"], summary["total"], summary["ok"], summary["invalid"]) == (
            "partially_failed",
            41,
            40,
            1,
        )
        job = summary["job_id"]

        status = json.loads(sluice("status", job, cwd=tmp_path).stdout)
        assert status["status"] == "partially_failed" and status["processed"] == 41
        out = sluice("results", job, "--format", "jsonl", cwd=tmp_path).stdout.splitlines()
        rows = [json.loads(line) for line in out]
        assert len(rows) == 41 and rows[-1]["status"] == "invalid"
        assert all(
            r["output"]["label"] in {"billing", "shipping", "technical", "account", "praise"}
            for r in rows[:-1]
        )
        assert (
            sluice("results", job, "--format", "csv", "-o", "r.csv", cwd=tmp_path).returncode == 0
        )
        assert (tmp_path / "r.csv").read_text(encoding="utf-8").count("\n") >= 42
        cancel = json.loads(sluice("cancel", job, cwd=tmp_path).stdout)
        assert cancel["status"] == "partially_failed"  # a finished job stays as it ended
        missing = sluice("status", "nope", cwd=tmp_path)
        assert missing.returncode == 2 and "no job with id 'nope'" in missing.stderr

        from ops.demo_models import digits_holdout

        for n, (image, _) in enumerate(digits_holdout()[:5]):
            image.save(photos / f"{n}.png")
        (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        model = str(demo_models / "digits-classifier")
        run = sluice(
            "submit",
            "photos",
            "--task",
            "classify-image",
            "--model",
            model,
            "--explain",
            "all",
            "--wait",
            "--json",
            cwd=tmp_path,
            env=roots,
        )
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert (summary["ok"], summary["invalid"]) == (5, 1), run.stderr
        report = sluice(
            "results",
            summary["job_id"],
            "--format",
            "html",
            "-o",
            "r.html",
            cwd=tmp_path,
            env=roots,
        )
        assert report.returncode == 0 and "wrote 6 rows" in report.stderr
        assert (tmp_path / "r.html").read_text().count("<img") == 10  # image + heatmap, x5
        # the same folder, boxes and image embeddings (issue 19's tasks from the CLI)
        for task, model, check in (
            ("detect-objects", "shapes-detector", lambda out: out["count"] == len(out["objects"])),
            ("embed-image", "tiny-clip", lambda out: out["dim"] == len(out["embedding"]) == 32),
        ):
            run = sluice(
                "submit", "photos", "--task", task, "--model", str(demo_models / model),
                "--wait", "--json", cwd=tmp_path, env=roots,
            )  # fmt: skip
            summary = json.loads(run.stdout.strip().splitlines()[-1])
            assert (summary["ok"], summary["invalid"]) == (5, 1), run.stderr
            out = sluice("results", summary["job_id"], "--format", "jsonl", cwd=tmp_path).stdout
            rows = [json.loads(line) for line in out.splitlines()]
            assert all(check(r["output"]) for r in rows if r["status"] == "ok"), task
    finally:
        down = sluice("stack", "down", cwd=tmp_path, timeout=120)
    assert down.returncode == 0 and down.stdout.strip() == "stopped"
    after = json.loads(sluice("status", job, cwd=tmp_path).stdout)  # the ledger outlives it
    assert after["status"] == "partially_failed"
    # up again at once (`make demo` twice): a new Ray head on another port, and its worker is
    # not refused for the one the ledger last saw (issue 20's Ray binding)
    assert sluice("stack", "up", cwd=tmp_path, timeout=180).returncode == 0
    try:
        again = sluice("submit", "msgs.jsonl", "--task", "embed", "--wait", "--json",
                       cwd=tmp_path, timeout=300)  # fmt: skip
        assert json.loads(again.stdout.strip().splitlines()[-1])["ok"] == 40, again.stderr
    finally:
        sluice("stack", "down", cwd=tmp_path, timeout=120)
    for pid in pids.values():
        assert (
            not Path(f"/proc/{pid}").exists()
            or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        )
