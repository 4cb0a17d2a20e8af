"""Text tasks: embed, zero-shot-text, classify-text, on any Hugging Face encoder directory."""

import copy
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from schemas.errors import InvalidInput
from schemas.jobs import Explanation, Item, text_problem
from schemas.text_params import DEFAULT_WINDOW_STRIDE, TRUNCATE
from workers.explain.text import TokenModel, explain_tokens
from workers.handlers.base import WINDOWS_PER_PASS, Handler, PerThread, run_by_length
from workers.handlers.outputs import top_labels
from workers.handlers.text_windows import (
    TextWindow,
    WindowedText,
    cut,
    pooled_probabilities,
    window_weights,
)
from workers.runtime.devices import torch_dtype
from workers.safe_loading import load_pretrained
from workers.vision_towers import has_text_tower, text_vectors

# Cosine similarities lie in [-1, 1]; a softmax over them needs a temperature to be decisive.
ZERO_SHOT_SCALE = 20.0
LABEL_BATCH = 32  # label prompts encoded at once
LABEL_SETS_KEPT = 256  # label sets whose vectors an actor keeps


@dataclass
class TextFeatures:
    text: str
    read: WindowedText  # the text's window(s), as the job's long_text policy reads it
    pooling: str = "mean"  # how a windowed text's class probabilities pool (text_params)
    labels: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    # set by predict, read by explain: each window's class probabilities (windows x classes)
    window_probs: torch.Tensor | None = None

    @property
    def windows(self) -> list[TextWindow]:
        return self.read.windows


class TextHandler(Handler):
    max_chars = 1_000_000  # the producer's cap is the user-facing one
    # Tokenising shares nothing with predict but the tokenizer, and each thread has its own.
    preprocess_off_model_thread = True

    def setup(self, model_path: str, device: str) -> None:
        self.device = torch.device(device)
        # read from disk once: every thread's copy matches the model loaded beside it
        template = load_pretrained(AutoTokenizer, model_path)
        self.tokenizers = PerThread(lambda: copy.deepcopy(template))
        dtype = torch_dtype(self.inference_dtype)
        self.model = self.load_model(model_path).to(self.device, dtype=dtype).eval()
        # an image-text model (CLIP, SigLIP): its text tower, so texts land beside its images
        self.text_tower = has_text_tower(self.model)
        self.max_length = _max_length(Path(model_path), self.tokenizer, self.model)
        # SigLIP pools its last position, so it was trained (and must run) padded to its full
        # length: padded to the batch's longest, a text's vector would depend on its batch
        siglip = str(getattr(self.model.config, "model_type", "")).startswith("siglip")
        self.full_padding: dict[str, Any] = (
            {"padding": "max_length", "max_length": self.max_length} if siglip else {}
        )

    @property
    def tokenizer(self) -> Any:
        """This thread's tokenizer (preprocess may run beside predict: base.PerThread)."""
        return self.tokenizers.get()

    def size(self, features: TextFeatures) -> int:
        return sum(len(w.input_ids) for w in features.windows)

    def load_model(self, path: str) -> torch.nn.Module:
        return load_pretrained(AutoModel, path)

    def preprocess(self, item: Item, params: dict[str, Any]) -> TextFeatures:
        problem = text_problem(item.text, "text", self.max_chars)
        if problem:
            raise InvalidInput(problem)
        policy = str(params.get("long_text", TRUNCATE))
        stride = int(params.get("stride", DEFAULT_WINDOW_STRIDE))
        read = cut(self.tokenizer, item.text, self.max_length, policy, stride)
        return TextFeatures(item.text, read, str(params.get("window_pooling", "mean")))

    def token_model(self) -> TokenModel:
        """What the token explainer needs of this model."""
        return TokenModel(self.tokenizer, self.pad, self.embedding_layer())

    def embedding_layer(self) -> torch.nn.Module:
        """Where token attributions are taken: the input word embeddings."""
        # an image-text model's own get_input_embeddings is not implemented: its text tower's
        model: Any = self.model.text_model if self.text_tower else self.model
        layer = model.get_input_embeddings()
        assert isinstance(layer, torch.nn.Module)
        return layer

    def pad(self, batch: list[TextWindow]) -> tuple[torch.Tensor, torch.Tensor]:
        padded = self.tokenizer.pad(
            {"input_ids": [w.input_ids for w in batch]}, return_tensors="pt", **self.full_padding
        )
        return padded["input_ids"].to(self.device), padded["attention_mask"].to(self.device)

    def sentence_embeddings(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean pooling over real tokens, L2-normalised (the sentence-transformers recipe);
        an image-text model's (CLIP's) text tower, so texts land beside its images."""
        if self.text_tower:
            return text_vectors(self.model, ids, mask)
        # pooled in float32 whatever the model ran in (devices.py: outputs are float32)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

    def encode(self, windows: list[TextWindow]) -> torch.Tensor:
        """Sentence embeddings of windows, those of similar length padded together
        (base.PAD_RATIO)."""
        with torch.inference_mode():
            rows = run_by_length(
                [len(w.input_ids) for w in windows],
                lambda idx: list(self.sentence_embeddings(*self.pad([windows[i] for i in idx]))),
            )
            return torch.stack(rows)

    def run_windows(
        self, batch: list[TextFeatures], run: Callable[[list[TextWindow]], torch.Tensor]
    ) -> list[torch.Tensor]:
        """`run` over every window of the batch at once (WINDOWS_PER_PASS at most a call:
        a chunk of long texts makes many); its rows back as one tensor per text."""
        windows = [w for f in batch for w in f.windows]
        rows = torch.cat(
            [run(windows[at : at + WINDOWS_PER_PASS])
             for at in range(0, len(windows), WINDOWS_PER_PASS)]
        )  # fmt: skip
        counts = [len(f.windows) for f in batch]
        return list(torch.split(rows, counts))

    @staticmethod
    def known_probabilities(
        batch: list[TextFeatures], compute: Callable[[list[TextFeatures]], list[torch.Tensor]]
    ) -> list[torch.Tensor]:
        """The windows' probabilities predict left on the features (computed here for
        features explained without a prediction)."""
        if any(f.window_probs is None for f in batch):
            return compute(batch)
        return [f.window_probs for f in batch if f.window_probs is not None]

    def explain_windows(
        self,
        batch: list[TextFeatures],
        window_probs: list[torch.Tensor],
        targets: list[int],
        forward: Callable[..., torch.Tensor],
        steps: int,
        internal_batch_size: int,
        names: list[str],
    ) -> list[Explanation]:
        """Token attributions of each text over the windows it was read in, weighted as
        its windows' probabilities pooled into its own (text_windows.window_weights)."""
        weights = [
            window_weights(rows, target, f.pooling)
            for f, rows, target in zip(batch, window_probs, targets, strict=True)
        ]
        return explain_tokens(
            self.token_model(),
            forward,
            [f.windows for f in batch],
            weights,
            targets,
            steps,
            internal_batch_size,
            names,
        )


