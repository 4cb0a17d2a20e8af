"""`detect-objects` and `embed-image` through the whole path (Redis, Celery, Ray, the ledger)
and through each front door (the SDK, REST, `sluice enrich`): images of several sizes in one
chunk, read back from the ledger, equal what transformers gives for each image alone; bad
images are `invalid` rows, each saying why."""

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sqlalchemy import text

from producers import Client
from schemas.tenants import TenantGrant
from storage.apikeys import ApiKeys
from storage.engine import make_engine
from tests.integration.conftest import rows_of, sluice, warehouse_url
from tests.media_files import bomb_png, png_bytes
from workers.training.synth_shapes import SHAPES

# the image work does not depend on the ledger's database (the other suites run both)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
# width x height: square and not, smaller and larger than the models' inputs
SIZES = [(64, 64), (96, 64), (64, 100), (128, 128), (50, 70)]


def write_scenes(root: Path) -> list[str]:
    from PIL import Image

    from workers.training.synth_shapes import scene

    rng = np.random.default_rng(11)
    names = []
    for n, (width, height) in enumerate(SIZES):
        image, _ = scene(64, rng, most=1, extent=(0.3, 0.6))
        name = f"s{n}.png"
        image.resize((width, height), Image.Resampling.BILINEAR).save(root / name)
        names.append(name)
    (root / "truncated.png").write_bytes(png_bytes((64, 64))[:300])
    (root / "bomb.png").write_bytes(bomb_png(100_000, 100_000))
    (root.parent / "outside.png").write_bytes(png_bytes())
    (root / "escape.png").symlink_to(root.parent / "outside.png")
    return names


def pipeline_detections(model_dir: Path, image_path: Path, threshold: float) -> dict[str, Any]:
    """What the transformers object-detection pipeline finds in one image, with its boxes
    as floats (the pipeline rounds them down to integers on the way out)."""
    from PIL import Image
    from transformers import pipeline

    detector = pipeline("object-detection", model=str(model_dir), device="cpu")
    raw: list[dict[str, Any]] = []
    post = detector.image_processor.post_process_object_detection

    def keep(*args: Any, **kwargs: Any) -> Any:
        results = post(*args, **kwargs)
        raw.append({k: v.clone() for k, v in results[0].items()})  # the pipeline edits its own
        return results

    detector.image_processor.post_process_object_detection = keep
    shown = detector(Image.open(image_path).convert("RGB"), threshold=threshold)
    assert len(raw) == 1 and len(shown) == len(raw[0]["scores"])
    return raw[0]


