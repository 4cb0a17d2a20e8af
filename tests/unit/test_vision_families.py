"""The image tasks on model families other than the demo's, as tiny random models made here:
DETR (a softmax with a "no object" class, a convolutional backbone) and RT-DETR (sigmoids and a
top-k, one query able to give several labels) against transformers' pipeline, on images of
several sizes and one a phone would have rotated (EXIF); a ViT classifier's checkpoint read by
`embed-image` (no trained pooler); SigLIP's text tower (it pools its last position)."""

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from schemas.catalog import load_catalog
from schemas.jobs import Item
from schemas.media_refs import MediaLimits
from workers.handlers import handler_for
from workers.training.synth_shapes import scene

CATALOG = load_catalog()
LABELS = {0: "cat", 1: "dog", 2: "bird"}
SIZE = {"shortest_edge": 64, "longest_edge": 128}


def tiny_resnet_backbone(stages: int) -> dict[str, Any]:
    from transformers import ResNetConfig

    features = [f"stage{n}" for n in range(5 - stages, 5)]
    return {
        "use_timm_backbone": False,
        "use_pretrained_backbone": False,
        "backbone_config": ResNetConfig(
            embedding_size=8,
            hidden_sizes=[8, 16, 16, 16],
            depths=[1, 1, 1, 1],
            out_features=features,
        ),  # fmt: skip
    }


def detr(path: Path) -> None:
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessorPil

    torch.manual_seed(0)  # the same random model at every run
    config = DetrConfig(
        d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=10,
        id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, **tiny_resnet_backbone(1),
    )  # fmt: skip
    DetrForObjectDetection(config).eval().save_pretrained(path)
    DetrImageProcessorPil(size=SIZE).save_pretrained(path)


def rt_detr(path: Path) -> None:
    from transformers import (
        RTDetrConfig,
        RTDetrForObjectDetection,
        RTDetrImageProcessorPil,
        RTDetrResNetConfig,
    )

    torch.manual_seed(0)
    backbone = RTDetrResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
        out_features=["stage2", "stage3", "stage4"], layer_type="basic",
    )  # fmt: skip
    config = RTDetrConfig(
        backbone_config=backbone, encoder_in_channels=[16, 16, 16], d_model=16,
        encoder_hidden_dim=16, encoder_ffn_dim=16, decoder_ffn_dim=16, decoder_layers=1,
        encoder_layers=1, num_queries=10, decoder_in_channels=[16, 16, 16],
        num_feature_levels=3, use_pretrained_backbone=False, encoder_attention_heads=2,
        decoder_attention_heads=2, decoder_n_points=2, num_denoising=0,
        id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )  # fmt: skip
    RTDetrForObjectDetection(config).eval().save_pretrained(path)
    RTDetrImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Item]]:
    """PNG scenes of four sizes, and a JPEG whose EXIF says to turn it a quarter."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(2)
    items = []
    for n, size in enumerate([(64, 64), (96, 64), (64, 112), (100, 80)]):
        scene(64, rng, most=2)[0].resize(size).save(root / f"{n}.png")
        items.append(Item(key=f"{n}.png", path=str(root / f"{n}.png")))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    scene(64, rng, most=2)[0].resize((120, 70)).save(root / "turned.jpg", exif=exif)
    items.append(Item(key="turned.jpg", path=str(root / "turned.jpg")))
    return root, items


def params(root: Path, **extra: Any) -> dict[str, Any]:
    return {"media_limits": asdict(MediaLimits(roots=(str(root),))), **extra}


@pytest.mark.parametrize(("family", "threshold"), [("detr", 0.2), ("rt-detr", 0.246)])
def test_detections_equal_the_pipeline_and_name_their_own_query(
    family: str, threshold: float, images: tuple[Path, list[Item]], tmp_path: Path
):
    from PIL import Image
    from transformers import pipeline

    root, items = images
    (detr if family == "detr" else rt_detr)(tmp_path / family)
    h = handler_for(CATALOG.get("detect-objects"))
    h.setup(str(tmp_path / family), "cpu")
    features = [h.preprocess(i, params(root, threshold=threshold)) for i in items]
    outputs = h.predict(features)  # all five in one call: grouped by the shape they take
    detector = pipeline("object-detection", model=str(tmp_path / family), device="cpu")
    found = 0
    for it, out, feat in zip(items, outputs, features, strict=True):
        alone = detector(Image.open(it.path), threshold=threshold)  # it turns by EXIF too
        alone.sort(key=lambda o: -o["score"])
        assert [o["label"] for o in out["objects"]] == [o["label"] for o in alone], it.key
        for obj, ref in zip(out["objects"], alone, strict=True):
            assert abs(obj["score"] - ref["score"]) < 1e-4
            # the pipeline rounds its boxes down to integers
            corners = [ref["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]
            assert np.allclose(np.floor(np.array(obj["box"]) + 1e-3), corners, atol=1.0)
        if it.key == "turned.jpg":
            assert out["image_size"] == [70, 120]  # upright, as a person sees it
        # each object's query, as explanations target it: its score and its box are that
        # query's (RT-DETR may give one query several labels)
        with torch.no_grad():
            raw = h.model(pixel_values=feat.pixels.unsqueeze(0))
        scores = h.query_scores(raw.logits)[0]
        for (query, label), obj in zip(feat.queries or [], out["objects"], strict=True):
            assert h.labels[label] == obj["label"]
            assert abs(float(scores[query, label]) - obj["score"]) < 1e-5
            cx, cy, w, hh = raw.pred_boxes[0, query].tolist()
            width, height = out["image_size"]
            box = [(cx - w / 2) * width, (cy - hh / 2) * height,
                   (cx + w / 2) * width, (cy + hh / 2) * height]  # fmt: skip
            assert np.allclose(box, obj["box"], atol=0.01)
        found += out["count"]
    assert found >= 5


def test_a_vit_classifiers_checkpoint_embeds_the_same_at_every_load(tmp_path: Path):
    """Its pooler is not in the checkpoint (a classifier has none): left out, not random."""
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=3)  # fmt: skip
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "red.png")
    item = Item(key="red", path=str(tmp_path / "red.png"))
    vectors = []
    for seed in (1, 2):  # workers start from different random states
        torch.manual_seed(seed)
        h = handler_for(CATALOG.get("embed-image"))
        h.setup(str(tmp_path / "vit"), "cpu")
        vectors.append(h.predict([h.preprocess(item, params(tmp_path))])[0]["embedding"])
    assert vectors[0] == vectors[1] and len(vectors[0]) == 32


def test_siglip_texts_embed_the_same_whatever_their_batch(demo_models: Path, tmp_path: Path):
    from transformers import AutoTokenizer, SiglipConfig, SiglipModel

    tokenizer = AutoTokenizer.from_pretrained(demo_models / "tiny-clip")
    torch.manual_seed(0)
    tower = {"hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2}  # fmt: skip
    config = SiglipConfig(
        text_config={**tower, "vocab_size": len(tokenizer), "max_position_embeddings": 16},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
    )
    SiglipModel(config).save_pretrained(tmp_path / "siglip")
    tokenizer.save_pretrained(tmp_path / "siglip")
    h = handler_for(CATALOG.get("embed"))
    h.setup(str(tmp_path / "siglip"), "cpu")
    short = Item(key="a", text="a red circle")
    longer = Item(key="b", text="a large yellow triangle beside a small blue square")
    alone = h.predict([h.preprocess(short, {})])[0]["embedding"]
    beside = h.predict([h.preprocess(short, {}), h.preprocess(longer, {})])[0]["embedding"]
    assert np.allclose(alone, beside, atol=1e-6)
