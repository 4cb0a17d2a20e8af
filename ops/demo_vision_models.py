"""Builders of the demo vision models: `tiny-clip` (a CLIP-shaped image-text model trained on
synthetic captioned shapes, so that retrieval can be checked) and `shapes-detector` (a YOLOS
detector trained on synthetic scenes of shapes). Both are real transformers classes saved with
their processors; `sluice models build` makes them (ops/demo_model_cache.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ops.demo_models import Metrics, isolated, seed_all
from workers.training.scratch_models import labels_config, patch_config_json
from workers.training.synth_shapes import SHAPES, all_captions, captioned_shape, scene
from workers.vision_towers import image_vectors, text_vectors

CLIP_SIDE = 32  # the CLIP model's input: images are resized and centre-cropped to this
DETECTOR_SIDE = 64  # the detector's shortest edge (its processor resizes to it)
SPECIALS = ("<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>")


def caption_tokenizer(captions: list[str]) -> Any:
    """A word-level fast tokenizer over the captions' words, wrapping a text in start and end
    tokens as CLIP's does (the text tower pools at the end token)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for c in captions for w in c.lower().split()})
    vocab = {token: i for i, token in enumerate([*SPECIALS, *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    start, end = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    core.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", start), ("<|endoftext|>", end)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        model_max_length=16,
    )


def clip_processor() -> Any:
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": CLIP_SIDE},
        crop_size={"height": CLIP_SIDE, "width": CLIP_SIDE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def tiny_clip(tokenizer: Any) -> Any:
    from transformers import CLIPConfig, CLIPModel

    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,  # not 2: pooled at the end token itself
    }
    vision = {
        "image_size": CLIP_SIDE,
        "patch_size": 8,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))


def retrieval_accuracy(model: Any, pixels: torch.Tensor, ids: Any, truth: list[int]) -> float:
    """How often an image's nearest caption (by cosine) is its own."""
    with torch.no_grad():
        images = image_vectors(model, pixels)
        texts = text_vectors(model, ids["input_ids"], ids["attention_mask"])
    nearest = (images @ texts.T).argmax(-1)
    return float((nearest == torch.tensor(truth)).float().mean())


@isolated
def build_tiny_clip(out: Path, *, seed: int = 0, steps: int = 2500) -> Metrics:
    """A CLIP trained on 32x32 images of one coloured shape and their captions: each step
    contrasts a batch of images with all 24 captions (every caption a negative but its own)."""
    started = time.perf_counter()
    seed_all(seed)
    rng = np.random.default_rng(seed)
    captions = all_captions()
    tokenizer = caption_tokenizer(captions)
    processor = clip_processor()
    pairs = [captioned_shape(CLIP_SIDE, rng) for _ in range(2400)]
    pixels = processor(images=[image for image, _ in pairs], return_tensors="pt")["pixel_values"]
    truth = torch.tensor([captions.index(text) for _, text in pairs])
    ids = tokenizer(captions, padding=True, return_tensors="pt")
    held = 400
    model = tiny_clip(tokenizer)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = torch.randint(held, len(pairs), (64,), generator=gen)
        image = image_vectors(model, pixels[rows])
        text = text_vectors(model, ids["input_ids"], ids["attention_mask"])
        logits = model.logit_scale.exp() * image @ text.T
        optimiser.zero_grad()
        F.cross_entropy(logits, truth[rows]).backward()
        optimiser.step()
    model.eval()
    metrics = {
        "heldout_retrieval_accuracy": retrieval_accuracy(
            model, pixels[:held], ids, truth[:held].tolist()
        ),
        "captions": len(captions),
        "n_train": len(pairs) - held,
        "n_heldout": held,
    }
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    patch_config_json(out, sluice_metrics=metrics, trained_on="synthetic captioned shapes")
    return {**metrics, "seconds": time.perf_counter() - started}


def detector_processor() -> Any:
    from transformers import YolosImageProcessorPil

    return YolosImageProcessorPil(
        size={"shortest_edge": DETECTOR_SIDE, "longest_edge": 4 * DETECTOR_SIDE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def tiny_yolos() -> Any:
    from transformers import YolosConfig, YolosForObjectDetection

    config = YolosConfig(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=[DETECTOR_SIDE, DETECTOR_SIDE],
        patch_size=8,
        num_detection_tokens=3,
        use_mid_position_embeddings=False,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **labels_config(SHAPES),
    )
    return YolosForObjectDetection(config)


def _box_target(shapes: list[Any]) -> dict[str, torch.Tensor]:
    """DETR-style targets: class ids and (centre x, centre y, width, height) over the side."""
    boxes = [
        [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
        for x0, y0, x1, y1 in (s.box for s in shapes)
    ]
    return {
        "class_labels": torch.tensor([SHAPES.index(s.shape) for s in shapes]),
        "boxes": torch.tensor(boxes, dtype=torch.float32) / DETECTOR_SIDE,
    }


def box_iou(a: list[float], b: tuple[int, ...] | list[float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def detection_recall(model: Any, processor: Any, scenes: list[Any], threshold: float) -> float:
    """The share of shapes found: a box of the right label overlapping it by IoU > 0.5."""
    pixels = processor(images=[image for image, _ in scenes], return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=pixels["pixel_values"])
    sizes = [(DETECTOR_SIDE, DETECTOR_SIDE)] * len(scenes)
    found = processor.post_process_object_detection(outputs, threshold, target_sizes=sizes)
    hits = total = 0
    for result, (_, shapes) in zip(found, scenes, strict=True):
        for shape in shapes:
            total += 1
            hits += any(
                int(label) == SHAPES.index(shape.shape) and box_iou(box.tolist(), shape.box) > 0.5
                for label, box in zip(result["labels"], result["boxes"], strict=True)
            )
    return hits / total


@isolated
def build_shapes_detector(out: Path, *, seed: int = 0, steps: int = 2000) -> Metrics:
    """A YOLOS detector trained on 64x64 scenes of one shape (circle, square, triangle) with
    the DETR loss (Hungarian matching of its 3 detection tokens to the shapes). DETR-style
    training needs far longer than a demo build to be sharp: its held-out recall is in its
    metrics, and the README says what it is."""
    started = time.perf_counter()
    seed_all(seed)
    rng = np.random.default_rng(seed)
    processor = detector_processor()
    held = 200
    scenes = [scene(DETECTOR_SIDE, rng, most=1, extent=(0.3, 0.6)) for _ in range(1500 + held)]
    pixels = processor(images=[image for image, _ in scenes], return_tensors="pt")["pixel_values"]
    targets = [_box_target(shapes) for _, shapes in scenes]
    model = tiny_yolos()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = torch.randint(held, len(scenes), (32,), generator=gen).tolist()
        loss = model(pixel_values=pixels[rows], labels=[targets[i] for i in rows]).loss
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
    model.eval()
    metrics = {
        "heldout_recall_at_iou_0_5": detection_recall(model, processor, scenes[:held], 0.5),
        "n_train": len(scenes) - held,
        "n_heldout": held,
        "steps": steps,
    }
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    patch_config_json(out, sluice_metrics=metrics, trained_on="synthetic scenes of shapes")
    return {**metrics, "seconds": time.perf_counter() - started}
