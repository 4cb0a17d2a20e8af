"""Hosts that share nothing but the services and a bucket (issue 20): each "host" here has its
own data dir, and the only path they share is an S3 bucket on moto's server (real S3 over
HTTP). A model trained and registered by one is served by the other; media, list files,
models and exports by s3:// URI; a training run whose checkpoints live in the bucket resumes
after its worker is killed; a model path the worker's host lacks ends the items saying so."""

import json
import shutil
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from producers import Client
from schemas.settings import Settings
from storage.object_store import ObjectStore
from tests.conftest import Bucket, kill_group
from tests.integration.conftest import sluice, wait_until
from tests.training_data import breast_cancer_csv

pytestmark = pytest.mark.integration
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def host_env(env: dict[str, str], bucket: Bucket, data_dir: Path, **extra: str) -> dict[str, str]:
    """One host's SLUICE_* settings: the shared services, the bucket, its own data dir."""
    return {
        **env,
        "SLUICE_DATA_DIR": str(data_dir),
        "SLUICE_MODEL_STORE": f"{bucket.uri}/registry",
        "SLUICE_TRAIN_STORAGE": f"{bucket.uri}/training",
        "SLUICE_STORAGE_OPTIONS": bucket.options_json,
        "SLUICE_OBJECT_PREFIXES": f"{bucket.uri}/media/",
        **extra,
    }


