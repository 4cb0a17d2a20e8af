"""Images, audio and records through the whole path (Redis, Celery, Ray, the ledger), with
their explanations persisted and each kind of bad input settled as one `invalid` item."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import redis

from producers import Client
from tests.lineage_checks import assert_full_lineage
from tests.media_files import bomb_png, png_bytes, write_audio

pytestmark = pytest.mark.integration


def by_key(client: Client, job_id: str) -> dict[str, dict]:
    return {r["key"]: r for r in client.results(job_id)}


def test_images_end_to_end(
    client: Client, start_worker, demo_models: Path, tmp_path: Path, settings
):
    from ops.demo_models import digits_holdout

    root = (tmp_path / "media").resolve()
    root.mkdir()
    truth = {}
    for n, (image, label) in enumerate(digits_holdout()[:9]):
        name = f"d{n}.{('png', 'jpg', 'webp')[n % 3]}"
        image.save(root / name, quality=95, lossless=True)  # options of jpg and webp
        truth[name] = str(label)
    (root / "truncated.png").write_bytes(png_bytes((64, 64))[:300])
    (root / "bomb.png").write_bytes(bomb_png(100_000, 100_000))
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes())
    (root / "escape.png").symlink_to(outside)
    inline = base64.b64encode((root / "d0.png").read_bytes()).decode()
    rows = [{"id": k, "path": k} for k in truth] + [
        {"id": "truncated", "path": "truncated.png"},
        {"id": "bomb", "path": f"file://{root}/bomb.png"},
        {"id": "escape", "path": "escape.png"},
        {"id": "dotdot", "path": "../outside.png"},
        {"id": "inline", "path": f"data:image/png;base64,{inline}"},
    ]
    listing = root / "list.jsonl"
    listing.write_text("".join(json.dumps(r) + "\n" for r in rows))
    client.settings.input_roots = str(root)
    job_id = client.submit_file(
        listing,
        "classify-image",
        model=str(demo_models / "digits-classifier"),
        key_column="id",
        explain="all",
    )
    # Claim check: the queued message names the chunk; the inline image is in the ledger.
    broker = redis.Redis.from_url(settings.broker_url)
    queued = [m for k in broker.keys("sluice.image*") for m in broker.lrange(k, 0, -1)]
    assert len(queued) == 1 and len(queued[0]) < 2000

    start_worker(SLUICE_INPUT_ROOTS=str(root))
    view = client.wait(job_id, timeout=240)
    assert (view.status, view.counts.ok, view.counts.invalid) == ("partially_failed", 10, 4)
    res = by_key(client, job_id)
    assert sum(res[k]["output"]["label"] == v for k, v in truth.items()) >= 8  # of 9
    assert res["inline"]["output"]["label"] == truth["d0.png"]
    expl = res["d1.jpg"]["explanation"]
    assert expl["method"] == "integrated_gradients" and expl["status"] == "ok"
    rows_, cols = expl["detail"]["grid"]
    assert rows_ * cols == len(expl["attributions"])
    assert abs(expl["convergence_delta"]) < 0.15  # Integrated Gradients with 8 steps in tests
    assert "corrupt or truncated" in res["truncated"]["error"]
    assert "decompression bomb" in res["bomb"]["error"]
    assert "outside the input roots" in res["escape"]["error"]
    assert "contains '..'" in res["dotdot"]["error"]
    assert_full_lineage(client.lineage(job_id, "d1.jpg"), explained=True)

    from ops.report import write_html

    assert write_html(client, job_id, tmp_path / "r.html", 100) == 14
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64") == 2 * 10  # picture and heatmap per item


def test_audio_classification_and_transcription(
    client: Client, start_worker, demo_models: Path, tmp_path: Path
):
    import soundfile as sf

    from workers.training.synth_audio import SOUND_LABELS, synthesize

    root = (tmp_path / "audio").resolve()
    root.mkdir()
    rng = np.random.default_rng(7)
    truth = {}
    formats = [("wav", 22_050, 2), ("flac", 8_000, 1), ("ogg", 44_100, 1), ("mp3", 44_100, 1)]
    for n, label in enumerate(SOUND_LABELS * 2):
        ext, rate, channels = formats[n % len(formats)]
        clip = synthesize(label, 1.2, rate, rng)
        sf.write(
            root / f"c{n}.{ext}", np.stack([clip] * channels, 1) if channels > 1 else clip, rate
        )
        truth[f"c{n}.{ext}"] = label
    (root / "zero.wav").write_bytes(b"")
    (root / "random.wav").write_bytes(np.random.default_rng(3).bytes(8000))
    write_audio(root / "long.flac", 12.0, 8_000)
    client.settings.input_roots = str(root)
    model = str(demo_models / "sounds-classifier")
    job_id = client.submit_file(root, "classify-audio", model=model, explain="all")
    asr_job = client.submit_file(root, "transcribe", model=str(demo_models / "tiny-ctc"))
    start_worker(SLUICE_INPUT_ROOTS=str(root), SLUICE_MAX_AUDIO_SECONDS="10")
    view = client.wait(job_id, timeout=240)
    assert (view.counts.ok, view.counts.invalid) == (8, 3)
    res = by_key(client, job_id)
    assert {k: res[k]["output"]["label"] for k in truth} == truth
    assert "empty file (0 bytes)" in res["zero.wav"]["error"]
    assert "not a readable audio file" in res["random.wav"]["error"]
    assert "12.0 s long, over the cap of 10 s" in res["long.flac"]["error"]
    expl = res["c2.ogg"]["explanation"]
    assert expl["method"] == "segment_ablation" and expl["status"] == "ok"
    segments = expl["detail"]["segments"]
    assert segments[0][0] == 0.0 and abs(segments[-1][1] - 1.2) < 0.01
    assert len(segments) == len(expl["attributions"]) == len(expl["tokens"])
    assert_full_lineage(client.lineage(job_id, "c2.ogg"), explained=True)

    asr = client.wait(asr_job, timeout=240)
    assert (asr.counts.ok, asr.counts.invalid) == (8, 3)
    texts = [r["output"]["text"] for r in client.results(asr_job) if r["status"] == "ok"]
    assert all(isinstance(t, str) for t in texts) and any(texts)


def test_records_classification_and_regression(
    client: Client, start_worker, demo_models: Path, tmp_path: Path
):
    from sklearn.datasets import load_breast_cancer, load_diabetes

    from ops.demo_models import split_indices

    data = load_breast_cancer()
    _, held = split_indices(data.target, 0)
    names = [str(n) for n in data.feature_names]
    rows = [
        {"id": f"p{i}", **dict(zip(names, map(float, data.data[i]), strict=True))} for i in held
    ]
    good = dict(rows[0])
    bad = [
        {**good, "id": "nan", "mean radius": float("nan")},
        {**good, "id": "text", "mean texture": "high"},
        {**{k: v for k, v in good.items() if k != "worst area"}, "id": "missing"},
        {**good, "id": "extra", "colour": "red"},
        {**good, "id": "range", "mean area": -500.0},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + bad))
    model = str(demo_models / "breast-cancer-classifier")
    job_id = client.submit_file(
        path, "classify-records", model=model, key_column="id", explain="all"
    )
    x, y = load_diabetes(return_X_y=True, scaled=False)
    dnames = load_diabetes().feature_names
    reg_rows = {f"d{i}": dict(zip(dnames, map(float, x[i]), strict=True)) for i in range(20)}
    reg_job = client.submit_records(
        reg_rows, "regress-records", model=str(demo_models / "diabetes-regressor"), explain="all"
    )
    start_worker()
    view = client.wait(job_id, timeout=240)
    assert (view.counts.ok, view.counts.invalid) == (len(rows), 5)
    res = by_key(client, job_id)
    labels = [str(data.target_names[data.target[i]]) for i in held]
    accuracy = np.mean(
        [res[f"p{i}"]["output"]["label"] == lab for i, lab in zip(held, labels, strict=True)]
    )
    assert accuracy >= 0.95
    assert "column 'mean radius' is NaN" in res["nan"]["error"]
    assert "column 'mean texture' must be a number" in res["text"]["error"]
    assert "missing column 'worst area'" in res["missing"]["error"]
    assert "unexpected column(s) 'colour'" in res["extra"]["error"]
    assert "column 'mean area' = -500 is outside the allowed range" in res["range"]["error"]
    expl = res[f"p{held[0]}"]["explanation"]
    assert expl["tokens"] == names and len(expl["attributions"]) == len(names)
    assert_full_lineage(client.lineage(job_id, f"p{held[0]}"), explained=True)
    top = expl["detail"]["top"]
    assert len(top) == 5 and abs(top[0]["attribution"]) >= abs(top[-1]["attribution"])
    # Integrated Gradients is complete: attributions sum to f(x) - f(means), up to the delta.
    assert abs(expl["convergence_delta"]) < 0.15  # 8 steps in tests

    reg = client.wait(reg_job, timeout=240)
    assert reg.counts.ok == 20
    predictions = np.array([r["output"]["value"] for r in client.results(reg_job)])
    assert np.corrcoef(predictions, y[:20])[0, 1] > 0.5