class EmbedHandler(TextHandler):
    def predict(self, batch: list[TextFeatures]) -> list[dict[str, Any]]:
        # a text read in windows: their mean, L2-normalised again (every row's unit length)
        per_text = self.run_windows(batch, self.encode)
        vectors = torch.stack([F.normalize(rows.mean(dim=0), p=2, dim=0) for rows in per_text])
        rounded = vectors.float().cpu().numpy().round(7)
        return [
            {"embedding": v.tolist(), "dim": int(v.shape[0]), **f.read.row_fields()}
            for v, f in zip(rounded, batch, strict=True)
        ]


class ZeroShotHandler(TextHandler):
    def setup(self, model_path: str, device: str) -> None:
        super().setup(model_path, device)
        # label sets seen lately, least recently used out: many jobs with their own label
        # sets must not grow an actor's memory without bound
        self._label_vectors: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self.label_sets_kept = LABEL_SETS_KEPT

    def preprocess(self, item: Item, params: dict[str, Any]) -> TextFeatures:
        features = super().preprocess(item, params)
        features.labels = tuple(params["labels"])
        described = params.get("label_descriptions") or {}
        features.prompts = tuple(described.get(label, label) for label in features.labels)
        return features

    def label_vectors(self, prompts: tuple[str, ...]) -> torch.Tensor:
        if prompts in self._label_vectors:
            self._label_vectors.move_to_end(prompts)
            return self._label_vectors[prompts]
        feats = [
            TextWindow(
                p,
                self.tokenizer(p, truncation=True, max_length=self.max_length)["input_ids"],
                None,
                None,
            )
            for p in prompts
        ]
        # In batches (a job may give many labels); a clone leaves inference mode, so
        # explanations can backpropagate through the vectors.
        vectors = torch.cat([self.encode(feats[i : i + LABEL_BATCH])
                             for i in range(0, len(feats), LABEL_BATCH)]).clone()  # fmt: skip
        self._label_vectors[prompts] = vectors
        while len(self._label_vectors) > self.label_sets_kept:
            self._label_vectors.popitem(last=False)
        return vectors

    def probabilities(self, embeddings: torch.Tensor, prompts: tuple[str, ...]) -> torch.Tensor:
        return torch.softmax(embeddings @ self.label_vectors(prompts).T * ZERO_SHOT_SCALE, dim=-1)

    def window_probabilities(self, batch: list[TextFeatures]) -> list[torch.Tensor]:
        per_text = self.run_windows(batch, self.encode)
        return [
            self.probabilities(rows, f.prompts) for f, rows in zip(batch, per_text, strict=True)
        ]

    def predict(self, batch: list[TextFeatures]) -> list[dict[str, Any]]:
        return pooled_outputs(batch, self.window_probabilities(batch), lambda f: list(f.labels))

    def confidence(self, output: dict[str, Any]) -> float | None:
        return float(output["score"])

    def explain(
        self,
        batch: list[TextFeatures],
        outputs: list[dict[str, Any]],
        steps: int,
        internal_batch_size: int,
    ) -> list[Explanation]:
        results: list[Explanation | None] = [None] * len(batch)
        for prompts in {f.prompts for f in batch}:  # one attribution pass per label set
            idx = [i for i, f in enumerate(batch) if f.prompts == prompts]
            group = [batch[i] for i in idx]

            def forward(
                ids: torch.Tensor, mask: torch.Tensor, _prompts: tuple[str, ...] = prompts
            ) -> torch.Tensor:
                return self.probabilities(self.sentence_embeddings(ids, mask), _prompts)

            targets = [group[0].labels.index(outputs[i]["label"]) for i in idx]
            expl = self.explain_windows(
                group,
                self.known_probabilities(group, self.window_probabilities),
                targets,
                forward,
                steps,
                internal_batch_size,
                [outputs[i]["label"] for i in idx],
            )
            for i, e in zip(idx, expl, strict=True):
                results[i] = e
        return [e for e in results if e is not None]


