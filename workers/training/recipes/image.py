"""classify-image: fine-tune an image classifier (spec.base) with its image processor, or, with
no base, train the tiny demo ResNet from scratch on the spec's labels."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from schemas.media_refs import MediaLimits
from schemas.training import TrainSpec
from workers.media_decoding import load_image
from workers.safe_loading import load_pretrained, load_processor
from workers.training.recipes.base import Prepared
from workers.training.recipes.hf_classifier import (
    HFClassifierRecipe,
    label_config,
    label_ids,
    save_model,
)
from workers.training.recipes.media_rows import decoded_chunks, media_items
from workers.training.recipes.split import holdout_split
from workers.training.scratch_models import make_image_processor, tiny_resnet


def _processor(meta: dict[str, Any]) -> Any:
    from transformers import AutoImageProcessor

    if meta["processor_dir"] is None:
        return make_image_processor()
    return load_processor(AutoImageProcessor, meta["processor_dir"])


class ImageRecipe(HFClassifierRecipe):
    scratch_learning_rate = 3e-3  # what the demo digits ResNet trains with

    def prepare(self, spec: TrainSpec, rows: list[dict[str, Any]], limits: MediaLimits) -> Prepared:
        self.configure(spec)
        labels = label_ids(rows, spec.label_column, spec.labels)
        meta = {"labels": list(spec.labels), "processor_dir": spec.base}
        processor = _processor(meta)

        chunks = decoded_chunks(
            media_items(spec, rows), lambda item: load_image(item, limits), spec.media_column
        )
        # processed a chunk at a time: only the pixel arrays are kept, not the images
        pixels = [
            processor(images=images, return_tensors="np")["pixel_values"] for images in chunks
        ]
        arrays = {
            "pixel_values": np.concatenate(pixels).astype(np.float32, copy=False),
            "labels": labels,
        }
        train, held = holdout_split(labels, spec.holdout_fraction, spec.seed)
        return Prepared(
            train={k: v[train] for k, v in arrays.items()},
            heldout={k: v[held] for k, v in arrays.items()},
            meta=meta,
        )

    def build(self, spec: TrainSpec, meta: dict[str, Any]) -> nn.Module:
        from transformers import AutoModelForImageClassification, ResNetForImageClassification

        # new weights come from the global RNG: the same on every rank
        torch.manual_seed(spec.seed)
        if spec.base:
            model = load_pretrained(
                AutoModelForImageClassification,
                spec.base,
                ignore_mismatched_sizes=True,
                **label_config(spec.labels),
            )
        else:  # the demo architecture, with this spec's labels
            config = tiny_resnet().config
            config.update(label_config(spec.labels))
            model = ResNetForImageClassification(config)
        return self.finish_build(model, spec)

    def save(
        self,
        model: nn.Module,
        out: Path,
        spec: TrainSpec,
        meta: dict[str, Any],
        metrics: dict[str, float],
    ) -> None:
        save_model(model, out, spec, metrics)
        _processor(meta).save_pretrained(out)
