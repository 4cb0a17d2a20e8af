"""The train -> register -> promote -> infer loop with the `sluice` command, as the README
shows it, on a fresh embedded stack."""

import json
from pathlib import Path

import pytest

from tests.e2e.test_cli import sluice
from tests.training_data import breast_cancer_csv

pytestmark = pytest.mark.e2e


def test_train_register_promote_and_infer_by_name_from_the_cli(tmp_path: Path):
    _, heldout = breast_cancer_csv(tmp_path / "patients.csv")
    new = tmp_path / "new-patients.csv"
    header = [k for k in heldout[0] if k != "diagnosis"]
    new.write_text(
        "\n".join([",".join(header)] + [",".join(str(r[k]) for k in header) for r in heldout[:20]])
        + "\n"
    )
    up = sluice("stack", "up", cwd=tmp_path, timeout=180)
    assert up.returncode == 0, up.stderr
    try:
        bad = sluice(
            "train",
            "--task",
            "classify-records",
            "--data",
            "patients.csv",
            "--label-column",
            "nope",
            "--name",
            "bc",
            cwd=tmp_path,
        )
        assert bad.returncode == 2 and "column 'nope' not found" in bad.stderr
        run = sluice(
            "train",
            "--task",
            "classify-records",
            "--data",
            "patients.csv",
            "--label-column",
            "diagnosis",
            "--key-column",
            "id",
            "--name",
            "bc",
            "--wait",
            "--promote",
            "--json",
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout.splitlines()[-1])
        assert out["status"] == "succeeded" and out["model"]["ref"] == "bc@1"
        assert out["model"]["stage"] == "production"
        # the defaults: early stopping chose the epoch; the baseline is on the version
        metrics = out["model"]["metrics"]
        epochs = metrics["epochs_run"]
        assert metrics["best_epoch"] < epochs < 300
        baseline = metrics["baseline"]
        assert baseline["method"] == "LogisticRegression on standardised features"
        status = json.loads(sluice("status", out["run_id"], cwd=tmp_path).stdout)
        assert status["progress"]["epoch"] == epochs and status["model_version"] == 1
        listed = sluice("models", "list", cwd=tmp_path)
        assert listed.stdout.split()[:3] == ["default", "bc@1", "production"]
        assert f"baseline accuracy={baseline['value']:.4f}" in listed.stdout.replace(
            "baseline !", "baseline "
        )
        below = out["model"]["below_baseline"]
        assert (below is not None) == (metrics["heldout_accuracy"] < baseline["value"])
        assert (f"warning: {below}" in listed.stderr) if below else "warning" not in listed.stderr
        shown = json.loads(sluice("models", "show", "bc@production", cwd=tmp_path).stdout)
        assert len(shown["training"]["history"]) == epochs and len(shown["sha256"]) == 64
        job = sluice(
            "submit",
            "new-patients.csv",
            "--task",
            "classify-records",
            "--key-column",
            "id",
            "--model",
            "bc@production",
            "--wait",
            "--json",
            cwd=tmp_path,
        )
        assert job.returncode == 0, job.stderr
        view = json.loads(job.stdout.splitlines()[-1])
        assert view["model"] == "bc@1" and view["ok"] == 20
        rows = [
            json.loads(line)
            for line in sluice("results", view["job_id"], cwd=tmp_path).stdout.splitlines()
        ]
        assert {r["model"] for r in rows} == {"bc@1"}
        archived = sluice("models", "archive", "bc", "1", cwd=tmp_path)
        assert json.loads(archived.stdout)["stage"] == "archived"
        gone = sluice(
            "submit",
            "new-patients.csv",
            "--task",
            "classify-records",
            "--key-column",
            "id",
            "--model",
            "bc@production",
            cwd=tmp_path,
        )
        assert gone.returncode == 2 and "no production version" in gone.stderr
        # names belong to a tenant: acme's bc starts at version 1, beside the operator's
        theirs = sluice(
            "train",
            "--task",
            "classify-records",
            "--data",
            "patients.csv",
            "--label-column",
            "diagnosis",
            "--key-column",
            "id",
            "--name",
            "bc",
            "--epochs",
            "3",
            "--tenant",
            "acme",
            "--wait",
            "--promote",
            "--json",
            cwd=tmp_path,
        )
        assert theirs.returncode == 0, theirs.stderr
        acme = json.loads(theirs.stdout.splitlines()[-1])["model"]
        assert (acme["ref"], acme["tenant"], acme["stage"]) == ("bc@1", "acme", "production")
        mine = json.loads(sluice("models", "show", "bc@1", cwd=tmp_path).stdout)
        assert (mine["tenant"], mine["stage"]) == ("default", "archived")  # untouched
        shared = sluice(
            "models", "share", "bc", "--owner", "acme", "--tenant", "globex", cwd=tmp_path
        )
        assert json.loads(shared.stdout)["tenant"] == "globex", shared.stderr
        seen = sluice("models", "show", "bc@production", "--tenant", "globex", cwd=tmp_path)
        assert json.loads(seen.stdout)["tenant"] == "acme"
        moved = sluice("models", "archive", "bc", "1", "--tenant", "globex", cwd=tmp_path)
        assert moved.returncode == 2 and "only its owner changes its stages" in moved.stderr
    finally:
        sluice("stack", "down", cwd=tmp_path, timeout=120)


def test_a_worker_can_serve_only_the_training_queue_and_names_unknown_queues(tmp_path: Path):
    run = sluice(
        "worker",
        "--queues",
        "sluice.train,sluice.trian",
        cwd=tmp_path,
        env={"SLUICE_BROKER_URL": "redis://127.0.0.1:1/0"},
        timeout=60,
    )
    assert run.returncode == 2
    assert "unknown queues ['sluice.trian']" in run.stderr and "sluice.train" in run.stderr
