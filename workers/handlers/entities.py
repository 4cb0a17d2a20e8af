"""`extract-entities`: entity spans from a token classifier (AutoModelForTokenClassification),
exactly as transformers' token-classification pipeline finds them, with the windows of a
whole batch padded together by length.

A text longer than the model's window is read in overlapping windows sharing `stride`
tokens (the pipeline's `stride`); word pieces are joined into entities by the pipeline's own
postprocessing (its `aggregation_strategy`: simple, first, average, max or none), and an
entity seen in two windows is kept once, as the pipeline keeps it (the longer, or the surer
of equal ones). So a row equals `pipeline("token-classification", aggregation_strategy=A,
stride=S)` on the same weights. `none` keeps each word piece apart, labelled as tagged
(B-/I- prefixes kept); the pipeline refuses a stride with `none` (it reads only the first
window), this handler reads every window and keeps each piece once all the same.

Output per row: {"entities": [{"text", "label", "start", "end", "score"}]}, text being the
characters text[start:end] (the pipeline's `word` is decoded from the pieces: an e-mail
address comes back spaced), entities under `min_score` left out."""

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer
from transformers.pipelines import AggregationStrategy, TokenClassificationPipeline

from schemas.errors import InvalidInput, ModelError
from schemas.jobs import Explanation, Item, text_problem
from schemas.reading_params import DEFAULT_STRIDE
from workers.explain.spans import (
    METHOD,
    TokenWindow,
    attribute_windows,
    batch_or_each,
    pad_windows,
    words,
)
from workers.extractive_qa import window_length
from workers.handlers.base import WINDOWS_PER_PASS, Handler, run_by_length
from workers.safe_loading import load_pretrained

MAX_CHARS = 1_000_000  # the producer's cap (SLUICE_MAX_TEXT_CHARS) is the user-facing one
# Entities explained per row: each is one attribution over its window, kept in the row's
# explanation, so a text with hundreds of entities would make one huge row.
MAX_EXPLAINED = 20


@dataclass
class TextWindows:
    text: str
    windows: list[TokenWindow]
    aggregation: AggregationStrategy
    min_score: float
    special: list[list[bool]] = field(default_factory=list)