def same_objects(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """The same detections, up to the float noise of another batch."""
    return [o["label"] for o in a] == [o["label"] for o in b] and all(
        abs(x["score"] - y["score"]) < 1e-4 and np.allclose(x["box"], y["box"], atol=0.01)
        for x, y in zip(a, b, strict=True)
    )


def clip_vector(model: Any, processor: Any, image_path: Path) -> torch.Tensor:
    from PIL import Image

    pixels = processor(images=Image.open(image_path).convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels["pixel_values"])
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return F.normalize(out, dim=-1)[0]


def test_detection_and_image_embeddings_through_every_front_door(
    client: Client,
    start_worker,
    demo_models: Path,
    tmp_path: Path,
    env: dict[str, str],
    api_url: str,
    database_url: str,
):
    from transformers import AutoImageProcessor, CLIPModel

    root = (tmp_path / "media").resolve()
    root.mkdir()
    names = write_scenes(root)
    bad = {"truncated": "truncated.png", "bomb": "bomb.png", "escape": "escape.png"}
    listing = root / "list.jsonl"
    rows = [{"id": n, "path": n} for n in names] + [{"id": k, "path": v} for k, v in bad.items()]
    listing.write_text("".join(json.dumps(r) + "\n" for r in rows))
    client.settings.input_roots = str(root)
    env = {**env, "SLUICE_INPUT_ROOTS": str(root)}
    detector, clip = demo_models / "shapes-detector", demo_models / "tiny-clip"

    # the SDK: detect-objects, all sizes in one chunk (16 images a chunk)
    detect_job = client.submit_file(
        listing, "detect-objects", model=str(detector), key_column="id", threshold=0.2
    )
    start_worker(SLUICE_INPUT_ROOTS=str(root))
    view = client.wait(detect_job, timeout=300)
    assert (view.counts.ok, view.counts.invalid) == (len(names), 3)
    found = rows_of(client, detect_job)
    assert "corrupt or truncated" in found["truncated"]["error"]
    assert "decompression bomb" in found["bomb"]["error"]
    assert "outside the input roots" in found["escape"]["error"]
    boxes_seen = 0
    for name in names:
        out = found[name]["output"]
        expected = pipeline_detections(detector, root / name, 0.2)
        order = sorted(range(len(expected["scores"])), key=lambda i: -float(expected["scores"][i]))
        assert out["count"] == len(order) == len(out["objects"])
        for obj, i in zip(out["objects"], order, strict=True):
            assert abs(obj["score"] - float(expected["scores"][i])) < 1e-4
            assert obj["label"] == SHAPES[int(expected["labels"][i])]
            assert np.allclose(obj["box"], expected["boxes"][i].tolist(), atol=0.5)
            width, height = out["image_size"]
            x0, y0, x1, y1 = obj["box"]  # the model's own: at an edge, a little past it
            slack = 0.05 * max(width, height)
            assert -slack <= x0 < x1 <= width + slack and -slack <= y0 < y1 <= height + slack
        boxes_seen += out["count"]
    assert boxes_seen >= 3  # a detector that finds nothing would prove little

    # REST: embed-image with inline images and paths under the roots
    # the tenant may read the media root and name the demo models (its grant)
    client.settings.tenant_grants = {
        "acme": TenantGrant(input_roots=[str(root)], model_dirs=[str(demo_models)])
    }
    key = ApiKeys(client.ledger.engine).create("acme").key
    http = httpx.Client(base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {key}"})
    inline = base64.b64encode((root / names[1]).read_bytes()).decode()
    body = {
        "task": "embed-image",
        "model": str(clip),
        "items": [{"key": n, "media": str(root / n)} for n in names]
        + [{"key": "inline", "media": f"data:image/png;base64,{inline}"},
           {"key": "truncated", "media": str(root / "truncated.png")}],
    }  # fmt: skip
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    embed_job = r.json()["job_id"]
    view = client.wait(embed_job, timeout=300)
    assert (view.counts.ok, view.counts.invalid) == (len(names) + 1, 1)
    got = rows_of(client, embed_job)
    model = CLIPModel.from_pretrained(clip).eval()
    processor = AutoImageProcessor.from_pretrained(clip)
    for name in names:
        vector = torch.tensor(got[name]["output"]["embedding"])
        assert got[name]["output"]["dim"] == vector.shape[0] == 32
        assert float(vector @ clip_vector(model, processor, root / name)) >= 0.9999
    assert np.allclose(got["inline"]["output"]["embedding"], got[names[1]]["output"]["embedding"],
                       atol=1e-5)  # fmt: skip
    # and detect-objects over REST, explained: the boxes of the SDK's job, a grid per box
    explained = [names[0], names[3]]
    body = {"task": "detect-objects", "model": str(detector), "threshold": 0.2, "explain": "all",
            "items": [{"key": "inline", "media": f"data:image/png;base64,{inline}"}]
            + [{"key": n, "media": str(root / n)} for n in explained]}  # fmt: skip
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    rest_job = r.json()["job_id"]
    client.wait(rest_job, timeout=120)
    rest_found = rows_of(client, rest_job)
    assert same_objects(rest_found["inline"]["output"]["objects"],
                        found[names[1]]["output"]["objects"])  # fmt: skip
    for key, row in rest_found.items():
        objects = row["output"]["objects"]
        assert same_objects(
            objects, found[names[1] if key == "inline" else key]["output"]["objects"]
        )
        expl = row["explanation"]
        assert expl["status"] == "ok" and expl["method"] == "integrated_gradients"
        boxes = expl["detail"]["boxes"]
        assert [b["label"] for b in boxes] == [o["label"] for o in objects][:5]
        rows_, cols = expl["detail"]["grid"]
        assert all(len(b["attributions"]) == rows_ * cols for b in boxes)

    from ops.report import write_html

    assert write_html(client, rest_job, tmp_path / "d.html", 100) == 3
    page = (tmp_path / "d.html").read_text()
    # per image: the picture with its boxes, and one heatmap per explained box (at most 4)
    shown = sum(1 + min(4, row["output"]["count"]) for row in rest_found.values())
    assert page.count("data:image/png;base64") == shown

    # `sluice enrich`: a table's media column, boxes written back beside each key
    warehouse = warehouse_url(database_url, tmp_path)
    engine = make_engine(warehouse)
    with engine.begin() as conn:
        for table in ("photos_found", "photos_embedded", "photos"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(text("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)"))
        for n, name in enumerate(names):
            conn.execute(
                text("INSERT INTO photos VALUES (:i, :p)"), {"i": n, "p": str(root / name)}
            )
    try:
        run = sluice(
            env, "enrich", "--source", warehouse, "--table", "photos", "--key-column", "id",
            "--media-column", "path", "--task", "detect-objects", "--model", str(detector),
            "--threshold", "0.2", "--dest-table", "photos_found", "--json",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout.splitlines()[-1])["rows_written"] == len(names)
        with engine.connect() as conn:
            written = {r.id: r for r in conn.execute(text("SELECT * FROM photos_found"))}
        assert sorted(written) == list(range(len(names)))
        for n, name in enumerate(names):
            output = written[n].output
            output = json.loads(output) if isinstance(output, str) else output
            assert same_objects(output["objects"], found[name]["output"]["objects"])  # the SDK's
        run = sluice(
            env, "enrich", "--source", warehouse, "--table", "photos", "--key-column", "id",
            "--media-column", "path", "--task", "embed-image", "--model", str(clip),
            "--dest-table", "photos_embedded", "--json",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        with engine.connect() as conn:
            vectors = {
                r.id: r.embedding for r in conn.execute(text("SELECT * FROM photos_embedded"))
            }
        for n, name in enumerate(names):
            vector = vectors[n] if isinstance(vectors[n], list) else json.loads(vectors[n])
            assert np.allclose(vector, got[name]["output"]["embedding"], atol=1e-5)  # REST's
    finally:
        with engine.begin() as conn:
            for table in ("photos_found", "photos_embedded", "photos"):
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
