"""Text tasks: embed, zero-shot-text, classify-text, on any Hugging Face encoder directory."""

import copy
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from schemas.errors import InvalidInput
from schemas.jobs import Explanation, Item, text_problem
from workers.explain.text import TokenModel, explain_tokens
from workers.handlers.base import Handler, PerThread, run_by_length
from workers.handlers.outputs import top_labels
from workers.runtime.devices import torch_dtype
from workers.safe_loading import load_pretrained

# Cosine similarities lie in [-1, 1]; a softmax over them needs a temperature to be decisive.
ZERO_SHOT_SCALE = 20.0
LABEL_BATCH = 32  # label prompts encoded at once
LABEL_SETS_KEPT = 256  # label sets whose vectors an actor keeps


@dataclass
class TextFeatures:
    text: str
    input_ids: list[int]
    word_ids: list[int | None] | None
    offsets: list[tuple[int, int]] | None
    labels: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()


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
        self.max_length = _max_length(Path(model_path), self.tokenizer, self.model)

    @property
    def tokenizer(self) -> Any:
        """This thread's tokenizer (preprocess may run beside predict: base.PerThread)."""
        return self.tokenizers.get()

    def size(self, features: TextFeatures) -> int:
        return len(features.input_ids)

    def load_model(self, path: str) -> torch.nn.Module:
        return load_pretrained(AutoModel, path)

    def preprocess(self, item: Item, params: dict[str, Any]) -> TextFeatures:
        problem = text_problem(item.text, "text", self.max_chars)
        if problem:
            raise InvalidInput(problem)
        enc = self.tokenizer(
            item.text,
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=self.tokenizer.is_fast,
        )
        fast = self.tokenizer.is_fast
        return TextFeatures(
            text=item.text,
            input_ids=enc["input_ids"],
            word_ids=enc.word_ids() if fast else None,
            offsets=[tuple(o) for o in enc["offset_mapping"]] if fast else None,
        )

    def token_model(self) -> TokenModel:
        """What the token explainer needs of this model."""
        return TokenModel(self.tokenizer, self.pad, self.embedding_layer())

    def embedding_layer(self) -> torch.nn.Module:
        """Where token attributions are taken: the input word embeddings."""
        layer = self.model.get_input_embeddings()  # type: ignore[operator]
        assert isinstance(layer, torch.nn.Module)
        return layer

    def pad(self, batch: list[TextFeatures]) -> tuple[torch.Tensor, torch.Tensor]:
        padded = self.tokenizer.pad(
            {"input_ids": [f.input_ids for f in batch]}, return_tensors="pt"
        )
        return padded["input_ids"].to(self.device), padded["attention_mask"].to(self.device)

    def sentence_embeddings(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean pooling over real tokens, L2-normalised (the sentence-transformers recipe)."""
        # pooled in float32 whatever the model ran in (devices.py: outputs are float32)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

    def encode(self, batch: list[TextFeatures]) -> torch.Tensor:
        """Sentence embeddings, texts of similar length padded together (base.PAD_RATIO)."""
        with torch.inference_mode():
            rows = run_by_length(
                [len(f.input_ids) for f in batch],
                lambda idx: list(self.sentence_embeddings(*self.pad([batch[i] for i in idx]))),
            )
            return torch.stack(rows)


class EmbedHandler(TextHandler):
    def predict(self, batch: list[TextFeatures]) -> list[dict[str, Any]]:
        vectors = self.encode(batch).float().cpu().numpy().round(7)
        return [{"embedding": v.tolist(), "dim": int(v.shape[0])} for v in vectors]


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
            TextFeatures(
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

    def predict(self, batch: list[TextFeatures]) -> list[dict[str, Any]]:
        embeddings = self.encode(batch)
        outputs = []
        for f, emb in zip(batch, embeddings, strict=True):
            probs = self.probabilities(emb.unsqueeze(0), f.prompts)[0].tolist()
            outputs.append(top_labels(probs, list(f.labels)))
        return outputs

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
            expl = explain_tokens(
                self.token_model(),
                forward,
                group,
                targets,
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

    def predict(self, batch: list[TextFeatures]) -> list[dict[str, Any]]:
        def run(idx: list[int]) -> list[dict[str, Any]]:
            with torch.inference_mode():
                probs = self.forward(*self.pad([batch[i] for i in idx])).float().cpu().tolist()
            return [top_labels(row, self.labels) for row in probs]

        # texts of similar length padded together (base.PAD_RATIO)
        return run_by_length([len(f.input_ids) for f in batch], run)

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
        return explain_tokens(
            self.token_model(),
            self.forward,
            batch,
            targets,
            steps,
            internal_batch_size,
            [o["label"] for o in outputs],
        )


def _max_length(path: Path, tokenizer: Any, model: torch.nn.Module) -> int:
    """The sentence-transformers max_seq_length when the directory has one, else the model's."""
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text()).get("max_seq_length")
        if value:
            return int(value)
    limits = [getattr(model.config, "max_position_embeddings", 512), 512]
    if tokenizer.model_max_length and tokenizer.model_max_length < 1_000_000:
        limits.append(tokenizer.model_max_length)
    return min(limits)
