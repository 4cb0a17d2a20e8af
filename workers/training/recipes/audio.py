"""classify-audio: fine-tune an audio classifier (spec.base) with its feature extractor, or,
with no base, train the tiny demo wav2vec2 classifier from scratch on the spec's labels."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from schemas.media_refs import MediaLimits
from schemas.training import TrainSpec
from workers.media_decoding import load_audio
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
from workers.training.scratch_models import make_wav2vec2_feature_extractor, tiny_wav2vec2_kwargs


def _extractor(meta: dict[str, Any]) -> Any:
    from transformers import AutoFeatureExtractor

    if meta["extractor_dir"] is None:
        return make_wav2vec2_feature_extractor()
    return load_processor(AutoFeatureExtractor, meta["extractor_dir"])


class AudioRecipe(HFClassifierRecipe):
    scratch_learning_rate = 2e-3  # what the demo sounds classifier trains with

    def prepare(self, spec: TrainSpec, rows: list[dict[str, Any]], limits: MediaLimits) -> Prepared:
        self.configure(spec)
        labels = label_ids(rows, spec.label_column, spec.labels)
        meta = {"labels": list(spec.labels), "extractor_dir": spec.base}
        extractor = _extractor(meta)
        rate = int(extractor.sampling_rate)
        chunks = decoded_chunks(
            media_items(spec, rows), lambda item: load_audio(item, limits, rate), spec.media_column
        )
        clips = [clip for chunk in chunks for clip in chunk]
        # the handler's call: padded (with the attention mask where the extractor gives one)
        # to the longest clip of the whole set, so every array has the row first
        encoded = extractor(clips, sampling_rate=rate, padding=True, return_tensors="np")
        arrays = {
            key: np.asarray(value)
            for key, value in encoded.items()
            if isinstance(value, np.ndarray) and len(value) == len(clips)
        }
        arrays["labels"] = labels
        train, held = holdout_split(labels, spec.holdout_fraction, spec.seed)
        return Prepared(
            train={k: v[train] for k, v in arrays.items()},
            heldout={k: v[held] for k, v in arrays.items()},
            meta=meta,
        )

    def build(self, spec: TrainSpec, meta: dict[str, Any]) -> nn.Module:
        from transformers import (
            AutoModelForAudioClassification,
            Wav2Vec2Config,
            Wav2Vec2ForSequenceClassification,
        )

        # new weights come from the global RNG: the same on every rank
        torch.manual_seed(spec.seed)
        if spec.base:
            model = load_pretrained(
                AutoModelForAudioClassification,
                spec.base,
                ignore_mismatched_sizes=True,
                **label_config(spec.labels),
            )
        else:  # the demo architecture, with this spec's labels
            config = Wav2Vec2Config(
                **tiny_wav2vec2_kwargs(),
                use_weighted_layer_sum=False,
                classifier_proj_size=32,
                **label_config(spec.labels),
            )
            model = Wav2Vec2ForSequenceClassification(config)
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
        _extractor(meta).save_pretrained(out)
