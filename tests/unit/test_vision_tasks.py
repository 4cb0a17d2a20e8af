"""`embed-image`, `embed` on a CLIP directory and `detect-objects`, on the demo models
`sluice models build` makes (tiny-clip, shapes-detector), against transformers run directly;
text-to-image retrieval on held-out synthetic shapes; boxes that follow the image."""

import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from schemas.catalog import load_catalog
from schemas.errors import SluiceError
from schemas.jobs import Item
from schemas.media_refs import MediaLimits
from workers.handlers import handler_for
from workers.training.synth_shapes import all_captions, captioned_shape, scene

CATALOG = load_catalog()


def handler(task: str, model: Path) -> Any:
    h = handler_for(CATALOG.get(task))
    h.setup(str(model), "cpu")
    return h


def saved(root: Path, name: str, image: Any) -> Item:
    image.save(root / name)
    return Item(key=name, path=str(root / name))


def params(root: Path, **extra: Any) -> dict[str, Any]:
    return {"media_limits": asdict(MediaLimits(roots=(str(root),))), **extra}


def test_image_embeddings_equal_clips_image_features_whatever_the_batch(
    demo_models: Path, tmp_path: Path
):
    from PIL import Image
    from transformers import AutoImageProcessor, CLIPModel

    clip = demo_models / "tiny-clip"
    h = handler("embed-image", clip)
    rng = np.random.default_rng(3)
    items = []
    for n, size in enumerate([(32, 32), (90, 40), (40, 120), (300, 200)]):
        image, _ = captioned_shape(64, rng)
        items.append(saved(tmp_path, f"{n}.png", image.resize(size)))
    rows = h.predict([h.preprocess(it, params(tmp_path)) for it in items])
    model = CLIPModel.from_pretrained(clip).eval()
    processor = AutoImageProcessor.from_pretrained(clip)
    for row, it in zip(rows, items, strict=True):
        pixels = processor(images=Image.open(it.path).convert("RGB"), return_tensors="pt")
        with torch.no_grad():
            out = model.get_image_features(pixel_values=pixels["pixel_values"])
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        vector = torch.tensor(row["embedding"])
        assert abs(float(vector.norm()) - 1) < 1e-5 and row["dim"] == 32
        assert float(vector @ F.normalize(out, dim=-1)[0]) >= 0.9999
    assert [r["image_size"] for r in rows] == [[32, 32], [90, 40], [40, 120], [300, 200]]


def test_embed_on_a_clip_directory_uses_its_text_tower(demo_models: Path):
    from transformers import AutoTokenizer, CLIPModel

    clip = demo_models / "tiny-clip"
    h = handler("embed", clip)
    captions = ["a small red circle", "a large yellow triangle", "a large blue square"]
    rows = h.predict([h.preprocess(Item(key=c, text=c), {}) for c in captions])
    model = CLIPModel.from_pretrained(clip).eval()
    ids = AutoTokenizer.from_pretrained(clip)(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(**ids)
    out = F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)
    got = torch.tensor([r["embedding"] for r in rows])
    assert torch.allclose(got, out, atol=1e-5) and got.shape[1] == 32


