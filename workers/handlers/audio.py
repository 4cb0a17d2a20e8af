"""Audio tasks: classify-audio (AutoModelForAudioClassification) and transcribe (CTC models
such as wav2vec2, sequence-to-sequence models such as Whisper), batched."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
)

from schemas.jobs import Explanation, Item
from workers.explain.audio import explain_waveforms
from workers.handlers.base import Handler, run_by_length
from workers.handlers.outputs import top_labels
from workers.media_decoding import limits_from, load_audio
from workers.safe_loading import load_pretrained, load_processor

MAX_NEW_TOKENS = 128
R = TypeVar("R")


@dataclass
class AudioFeatures:
    samples: np.ndarray  # mono float32 at the model's sampling rate

    @property
    def length(self) -> int:
        return int(self.samples.shape[0])


class AudioHandler(Handler):
    extractor: Any

    def setup_device(self, device: str) -> None:
        self.device = torch.device(device)

    @property
    def rate(self) -> int:
        return int(self.extractor.sampling_rate)

    def preprocess(self, item: Item, params: dict[str, Any]) -> AudioFeatures:
        return AudioFeatures(load_audio(item, limits_from(params), self.rate))

    def by_length(self, batch: list[AudioFeatures], run: Callable[[list[int]], list[R]]) -> list[R]:
        """`run` on the positions of each group of clips of similar length (base.PAD_RATIO),
        so one long clip does not pad many short ones; the results in order."""
        return run_by_length([f.length for f in batch], run)

    def model_inputs(self, batch: list[AudioFeatures], **kwargs: Any) -> dict[str, torch.Tensor]:
        encoded = self.extractor(
            [f.samples for f in batch], sampling_rate=self.rate, return_tensors="pt", **kwargs
        )
        return {k: v.to(self.device) for k, v in encoded.items() if isinstance(v, torch.Tensor)}


class AudioClassifyHandler(AudioHandler):
    def setup(self, model_path: str, device: str) -> None:
        self.setup_device(device)
        self.extractor = load_processor(AutoFeatureExtractor, model_path)
        self.model = load_pretrained(AutoModelForAudioClassification, model_path)
        self.model.to(self.device).eval()
        config: Any = self.model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]

    def encode(self, batch: list[AudioFeatures]) -> tuple[torch.Tensor, torch.Tensor | None]:
        inputs = self.model_inputs(batch, padding=True)
        values = inputs.get("input_values", inputs.get("input_features"))
        if values is None:
            raise RuntimeError(f"the feature extractor gave {sorted(inputs)}, no model input")
        return values, inputs.get("attention_mask")

    def forward(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        name = self.model.main_input_name
        kwargs = {name: values} if mask is None else {name: values, "attention_mask": mask}
        return torch.softmax(self.model(**kwargs).logits, dim=-1)

    def predict(self, batch: list[AudioFeatures]) -> list[dict[str, Any]]:
        return self.by_length(batch, lambda idx: self.predict_padded([batch[i] for i in idx]))

    def predict_padded(self, batch: list[AudioFeatures]) -> list[dict[str, Any]]:
        """One forward pass, every clip padded to the longest."""
        with torch.inference_mode():
            probs = self.forward(*self.encode(batch)).float().cpu().tolist()
        return [
            {**top_labels(row, self.labels), "seconds": round(f.length / self.rate, 3)}
            for row, f in zip(probs, batch, strict=True)
        ]

    def confidence(self, output: dict[str, Any]) -> float | None:
        return float(output["score"])

    def explain(
        self,
        batch: list[AudioFeatures],
        outputs: list[dict[str, Any]],
        steps: int,
        internal_batch_size: int,
    ) -> list[Explanation]:
        # Padding costs more here than in predict: every segment ablated is a forward pass.
        return self.by_length(
            batch,
            lambda idx: self.explain_padded(
                [batch[i] for i in idx], [outputs[i] for i in idx], steps, internal_batch_size
            ),
        )

    def explain_padded(
        self,
        batch: list[AudioFeatures],
        outputs: list[dict[str, Any]],
        steps: int,
        internal_batch_size: int,
    ) -> list[Explanation]:
        values, mask = self.encode(batch)
        if values.dim() != 2:
            raise RuntimeError(
                "time-segment explanations need a model that reads the raw "
                "waveform (input_values), not spectrogram features"
            )
        targets = [self.labels.index(o["label"]) for o in outputs]
        return explain_waveforms(
            self.forward,
            values,
            mask,
            [f.length for f in batch],
            self.rate,
            targets,
            [o["label"] for o in outputs],
            steps,
            internal_batch_size,
        )


class TranscribeHandler(AudioHandler):
    def setup(self, model_path: str, device: str) -> None:
        self.setup_device(device)
        archs = (
            json.loads((Path(model_path) / "config.json").read_text()).get("architectures") or []
        )
        self.ctc = any(a.endswith("ForCTC") for a in archs)
        self.processor = load_processor(AutoProcessor, model_path)
        self.extractor = getattr(self.processor, "feature_extractor", self.processor)
        auto = AutoModelForCTC if self.ctc else AutoModelForSpeechSeq2Seq
        self.model = load_pretrained(auto, model_path).to(self.device).eval()
        # Prompt tokens count against the decoder's positions: leave them room.
        positions = getattr(self.model.config, "max_target_positions", None) or 10**6
        self.max_new_tokens = max(1, min(MAX_NEW_TOKENS, positions - 8))

    def predict(self, batch: list[AudioFeatures]) -> list[dict[str, Any]]:
        if not self.ctc:  # Whisper pads every clip to its 30 s window: nothing to group
            return self.predict_padded(batch)
        return self.by_length(batch, lambda idx: self.predict_padded([batch[i] for i in idx]))

    def predict_padded(self, batch: list[AudioFeatures]) -> list[dict[str, Any]]:
        """One model call, every clip padded to the longest."""
        with torch.inference_mode():
            if self.ctc:
                texts = self.ctc_texts(batch)
            else:  # Whisper-style: fixed-size log-mel features, then generation
                ids = self.model.generate(
                    **self.model_inputs(batch),  # type: ignore[operator]
                    max_new_tokens=self.max_new_tokens,
                )
                texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [
            {"text": text.strip(), "seconds": round(f.length / self.rate, 3)}
            for text, f in zip(texts, batch, strict=True)
        ]

    def ctc_texts(self, batch: list[AudioFeatures]) -> list[str]:
        """Greedy CTC decoding of each clip's own frames: the frames of its padding are cut
        off first, or a clip's text would depend on the clips it was batched with."""
        ids = self.model(**self.model_inputs(batch, padding=True)).logits.argmax(dim=-1)
        rows = list(ids)
        own_frames = getattr(self.model, "_get_feat_extract_output_lengths", None)
        if own_frames is not None:  # every wav2vec2-family model has it
            frames = own_frames(torch.tensor([f.length for f in batch])).tolist()
            rows = [row[: int(n)] for row, n in zip(rows, frames, strict=True)]
        texts = self.processor.batch_decode(rows)
        return [str(t) for t in texts]
