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
from workers.explain.audio import METHOD as EXPLAIN_METHOD
from workers.explain.audio import explain_waveforms
from workers.explain.tensors import failed_explanation
from workers.handlers.audio_windows import (
    CLASSIFY_WINDOW_S,
    CTC_STRIDE_S,
    CTC_WINDOW_S,
    SEQ2SEQ_STRIDE_S,
    Window,
    join_overlapping,
    kept_frames,
    strided,
    strided_by_hop,
    tiled,
)
from workers.handlers.base import WINDOWS_PER_PASS, Handler, run_by_length
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

    def windowed(
        self, batch: list[AudioFeatures], plan: Callable[[int], list[Window]]
    ) -> tuple[list[list[Window]], list[AudioFeatures]]:
        """Each clip's windows (`plan` of its length in samples), and every window's samples
        as a clip of its own, all clips' in order."""
        windows = [plan(f.length) for f in batch]
        parts = [
            AudioFeatures(f.samples[w.start : w.end])
            for f, ws in zip(batch, windows, strict=True)
            for w in ws
        ]
        return windows, parts

    def in_passes(
        self,
        parts: list[AudioFeatures],
        run: Callable[[list[AudioFeatures]], list[R]],
        grouped: bool = True,
    ) -> list[R]:
        """`run` over windows, at most WINDOWS_PER_PASS at a time (a chunk of long clips
        makes many), those of similar length together unless not `grouped`."""
        out: list[R] = []
        for at in range(0, len(parts), WINDOWS_PER_PASS):
            part = parts[at : at + WINDOWS_PER_PASS]
            if not grouped:
                out += run(part)
                continue

            def group(idx: list[int], part: list[AudioFeatures] = part) -> list[R]:
                return run([part[i] for i in idx])

            out += self.by_length(part, group)
        return out

    @staticmethod
    def per_clip(per_window: list[R], windows: list[list[Window]]) -> list[list[R]]:
        """Results of all clips' windows, in order, as one list per clip."""
        out, at = [], 0
        for ws in windows:
            out.append(per_window[at : at + len(ws)])
            at += len(ws)
        return out

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

    def plan(self, samples: int) -> list[Window]:
        return tiled(samples, int(CLASSIFY_WINDOW_S * self.rate))

    def predict(self, batch: list[AudioFeatures]) -> list[dict[str, Any]]:
        """A clip longer than CLASSIFY_WINDOW_S: the mean of its windows' probabilities."""
        windows, parts = self.windowed(batch, self.plan)
        probs = self.per_clip(self.in_passes(parts, self.probabilities), windows)
        out = []
        for f, ws, mine in zip(batch, windows, probs, strict=True):
            mean = torch.stack(mine).mean(dim=0).tolist()
            out.append({
                **top_labels(mean, self.labels),
                "seconds": round(f.length / self.rate, 3),
                "windows": [w.seconds(self.rate) for w in ws],
            })  # fmt: skip
        return out

    def probabilities(self, batch: list[AudioFeatures]) -> list[torch.Tensor]:
        """One forward pass, every clip padded to the longest."""
        with torch.inference_mode():
            return list(self.forward(*self.encode(batch)).float().cpu())

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
        # A clip read in windows is explained alone, through the same windows.
        window = int(CLASSIFY_WINDOW_S * self.rate)
        results: list[Explanation | None] = [None] * len(batch)
        short = [i for i, f in enumerate(batch) if f.length <= window]
        explained = self.by_length(
            [batch[i] for i in short],
            lambda idx: self.explain_padded(
                [batch[short[i]] for i in idx],
                [outputs[short[i]] for i in idx],
                steps,
                internal_batch_size,
            ),
        )
        for i, e in zip(short, explained, strict=True):
            results[i] = e
        for i, f in enumerate(batch):
            if f.length > window:
                try:
                    results[i] = self.explain_windowed(f, outputs[i], internal_batch_size)
                except Exception as exc:  # that clip's failure, not the batch's
                    results[i] = failed_explanation(EXPLAIN_METHOD, exc, outputs[i].get("label"))
        return [e for e in results if e is not None]

    def explain_windowed(
        self, clip: AudioFeatures, output: dict[str, Any], internal_batch_size: int
    ) -> Explanation:
        """Segments of a long clip ablated, each time its windows read as predict reads them
        (each normalised by the feature extractor, their probabilities' mean)."""
        windows = self.plan(clip.length)

        def forward(samples: torch.Tensor, _mask: torch.Tensor | None = None) -> torch.Tensor:
            rows = samples.detach().cpu().numpy()
            per_window = [
                self.forward(*self.encode([AudioFeatures(row[w.start : w.end]) for row in rows]))
                for w in windows
            ]
            return torch.stack(per_window).mean(dim=0)

        target = self.labels.index(output["label"])
        values = torch.from_numpy(clip.samples).unsqueeze(0)
        (explanation,) = explain_waveforms(
            forward, values, None, [clip.length], self.rate, [target], [output["label"]], 1,
            internal_batch_size,
        )  # fmt: skip
        return explanation

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
        # samples per output frame of a CTC model (wav2vec2 and kin: the conv strides' product)
        self.hop = int(getattr(self.model.config, "inputs_to_logits_ratio", 0) or 320)
        # Prompt tokens count against the decoder's positions: leave them room.
        positions = getattr(self.model.config, "max_target_positions", None) or 10**6
        self.max_new_tokens = max(1, min(MAX_NEW_TOKENS, positions - 8))

    def plan(self, samples: int) -> list[Window]:
        if self.ctc:
            window, stride = int(CTC_WINDOW_S * self.rate), int(CTC_STRIDE_S * self.rate)
            return strided_by_hop(samples, window, stride, self.hop)
        # Whisper reads 30 s (its feature extractor's n_samples) and pads anything shorter
        window = int(getattr(self.extractor, "n_samples", 30 * self.rate))
        return strided(samples, window, int(SEQ2SEQ_STRIDE_S * self.rate))

    def predict(self, batch: list[AudioFeatures]) -> list[dict[str, Any]]:
        """Each clip transcribed whole, in windows when longer than one (audio_windows)."""
        windows, parts = self.windowed(batch, self.plan)
        with torch.inference_mode():
            # Whisper pads every window to its 30 s: nothing to group by length
            run = self.ctc_frames if self.ctc else self.generated
            per_window = self.in_passes(parts, run, grouped=self.ctc)
        out = []
        for f, ws, mine in zip(batch, windows, self.per_clip(per_window, windows), strict=True):
            out.append({
                "text": self.joined_text(ws, mine).strip(),
                "seconds": round(f.length / self.rate, 3),
                "windows": [w.seconds(self.rate) for w in ws],
            })  # fmt: skip
        return out

    def joined_text(self, windows: list[Window], ids: list[list[int]]) -> str:
        """CTC: the kept frames of every window, decoded once (a token cut at a window's
        edge is whole again); seq2seq: the windows' tokens joined where they overlap."""
        if self.ctc:
            frames = [
                i
                for w, row in zip(windows, ids, strict=True)
                for i in row[kept_frames(w, len(row), self.hop)]
            ]
            return str(self.processor.batch_decode([frames])[0])
        return str(
            self.processor.batch_decode([join_overlapping(ids)], skip_special_tokens=True)[0]
        )

    def generated(self, batch: list[AudioFeatures]) -> list[list[int]]:
        """Whisper-style: fixed-size log-mel features, then generation; the text's token ids
        (special ones dropped, so overlapping windows compare only text)."""
        ids = self.model.generate(
            **self.model_inputs(batch),  # type: ignore[operator]
            max_new_tokens=self.max_new_tokens,
        )
        special = set(self.processor.tokenizer.all_special_ids)
        return [[int(i) for i in row if int(i) not in special] for row in ids]

    def ctc_frames(self, batch: list[AudioFeatures]) -> list[list[int]]:
        """Greedy CTC ids of each clip's own frames: the frames of its padding are cut off
        first, or a clip's text would depend on the clips it was batched with."""
        ids = self.model(**self.model_inputs(batch, padding=True)).logits.argmax(dim=-1)
        rows = [row.tolist() for row in ids]
        own_frames = getattr(self.model, "_get_feat_extract_output_lengths", None)
        if own_frames is not None:  # every wav2vec2-family model has it
            frames = own_frames(torch.tensor([f.length for f in batch])).tolist()
        else:  # about one frame a hop
            frames = [-(-f.length // self.hop) for f in batch]
        return [row[: int(n)] for row, n in zip(rows, frames, strict=True)]
