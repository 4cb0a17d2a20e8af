"""The small models Sluice trains from scratch when a spec names no base model: a tiny ResNet
for images and a tiny Wav2Vec2 for audio, with the processors they need (no downloads).

The training recipes build them for `sluice train` without `base`; the demo models of
`sluice models build` (ops/demo_models.py) are the same architectures, so what a user trains
from scratch behaves like the demo.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SAMPLE_RATE = 16000
DIGIT_SIZE = 32


def labels_config(labels: Iterable[str]) -> dict[str, Any]:
    """The label keys of a transformers config built from scratch (num_labels included:
    there is no base config whose id2label it could contradict)."""
    names = list(labels)
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
    }


def patch_config_json(out: Path, **extra: Any) -> None:
    """Add sluice-specific keys to a saved transformers config.json (and drop `auto_map`: a
    model directory Sluice writes never asks for custom code)."""
    path = out / "config.json"
    config = json.loads(path.read_text())
    config.update(extra)
    config.pop("auto_map", None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def make_image_processor() -> Any:
    """A ViT-style processor that needs no torchvision (the PIL backend in transformers 5)."""
    import transformers

    # transformers 4.x has no *Pil class: there the plain (slow) processor is the PIL one
    processor_class = getattr(transformers, "ViTImageProcessorPil", None)
    if processor_class is None:
        processor_class = transformers.ViTImageProcessor
    return processor_class(
        do_resize=True,
        size={"height": DIGIT_SIZE, "width": DIGIT_SIZE},
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def tiny_resnet() -> Any:
    """A two-stage ResNet for 32x32 images with ten classes (the digits)."""
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[32, 64],
        depths=[1, 1],
        layer_type="basic",
        hidden_act="relu",
        **labels_config(str(d) for d in range(10)),
    )
    return ResNetForImageClassification(config)


def tiny_wav2vec2_kwargs() -> dict[str, Any]:
    """A small conv stack (total stride 80: 200 frames per second) and a 2-layer encoder."""
    return {
        "conv_dim": (32, 32, 32),
        "conv_kernel": (10, 8, 8),
        "conv_stride": (5, 4, 4),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": False,
        "mask_time_prob": 0.0,
        "mask_feature_prob": 0.0,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "final_dropout": 0.0,
        "layerdrop": 0.0,
    }


def make_wav2vec2_feature_extractor() -> Any:
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        sampling_rate=SAMPLE_RATE,
        feature_size=1,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