def client_for(host: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Client:
    for key, value in host.items():
        monkeypatch.setenv(key, value)
    return Client(Settings())


def keys_under(bucket: Bucket, prefix: str) -> list[str]:
    listed = bucket.client().list_objects_v2(Bucket=bucket.name, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


@SQLITE_ONLY
def test_a_model_trained_on_one_host_is_served_by_another_sharing_only_the_bucket(
    env: dict[str, str],
    bucket: Bucket,
    start_worker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, heldout = breast_cancer_csv(tmp_path / "bc.csv")
    host_a = host_env(env, bucket, tmp_path / "host-a")
    a = client_for(host_a, monkeypatch)
    worker_a = start_worker(**host_a)
    bucket.client().upload_file(str(data), bucket.name, "data/bc.csv")
    run_id = a.submit_training(
        task="classify-records",
        name="bc",
        data=f"{bucket.uri}/data/bc.csv",  # read again by the worker, from the bucket
        label_column="diagnosis",
        key_column="id",
    )
    run = a.wait_training(run_id, timeout=600)
    assert run.status == "succeeded", run.error
    version = a.registry.get("bc", "latest")
    assert version.uri == f"{bucket.uri}/registry/bc/{run_id}.1"
    assert f"registry/bc/{run_id}.1/model.safetensors" in keys_under(bucket, "registry/")
    assert keys_under(bucket, f"training/{run_id}") == []  # checkpoints gone once registered
    kill_group(worker_a)
    shutil.rmtree(tmp_path / "host-a")  # host A is gone: nothing of it is read again

    host_b = host_env(env, bucket, tmp_path / "host-b")
    b = client_for(host_b, monkeypatch)
    start_worker(**host_b)
    records = {
        str(r["id"]): {k: v for k, v in r.items() if k not in ("id", "diagnosis")} for r in heldout
    }
    job_id = b.submit_records(records, "classify-records", model="bc@1")
    view = b.wait(job_id, timeout=300)
    assert view.status == "succeeded", view
    truth = {str(r["id"]): r["diagnosis"] for r in heldout}
    rows = list(b.results(job_id))
    accuracy = sum(r["output"]["label"] == truth[r["key"]] for r in rows) / len(rows)
    assert accuracy >= 0.9 and view.model == "bc@1"
    # host B holds its own copy, named by the digest the job ran with
    assert (tmp_path / "host-b" / "model-cache" / view.model_version / "config.json").is_file()
    assert not (tmp_path / "host-a").exists()
    # the export goes to the bucket as one object
    assert b.export(job_id, "jsonl", f"{bucket.uri}/exports/bc.jsonl") == len(heldout)
    body = bucket.client().get_object(Bucket=bucket.name, Key="exports/bc.jsonl")["Body"].read()
    assert sorted(json.loads(line)["key"] for line in body.splitlines()) == sorted(truth)


def test_media_list_file_model_and_export_by_s3_uri_through_the_cli(
    client: Client,
    env: dict[str, str],
    bucket: Bucket,
    start_worker: Any,
    demo_models: Path,
    tmp_path: Path,
) -> None:
    from ops.demo_models import digits_holdout

    s3 = bucket.client()
    store = ObjectStore(bucket.options)
    store.upload_dir(demo_models / "digits-classifier", f"{bucket.uri}/models/digits")
    truth = {}
    for n, (image, label) in enumerate(digits_holdout()[:6]):
        local = tmp_path / f"d{n}.png"
        image.save(local)
        s3.upload_file(str(local), bucket.name, f"media/d{n}.png")
        truth[f"d{n}"] = str(label)
    s3.put_object(Bucket=bucket.name, Key="private/p.png", Body=local.read_bytes())
    rows = [{"id": k, "path": f"{bucket.uri}/media/{k}.png"} for k in truth]
    rows += [
        {"id": "outside", "path": f"{bucket.uri}/private/p.png"},
        {"id": "missing", "path": f"{bucket.uri}/media/none.png"},
        {"id": "replaced", "path": f"{bucket.uri}/media/d0.png"},
    ]
    s3.put_object(
        Bucket=bucket.name,
        Key="lists/photos.jsonl",
        Body="".join(json.dumps(r) + "\n" for r in rows).encode(),
    )
    host = host_env(env, bucket, tmp_path / "host-a")
    submitted = sluice(
        host,
        "submit",
        f"{bucket.uri}/lists/photos.jsonl",
        "--task",
        "classify-image",
        "--model",
        f"{bucket.uri}/models/digits",
        "--key-column",
        "id",
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    # replaced after submit, before any worker read it: that item is refused, not misread
    s3.put_object(Bucket=bucket.name, Key="media/d0.png", Body=(tmp_path / "d1.png").read_bytes())
    start_worker(**host_env(env, bucket, tmp_path / "host-b"))
    view = client.wait(job_id, timeout=300)
    assert (view.counts.ok, view.counts.invalid) == (5, 4), view
    exported = sluice(host, "results", job_id, "-o", f"{bucket.uri}/exports/photos.jsonl")
    assert exported.returncode == 0, exported.stderr
    body = s3.get_object(Bucket=bucket.name, Key="exports/photos.jsonl")["Body"].read()
    res = {r["key"]: r for r in map(json.loads, body.splitlines())}
    assert sum(res[k]["output"]["label"] == v for k, v in truth.items() if k != "d0") >= 4
    assert "changed after it was submitted" in res["replaced"]["error"]
    assert "changed after it was submitted" in res["d0"]["error"]
    assert "outside the object-store prefixes" in res["outside"]["error"]
    assert "no such object" in res["missing"]["error"]
    # again: the unchanged objects come from the result cache (keyed by location and ETag,
    # not fetched by the worker to be hashed), the replaced one is run on its new bytes
    again = sluice(host, "submit", f"{bucket.uri}/lists/photos.jsonl", "--task",
                   "classify-image", "--model", f"{bucket.uri}/models/digits",
                   "--key-column", "id", "--wait", "--json")  # fmt: skip
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert (summary["ok"], summary["invalid"]) == (7, 2), again.stderr
    rows = {r["key"]: r for r in client.results(summary["job_id"])}
    assert {k for k, r in rows.items() if r.get("cached")} == {f"d{n}" for n in range(1, 6)}
    assert rows["d0"]["output"]["label"] == res["d1"]["output"]["label"]  # d1's bytes now


@SQLITE_ONLY
def test_a_killed_run_with_checkpoints_in_the_bucket_resumes_on_another_host(
    env: dict[str, str],
    bucket: Bucket,
    start_worker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, _ = breast_cancer_csv(tmp_path / "bc.csv")
    host_a = host_env(env, bucket, tmp_path / "host-a", SLUICE_TRAIN_CHECKPOINT_SECONDS="0")
    a = client_for(host_a, monkeypatch)
    first = start_worker(**host_a)
    run_id = a.submit_training(
        task="classify-records",
        name="bc-resumed",
        data=data,
        label_column="diagnosis",
        key_column="id",
        epochs=40,
        early_stopping=False,
    )
    wait_until(
        lambda: a.training_run(run_id).progress.get("epoch", 0) >= 6,
        timeout=300,
        what="six epochs",
    )
    assert keys_under(bucket, f"training/{run_id}/")  # Ray Train's checkpoints, in the bucket
    kill_group(first, signal.SIGKILL)
    at_kill = a.training_run(run_id)
    shutil.rmtree(tmp_path / "host-a")
    start_worker(**host_env(env, bucket, tmp_path / "host-b", SLUICE_TRAIN_CHECKPOINT_SECONDS="0"))
    run = a.wait_training(run_id, timeout=600)
    assert run.status == "succeeded", run.error
    assert (
        run.attempts == 2 and 3 <= run.progress["resumed_from_epoch"] <= at_kill.progress["epoch"]
    )
    assert [h["epoch"] for h in run.progress["history"]] == list(range(1, 41))
    version = a.registry.get("bc-resumed", "latest")
    assert version.uri.startswith(f"{bucket.uri}/registry/bc-resumed/")
    assert keys_under(bucket, f"training/{run_id}") == []
    assert not (tmp_path / "host-b" / "training").exists()  # nothing written beside the worker


@SQLITE_ONLY
def test_a_model_directory_the_worker_host_lacks_ends_the_items_naming_it_and_the_host(
    client: Client, start_worker: Any, tiny_classifier: Path, tmp_path: Path
) -> None:
    model = tmp_path / "only-on-the-submitter"
    shutil.copytree(tiny_classifier, model)
    job_id = client.submit_texts(["thanks!", "refund please"], "classify-text", model=str(model))
    shutil.rmtree(model)  # the worker's host has no such directory
    start_worker(SLUICE_MAX_ATTEMPTS="1")
    view = client.wait(job_id, timeout=240)
    assert view.status == "failed" and view.counts.error == 2
    errors = {r["error"] for r in client.results(job_id)}
    assert len(errors) == 1
    (message,) = errors
    assert str(model) in message and socket.gethostname() in message
    assert "cannot be read on host" in message


@SQLITE_ONLY
def test_a_registered_base_in_the_bucket_is_fine_tuned_by_a_host_that_never_saw_it(
    env: dict[str, str],
    bucket: Bucket,
    start_worker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, _ = breast_cancer_csv(tmp_path / "bc.csv")
    bucket.client().upload_file(str(data), bucket.name, "data/bc.csv")
    request = {
        "task": "classify-records",
        "data": f"{bucket.uri}/data/bc.csv",
        "label_column": "diagnosis",
        "key_column": "id",
        "epochs": 3,
    }
    host_a = host_env(env, bucket, tmp_path / "host-a")
    a = client_for(host_a, monkeypatch)
    worker_a = start_worker(**host_a)
    first = a.wait_training(a.submit_training(name="bc-base", **request), timeout=600)
    assert first.status == "succeeded", first.error
    kill_group(worker_a)
    # host B asks for a warm start from bc-base@1 (in the bucket's registry); host C trains
    b = client_for(host_env(env, bucket, tmp_path / "host-b"), monkeypatch)
    run_id = b.submit_training(name="bc-tuned", base="bc-base@1", **request)
    base = b.training_run(run_id).spec["base"]
    assert base == a.registry.get("bc-base", 1).uri and base.startswith(bucket.uri)
    shutil.rmtree(tmp_path / "host-a")
    shutil.rmtree(tmp_path / "host-b")  # the submitter's copy of the base is gone too
    start_worker(**host_env(env, bucket, tmp_path / "host-c"))
    run = b.wait_training(run_id, timeout=600)
    assert run.status == "succeeded", run.error
    assert b.registry.get("bc-tuned", "latest").metrics["heldout_accuracy"] >= 0.9
    assert list((tmp_path / "host-c" / "model-cache").glob("*/features.json"))


@SQLITE_ONLY
def test_a_model_replaced_in_the_bucket_after_submit_ends_the_items_invalid(
    env: dict[str, str],
    bucket: Bucket,
    start_worker: Any,
    tiny_classifier: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = ObjectStore(bucket.options)
    store.upload_dir(tiny_classifier, f"{bucket.uri}/models/tiny")
    a = client_for(host_env(env, bucket, tmp_path / "host-a"), monkeypatch)
    job_id = a.submit_texts(["thanks!", "refund please"], "classify-text",
                            model=f"{bucket.uri}/models/tiny")  # fmt: skip
    config = json.loads((tiny_classifier / "config.json").read_text())
    config["id2label"] = {"0": "praise", "1": "billing"}  # swapped after submit
    bucket.client().put_object(
        Bucket=bucket.name, Key="models/tiny/config.json", Body=json.dumps(config).encode()
    )
    start_worker(**host_env(env, bucket, tmp_path / "host-b"))
    view = a.wait(job_id, timeout=240)
    assert (view.status, view.counts.invalid) == ("failed", 2)
    errors = {r["error"] for r in a.results(job_id)}
    assert len(errors) == 1 and "changed after the job was submitted" in errors.pop()