def test_a_caption_finds_its_image_among_held_out_shapes(demo_models: Path, tmp_path: Path):
    """Images never trained on (another seed), their captions embedded by `embed` and the
    images by `embed-image`: the right caption is the nearest for at least 90% of them."""
    clip = demo_models / "tiny-clip"
    images, texts = handler("embed-image", clip), handler("embed", clip)
    captions = all_captions()
    rng = np.random.default_rng(20261201)
    pairs = [captioned_shape(32, rng) for _ in range(200)]
    items = [saved(tmp_path, f"{n}.png", image) for n, (image, _) in enumerate(pairs)]
    vectors = torch.tensor(
        [r["embedding"] for r in images.predict([images.preprocess(i, params(tmp_path))
                                                 for i in items])]
    )  # fmt: skip
    caption_rows = texts.predict([texts.preprocess(Item(key=c, text=c), {}) for c in captions])
    caption_vectors = torch.tensor([r["embedding"] for r in caption_rows])
    nearest = (vectors @ caption_vectors.T).argmax(-1).tolist()
    right = sum(captions[i] == text for i, (_, text) in zip(nearest, pairs, strict=True))
    assert right / len(pairs) >= 0.9, right


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_boxes_are_inside_the_image_and_follow_it_when_resized(demo_models: Path, tmp_path: Path):
    from PIL import Image

    h = handler("detect-objects", demo_models / "shapes-detector")
    rng = np.random.default_rng(8)
    items, doubled = [], []
    for n in range(12):
        image, _ = scene(128, rng, most=1, extent=(0.3, 0.6))
        big = image.resize((128 + 32 * (n % 3), 128))  # three aspect ratios
        # the half-size image is what the processor makes of the big one (it resizes to a
        # shortest edge of 64, bilinear), so the model sees the same pixels for both
        small = big.resize((big.width // 2, big.height // 2), Image.Resampling.BILINEAR)
        items.append(saved(tmp_path, f"{n}.png", small))
        doubled.append(saved(tmp_path, f"{n}x2.png", big))
    small = h.predict([h.preprocess(i, params(tmp_path, threshold=0.3)) for i in items])
    large = h.predict([h.preprocess(i, params(tmp_path, threshold=0.3)) for i in doubled])
    compared = 0
    for a, b in zip(small, large, strict=True):
        width, height = a["image_size"]
        assert b["image_size"] == [2 * width, 2 * height]
        for obj in a["objects"]:
            # boxes are the model's, as the pipeline gives them: DETR-style heads predict a
            # centre and a size, so a box at the edge may reach a little past it (not clipped)
            x0, y0, x1, y1 = obj["box"]
            slack = 0.05 * max(width, height)
            assert -slack <= x0 < x1 <= width + slack and -slack <= y0 < y1 <= height + slack
        # the same objects and scores, the boxes in each image's own pixels: twice as large
        assert [(o["label"], o["score"]) for o in a["objects"]] == [
            (o["label"], o["score"]) for o in b["objects"]
        ]
        for oa, ob in zip(a["objects"], b["objects"], strict=True):
            assert np.allclose(np.array(ob["box"]), 2 * np.array(oa["box"]), atol=0.01)
            compared += 1
    assert compared >= 6
    fewer = h.predict([h.preprocess(i, params(tmp_path, threshold=0.9)) for i in items])
    assert sum(r["count"] for r in fewer) < sum(r["count"] for r in small)
    assert all(o["score"] > 0.9 for r in fewer for o in r["objects"])


def test_each_box_is_explained_by_its_own_saliency(demo_models: Path, tmp_path: Path):
    h = handler("detect-objects", demo_models / "shapes-detector")
    rng = np.random.default_rng(4)
    items = [saved(tmp_path, f"{n}.png", scene(64, rng, most=1)[0]) for n in range(4)]
    feats = [h.preprocess(i, params(tmp_path, threshold=0.05)) for i in items]
    outputs = h.predict(feats)
    explanations = h.explain(feats, outputs, 32, 64)
    for expl, out in zip(explanations, outputs, strict=True):
        assert expl.status == "ok" and expl.detail is not None
        boxes = expl.detail["boxes"]
        assert len(boxes) == min(8, out["count"]) and out["count"] >= 1
        rows, cols = expl.detail["grid"]
        for box, obj in zip(boxes, out["objects"], strict=False):
            assert (box["label"], box["score"], box["box"]) == (
                obj["label"], obj["score"], obj["box"]
            )  # fmt: skip
            assert len(box["attributions"]) == rows * cols
            # completeness of Integrated Gradients: the grid adds up to the score's rise
            # from the black image, up to the stored convergence delta
            assert abs(box["convergence_delta"]) < 0.2
        assert expl.attributions == boxes[0]["attributions"] and expl.target == boxes[0]["label"]


def test_the_threshold_is_checked_like_any_parameter():
    spec = CATALOG.get("detect-objects")
    assert spec.check_params({}) == {"threshold": 0.5}
    with pytest.raises(SluiceError, match="threshold"):
        spec.check_params({"threshold": 1.5})