class ExtractEntitiesHandler(Handler):
    def setup(self, model_path: str, device: str) -> None:
        self.device = torch.device(device)
        self.tokenizer = load_pretrained(AutoTokenizer, model_path)
        if not self.tokenizer.is_fast:
            raise ModelError(
                f"{model_path}: extract-entities needs a fast tokenizer (a tokenizer.json) for "
                "the entities' character offsets; save the model with its fast tokenizer"
            )
        model = load_pretrained(AutoModelForTokenClassification, model_path)
        self.model = model.to(self.device).eval()
        self.window = window_length(self.tokenizer, self.model)
        # Only its postprocessing is used (so entities are joined exactly as the pipeline
        # joins them); the device is given so that building it moves nothing.
        self.pipeline = TokenClassificationPipeline(
            model=self.model, tokenizer=self.tokenizer, device=self.device
        )
        config: Any = self.model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]

    def preprocess(self, item: Item, params: dict[str, Any]) -> TextWindows:
        if problem := text_problem(item.text, "text", MAX_CHARS):
            raise InvalidInput(problem)
        stride = int(params.get("stride", DEFAULT_STRIDE))
        room = self.window - self.tokenizer.num_special_tokens_to_add(pair=False)
        if stride >= room:
            raise InvalidInput(
                f"windows sharing {stride} tokens do not fit the model's {self.window}-token "
                f"window ({room} for the text); give a stride under {room}"
            )
        enc = self.tokenizer(
            item.text,
            truncation=True,
            max_length=self.window,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        windows = [
            TokenWindow(
                input_ids=enc["input_ids"][w],
                offsets=[tuple(o) for o in enc["offset_mapping"][w]],
                word_ids=enc.word_ids(w),
                sequence_ids=enc.sequence_ids(w),
                token_type_ids=enc["token_type_ids"][w] if "token_type_ids" in enc else None,
            )
            for w in range(len(enc["input_ids"]))
        ]
        return TextWindows(
            item.text,
            windows,
            AggregationStrategy(params.get("aggregation", "simple")),
            float(params.get("min_score", 0.0)),
            [[bool(m) for m in mask] for mask in enc["special_tokens_mask"]],
        )

    def logits(self, windows: list[TokenWindow]) -> list[torch.Tensor]:
        """Each window's logits (its own length, on the CPU), windows of similar length
        padded together."""

        def run(idx: list[int]) -> list[torch.Tensor]:
            group = [windows[i] for i in idx]
            inputs = {k: v.to(self.device) for k, v in pad_windows(self.tokenizer, group).items()}
            with torch.inference_mode():
                logits = self.model(**inputs).logits.float().cpu()
            return [logits[j, : len(w.input_ids)] for j, w in enumerate(group)]

        return run_by_length([len(w.input_ids) for w in windows], run, most=WINDOWS_PER_PASS)

    def entities(self, f: TextWindows, logits: list[torch.Tensor]) -> list[dict[str, Any]]:
        """The pipeline's postprocessing on this text's windows, as its _forward gives them."""
        outputs = [
            {
                "logits": row.unsqueeze(0),
                "input_ids": torch.tensor([w.input_ids]),
                "offset_mapping": torch.tensor([w.offsets]),
                "special_tokens_mask": torch.tensor([special], dtype=torch.long),
                "sentence": f.text,
                "word_ids": None,
                "word_to_chars_map": None,
            }
            for w, special, row in zip(f.windows, f.special, logits, strict=True)
        ]
        found = self.pipeline.postprocess(outputs, aggregation_strategy=f.aggregation)
        return [
            {
                "text": f.text[int(e["start"]) : int(e["end"])],
                "label": str(e.get("entity_group", e.get("entity"))),
                "start": int(e["start"]),
                "end": int(e["end"]),
                "score": float(e["score"]),
            }
            for e in found
            if float(e["score"]) >= f.min_score
        ]

    def predict(self, batch: list[TextWindows]) -> list[dict[str, Any]]:
        flat = [(i, w) for i, f in enumerate(batch) for w in f.windows]
        logits = self.logits([w for _, w in flat])
        per_item: list[list[torch.Tensor]] = [[] for _ in batch]
        for (i, _), row in zip(flat, logits, strict=True):
            per_item[i].append(row)
        return [
            {"entities": self.entities(f, rows)} for f, rows in zip(batch, per_item, strict=True)
        ]

    def confidence(self, output: dict[str, Any]) -> float | None:
        """The least sure entity's score (None without entities: nothing to doubt)."""
        return min((float(e["score"]) for e in output.get("entities") or []), default=None)

    def explain(
        self,
        batch: list[TextWindows],
        outputs: list[dict[str, Any]],
        steps: int,
        internal_batch_size: int,
    ) -> list[Explanation]:
        """One attribution per entity (the first MAX_EXPLAINED of a row), over the words of
        the first window holding the whole entity, for its type's probability (B- and I-
        together; the exact tag with aggregation `none`) summed over its tokens. The row's
        Explanation.tokens and attributions are its first entity's; every entity's are in
        detail["entities"]. A row without entities gets an explanation with no attributions
        and a note saying so."""

        def run(idx: list[int]) -> list[Explanation]:
            wanted = [
                (i, e, *self.entity_target(batch[i], e))
                for i in idx
                for e in (outputs[i].get("entities") or [])[:MAX_EXPLAINED]
            ]
            scores: list[list[float]] = []
            deltas: list[float] = []
            if wanted:
                scores, deltas = attribute_windows(
                    self.model,
                    self.tokenizer,
                    [batch[i].windows[w] for i, _, w, _, _ in wanted],
                    label_probability,
                    [
                        padded_rows([tokens for *_, tokens, _ in wanted]),
                        torch.stack([classes for *_, classes in wanted]),
                    ],
                    steps,
                    internal_batch_size,
                )
            per_item: dict[int, list[dict[str, Any]]] = {i: [] for i in idx}
            for (i, e, w, _, _), s, d in zip(wanted, scores, deltas, strict=True):
                found = words(batch[i].windows[w], [batch[i].text], s)
                per_item[i].append(
                    {
                        **{k: e[k] for k in ("label", "start", "end", "text", "score")},
                        "window": w,
                        "tokens": [x.text for x in found],
                        "attributions": [x.attribution for x in found],
                        "offsets": [[x.start, x.end] for x in found],
                        "convergence_delta": d,
                    }
                )
            return [entity_explanation(per_item[i], len(outputs[i]["entities"])) for i in idx]

        return batch_or_each(run, len(batch))

    def entity_target(
        self, f: TextWindows, entity: dict[str, Any]
    ) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(window, its tokens of the entity as a 0/1 row, the label ids it is scored by)."""
        start, end = int(entity["start"]), int(entity["end"])
        for w, win in enumerate(f.windows):
            inside = [
                not special and s >= start and e <= end and e > s
                for (s, e), special in zip(win.offsets, f.special[w], strict=True)
            ]
            begins = any(i and win.offsets[p][0] == start for p, i in enumerate(inside))
            if begins and any(i and win.offsets[p][1] == end for p, i in enumerate(inside)):
                break
        else:
            raise ValueError(f"no window holds the entity at {start}..{end}")
        label = str(entity["label"])
        if f.aggregation == AggregationStrategy.NONE:
            classes = [lbl == label for lbl in self.labels]
        else:
            tag = self.pipeline.get_tag(label)[1]
            classes = [self.pipeline.get_tag(lbl)[1] == tag for lbl in self.labels]
        return w, torch.tensor(inside, dtype=torch.float), torch.tensor(classes, dtype=torch.float)


def padded_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """0/1 rows of different lengths as one tensor, zeros after each row's end."""
    out = torch.zeros(len(rows), max(len(r) for r in rows))
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def label_probability(out: Any, tokens: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Per row: the probability of the `classes` labels, summed over the `tokens` marked."""
    probs = torch.softmax(out.logits, dim=-1)
    per_token = (probs * classes.unsqueeze(1)).sum(-1)
    return (per_token * tokens[:, : per_token.shape[1]]).sum(-1)


def entity_explanation(explained: list[dict[str, Any]], found: int) -> Explanation:
    if not explained:
        return Explanation(
            method=METHOD,
            detail={"entities": [], "note": "no entities were found: nothing to explain"},
        )
    first = explained[0]
    detail: dict[str, Any] = {"entities": explained}
    if found > len(explained):
        detail["note"] = f"the first {len(explained)} of {found} entities are explained"
    return Explanation(
        method=METHOD,
        target=f"{first['label']}: {first['text']}",
        tokens=first["tokens"],
        attributions=first["attributions"],
        convergence_delta=max(abs(e["convergence_delta"]) for e in explained),
        detail=detail,
    )