class ClassifyHandler(TextHandler):
    def load_model(self, path: str) -> torch.nn.Module:
        return load_pretrained(AutoModelForSequenceClassification, path)

    def setup(self, model_path: str, device: str) -> None:
        super().setup(model_path, device)
        config: Any = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        return torch.softmax(logits.float(), dim=-1)

    def classify(self, windows: list[TextWindow]) -> torch.Tensor:
        """Class probabilities of windows, those of similar length padded together."""
        with torch.inference_mode():
            rows = run_by_length(
                [len(w.input_ids) for w in windows],
                lambda idx: list(self.forward(*self.pad([windows[i] for i in idx])).float()),
            )
            return torch.stack(rows)

    def window_probabilities(self, batch: list[TextFeatures]) -> list[torch.Tensor]:
        return self.run_windows(batch, self.classify)

    def predict(self, batch: list[TextFeatures]) -> list[dict[str, Any]]:
        return pooled_outputs(batch, self.window_probabilities(batch), lambda _f: self.labels)

    def confidence(self, output: dict[str, Any]) -> float | None:
        return float(output["score"])

    def explain(
        self,
        batch: list[TextFeatures],
        outputs: list[dict[str, Any]],
        steps: int,
        internal_batch_size: int,
    ) -> list[Explanation]:
        targets = [self.labels.index(o["label"]) for o in outputs]
        return self.explain_windows(
            batch,
            self.known_probabilities(batch, self.window_probabilities),
            targets,
            self.forward,
            steps,
            internal_batch_size,
            [o["label"] for o in outputs],
        )


def pooled_outputs(
    batch: list[TextFeatures],
    window_probs: list[torch.Tensor],
    labels_of: Callable[[TextFeatures], list[str]],
) -> list[dict[str, Any]]:
    """Each text's output: its windows' probabilities pooled (text_windows), its labels,
    and what it says of the text's length. The windows' probabilities stay on the
    features for the explanation (which window decided, under max)."""
    outputs = []
    for f, rows in zip(batch, window_probs, strict=True):
        f.window_probs = rows
        probs = pooled_probabilities(rows, f.pooling).float().cpu().tolist()
        outputs.append({**top_labels(probs, labels_of(f)), **f.read.row_fields()})
    return outputs


def _max_length(path: Path, tokenizer: Any, model: torch.nn.Module) -> int:
    """The sentence-transformers max_seq_length when the directory has one, else the model's."""
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text()).get("max_seq_length")
        if value:
            return int(value)
    config = getattr(model.config, "text_config", model.config)  # CLIP: its text tower's
    limits = [getattr(config, "max_position_embeddings", 512), 512]
    if tokenizer.model_max_length and tokenizer.model_max_length < 1_000_000:
        limits.append(tokenizer.model_max_length)
    return min(limits)
