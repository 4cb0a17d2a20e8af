"""Training through the queue: `sluice.train` -> Celery worker -> Ray Train (TorchTrainer,
DDP) -> registry -> inference by NAME@production, on the real stack."""

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from producers import Client
from tests.conftest import kill_group
from tests.integration.conftest import wait_until
from tests.lineage_checks import assert_full_lineage
from tests.training_data import breast_cancer_csv, digits_csv, sounds_csv, texts_csv

pytestmark = pytest.mark.integration
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _infer_accuracy(client: Client, ref: str, heldout: list[dict[str, Any]]) -> float:
    records = {
        str(r["id"]): {k: v for k, v in r.items() if k not in ("id", "diagnosis")} for r in heldout
    }
    job_id = client.submit_records(records, "classify-records", model=ref)
    view = client.wait(job_id, timeout=300)
    assert view.status == "succeeded", view
    truth = {str(r["id"]): r["diagnosis"] for r in heldout}
    rows = list(client.results(job_id))
    assert {r["model"] for r in rows} == {view.model}  # every result names its version
    return sum(r["output"]["label"] == truth[r["key"]] for r in rows) / len(rows)


def test_two_workers_train_with_real_ddp_and_the_registered_model_serves(
    client: Client, start_worker: Any, tmp_path: Path
) -> None:
    data, heldout = breast_cancer_csv(tmp_path / "bc.csv")
    start_worker()
    run_id = client.submit_training(
        task="classify-records",
        name="breast-cancer",
        data=data,
        label_column="diagnosis",
        key_column="id",
        workers=2,  # epochs, batch and learning rate: the defaults (issue 17)
    )
    run = client.wait_training(run_id, timeout=600)
    assert run.status == "succeeded", run.error
    ddp = run.progress["ddp"]
    # both ranks trained, on disjoint shards covering the training rows (455, less the 68
    # set aside to choose the epoch), and ended with one set of weights: the gradients were
    # all-reduced at every step
    assert [r["rank"] for r in ddp["ranks"]] == [0, 1]
    assert all(r["rows"] == 193 for r in ddp["ranks"])
    assert ddp["shard_overlap_rows"] == 0 and ddp["rows_covered"] == 386
    assert ddp["weights_in_sync"] and len({r["weights"] for r in ddp["ranks"]}) == 1
    version = client.registry.get("breast-cancer", run.model_version)
    assert version.ref == "breast-cancer@1" and version.stage == "staging"
    assert version.metrics["heldout_accuracy"] >= 0.95
    # early stopping chose the epoch (the best one kept), and the baseline is on the version
    metrics = version.metrics
    assert metrics["best_epoch"] < metrics["epochs_run"] == run.progress["epoch"] < 300
    assert metrics["n_validation"] == 68
    assert version.baseline is not None and version.baseline["value"] > 0.95
    assert metrics["heldout_accuracy"] >= version.baseline["value"] - 0.02
    assert "id" not in [f for f in run.spec["input_columns"]]
    client.registry.promote("breast-cancer", 1)
    # the held-out rows, served by NAME@production, agree with the recorded metric
    assert _infer_accuracy(client, "breast-cancer@production", heldout) >= 0.95


@SQLITE_ONLY
def test_dp_sgd_reaches_090_within_its_budget_and_records_it(
    client: Client, start_worker: Any, tmp_path: Path
) -> None:
    data, heldout = breast_cancer_csv(tmp_path / "bc.csv")
    start_worker()
    run_id = client.submit_training(
        task="classify-records",
        name="bc-private",
        data=data,
        label_column="diagnosis",
        key_column="id",
        workers=2,
        epochs=30,
        dp_epsilon=8.0,
        dp_delta=1e-5,
        dp_max_grad_norm=1.5,
    )
    run = client.wait_training(run_id, timeout=600)
    assert run.status == "succeeded", run.error
    version = client.registry.get("bc-private", "latest")
    assert version.dp is not None
    assert 0 < version.dp["epsilon"] <= 8.0 + 1e-6 and version.dp["delta"] == 1e-5
    assert version.dp["max_grad_norm"] == 1.5
    assert all(h["loss"] is None for h in run.progress["history"])  # nothing un-noised shown
    assert version.dp["noise_multiplier"] > 0.3  # real noise was added
    assert run.progress["history"][-1]["epsilon"] == pytest.approx(version.dp["epsilon"])
    assert version.metrics["heldout_accuracy"] >= 0.90
    assert _infer_accuracy(client, version.ref, heldout) >= 0.90
    # a row served by the private model names its budget (issue 22)
    row = {k: v for k, v in heldout[0].items() if k not in ("id", "diagnosis")}
    served = client.submit_records({"patient": row}, "classify-records", model=version.ref)
    assert client.wait(served, timeout=300).status == "succeeded"
    lineage = client.lineage(served, "patient")
    assert_full_lineage(lineage, explained=False, dp=True)
    assert lineage["model"]["dp"] == version.dp
    assert lineage["model"]["registry"]["version"] == version.version


def test_a_killed_training_run_resumes_from_its_last_checkpoint(
    client: Client, start_worker: Any, env: dict[str, str], tmp_path: Path
) -> None:
    data, _ = breast_cancer_csv(tmp_path / "bc.csv")
    first = start_worker(SLUICE_TRAIN_CHECKPOINT_SECONDS="0")
    run_id = client.submit_training(
        task="classify-records",
        name="bc-resumed",
        data=data,
        label_column="diagnosis",
        key_column="id",
        epochs=40,
        early_stopping=False,  # every epoch runs: the history is checked whole
    )
    killed_at = wait_until(
        lambda: (
            client.training_run(run_id).progress.get("epoch", 0) >= 6
            and client.training_run(run_id).progress["epoch"]
        ),
        timeout=300,
        what="six epochs",
    )
    kill_group(first, signal.SIGKILL)  # the Celery worker and its Ray Train driver
    at_kill = client.training_run(run_id)
    assert at_kill.status == "running" and at_kill.progress["epoch"] >= killed_at
    start_worker(SLUICE_TRAIN_CHECKPOINT_SECONDS="0")  # its sweeper finds the expired lease
    run = client.wait_training(run_id, timeout=600)
    assert run.status == "succeeded", run.error
    assert run.attempts == 2
    resumed = run.progress["resumed_from_epoch"]
    # from the newest checkpoint (one per epoch here, written after the epoch's progress)
    assert 3 <= resumed <= at_kill.progress["epoch"]
    # the history is continuous: epochs before the checkpoint come from it, the rest were
    # trained once by the second attempt
    assert [h["epoch"] for h in run.progress["history"]] == list(range(1, 41))
    assert client.registry.get("bc-resumed", "latest").metrics["heldout_accuracy"] >= 0.9
    # once registered, the run's checkpoints are removed; the model is in the store
    assert not os.path.exists(tmp_path / "data" / "training" / run_id)
    assert os.path.isdir(client.registry.get("bc-resumed", "latest").uri)


@SQLITE_ONLY
def test_text_image_and_audio_models_train_through_the_queue_and_serve(
    client: Client, start_worker: Any, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    client.settings.input_roots = str(media)
    start_worker(SLUICE_INPUT_ROOTS=str(media))
    runs = {
        "classify-text": client.submit_training(
            task="classify-text",
            name="tickets",
            data=texts_csv(tmp_path / "texts.csv"),
            label_column="topic",
            epochs=8,
            batch_size=16,
        ),
        "classify-image": client.submit_training(
            task="classify-image",
            name="digits",
            data=digits_csv(media / "digits"),
            label_column="label",
            epochs=6,
            batch_size=16,
        ),
        "classify-audio": client.submit_training(
            task="classify-audio",
            name="sounds",
            data=sounds_csv(media / "sounds"),
            label_column="label",
            epochs=16,
            batch_size=8,
        ),
    }
    inputs = {
        "classify-text": None,
        "classify-image": media / "digits" / "d0.png",
        "classify-audio": media / "sounds" / "s0.wav",
    }
    chance = {"classify-text": 1 / 3, "classify-image": 1 / 4, "classify-audio": 1 / 4}
    for task, run_id in runs.items():
        run = client.wait_training(run_id, timeout=900)
        assert run.status == "succeeded", (task, run.error)
        version = client.registry.get(run.name, "latest")
        assert version.metrics["heldout_accuracy"] > chance[task] + 0.2, (task, version)
        if task == "classify-text":  # its baseline: LogisticRegression on the embeddings
            assert version.baseline is not None and "embeddings" in version.baseline["method"]
            assert version.baseline["value"] > chance[task] + 0.2
        if task == "classify-text":
            job_id = client.submit_texts(["Where is my parcel?"], task, model=version.ref)
        else:
            job_id = client.submit_media([str(inputs[task])], task, model=version.ref)
        view = client.wait(job_id, timeout=300)
        assert view.status == "succeeded" and view.model == version.ref
        label = next(iter(client.results(job_id)))["output"]["label"]
        assert label in run.spec["labels"]


@SQLITE_ONLY
def test_a_cancelled_run_stops_after_its_epoch_and_registers_nothing(
    client: Client, start_worker: Any, tmp_path: Path
) -> None:
    data, _ = breast_cancer_csv(tmp_path / "bc.csv")
    start_worker()
    run_id = client.submit_training(
        task="classify-records",
        name="bc-cancelled",
        data=data,
        label_column="diagnosis",
        key_column="id",
        epochs=5000,
        early_stopping=False,
    )
    wait_until(
        lambda: client.training_run(run_id).progress.get("epoch", 0) >= 2,
        timeout=300,
        what="two epochs",
    )
    assert client.runs.cancel(run_id).status == "cancelled"
    # the worker stops at the next epoch boundary and frees its Ray CPU: a run that needs
    # both of the cluster's CPUs can then train
    after = client.submit_training(
        task="classify-records",
        name="bc-after",
        data=data,
        label_column="diagnosis",
        key_column="id",
        epochs=3,
        workers=2,
    )
    assert client.wait_training(after, timeout=300).status == "succeeded"
    run = client.training_run(run_id)
    assert run.status == "cancelled" and run.progress["epoch"] < 5000
    assert client.registry.list("bc-cancelled") == []
