"""PII redaction in the worker (schemas/redaction.py): names, places and organisations found
by the entity model (SLUICE_PII_MODEL, resolved at submit and recorded on the job) before the
task's model sees the items, and every text a model makes (transcripts, generations, answers,
entity spans, error messages) redacted by the same policy before it is stored.

The producer has already replaced the pattern types. Until this chunk completes, its pending
row holds the names as submitted; the completion transaction replaces the row's items with
their redacted form (Ledger.complete's `items`), and an item left invalid keeps no text."""

import dataclasses
from collections.abc import Callable
from typing import Any

from schemas.catalog import Catalog
from schemas.errors import ModelError
from schemas.generation_params import END_OF_OUTPUT
from schemas.jobs import Item, Outcome
from schemas.redaction import (
    TEXT_OUTPUTS,
    Redaction,
    RedactMode,
    item_texts,
    model_type,
    path_name,
    put_leaf,
    text_leaves,
    with_texts,
)
from schemas.settings import Settings
from schemas.states import ItemStatus
from schemas.task_spec import TaskSpec
from storage import pii
from storage.ledger import JobView
from workers.actor_work import run_chunk
from workers.ray_calls import ActorCalls

ENTITY_TASK = "extract-entities"
Texts = list[tuple[int, str, str]]  # (item index, field, text)
EntitySpans = Callable[[list[str]], list[list[pii.Span]]]  # texts -> the spans in each


class PiiStage:
    """One chunk's redaction. `entity_spans` runs the entity model (a Ray actor, as any
    task's) over a list of texts; tests hand in their own."""

    def __init__(
        self,
        redaction: Redaction,
        secret: bytes,
        output_paths: tuple[str, ...],
        entity_spans: EntitySpans | None,
    ) -> None:
        self.redaction = redaction
        self.mode = redaction.mode
        self.secret = secret
        self.output_paths = output_paths
        self.entity_spans = entity_spans
        self.replaced = False  # whether the chunk's stored items must be replaced

    def model_spans(self, texts: list[str]) -> list[list[pii.Span]]:
        if self.entity_spans is None:  # stage_for gives one whenever model types are wanted
            raise RuntimeError("the job redacts model types but no entity model was given")
        return self.entity_spans(texts)

    # -- inputs -------------------------------------------------------------------------------

    def inputs(self, items: list[Item], ready: set[str]) -> list[Item]:
        """`items` with the model types redacted in the texts of those in `ready` (the others
        are invalid: under mask and hash they keep no text)."""
        out = list(items)
        texts: Texts = []
        for n, item in enumerate(items):
            if item.key not in ready:
                if self.mode.replaces and (item.text is not None or item.fields or item.record):
                    out[n] = item.model_copy(update={"text": None, "fields": None, "record": None})
                    self.replaced = True
                continue
            texts.extend((n, field, value) for field, value in item_texts(item) if value.strip())
        if not texts or not self.redaction.model_types:
            return out
        spans = self.model_spans([value for _, _, value in texts])
        for (n, field, value), found in zip(texts, spans, strict=True):
            if not found:
                continue
            item = out[n]
            prior = [f for f in item.redactions or [] if f["field"] == field]
            new, findings = pii.redact(value, found, self.mode.value, self.secret, without(prior))
            others = [f for f in item.redactions or [] if f["field"] != field]
            mine = [{**f, "field": field} for f in findings]
            out[n] = item.model_copy(update={"redactions": others + mine})
            if self.mode.replaces and new != value:
                out[n] = with_texts(out[n], {field: new})
                self.replaced = True
        return out

    # -- outputs ------------------------------------------------------------------------------

    def outputs(self, outcomes: list[Outcome], items: list[Item]) -> list[Outcome]:
        """Outcomes (in item order) with the texts of their outputs and errors redacted, each
        carrying what redaction found in its item and its output."""
        leaves: list[tuple[int, tuple[str | int, ...] | None, str]] = []
        pieces: dict[int, TargetPieces] = {}
        for n, outcome in enumerate(outcomes):
            if outcome.output is not None and self.output_paths:
                found = text_leaves(outcome.output, self.output_paths)
                leaves.extend((n, ("output", *at), v) for at, v in found if v.strip())
            if outcome.explanation is not None:  # a generation's target, an answer's words
                what = outcome.explanation.model_dump(include={"target", "detail", "error"})
                found = text_leaves(what, EXPLANATION_TEXTS)
                if placed := placed_target_tokens(outcome):  # redacted as the target is, below
                    pieces[n] = placed
                    found = [(at, v) for at, v in found if at[:2] != ("detail", TARGET_TOKENS)]
                leaves.extend((n, ("explanation", *at), v) for at, v in found if v.strip())
            if outcome.error:
                leaves.append((n, None, outcome.error))
        texts = [value for _, _, value in leaves]
        spans: list[list[pii.Span]] = [
            pii.find_patterns(text, self.redaction.pattern_types) for text in texts
        ]
        if self.redaction.model_types and texts:
            for n, extra in enumerate(self.model_spans(texts)):
                spans[n] = spans[n] + extra
        extra_findings: dict[int, list[dict[str, Any]]] = {}
        updated = [o.model_copy(deep=True) for o in outcomes]
        for (n, at, value), in_leaf in zip(leaves, spans, strict=True):
            if not in_leaf:
                continue
            new, findings = pii.redact(value, in_leaf, self.mode.value, self.secret)
            field = "error" if at is None else path_name(str(at[0]), at[1:])
            extra_findings.setdefault(n, []).extend({**f, "field": field} for f in findings)
            if self.mode.replaces:
                set_leaf(updated[n], at, new)
        if self.mode.replaces:
            targets = {n: s for (n, at, _), s in zip(leaves, spans, strict=True) if at == TARGET}
            for n, placed in pieces.items():
                explanation = updated[n].explanation
                if (found_in_target := targets.get(n)) and explanation and explanation.detail:
                    explanation.detail[TARGET_TOKENS] = self.redacted_pieces(
                        placed, found_in_target
                    )
        for n, outcome in enumerate(updated):
            found_here = (items[n].redactions or []) + extra_findings.get(n, [])
            outcome.redactions = found_here or None
        return updated

    def redacted_pieces(self, placed: "TargetPieces", found: list[pii.Span]) -> list[str]:
        """A generation's target tokens (its output in pieces) redacted as the output was:
        a piece that overlaps a value found in the output becomes the value's replacement if
        it is the value's first piece, else nothing; the other pieces stay. Pieces that could
        not be placed are all blanked (the end marker stays): none can be shown safely."""
        if placed.places is None:
            return ["" if piece != END_OF_OUTPUT else piece for piece in placed.tokens]
        out = list(placed.tokens)
        replaced: set[int] = set()
        for i, place in enumerate(placed.places):
            if place is None:
                continue
            start, end = place
            hit = next((k for k, s in enumerate(found) if s.start < end and start < s.end), None)
            if hit is None:
                continue
            if hit in replaced:
                out[i] = ""
                continue
            value = placed.target[found[hit].start : found[hit].end]
            whole = dataclasses.replace(found[hit], start=0, end=len(value))
            lead = placed.tokens[i][: len(placed.tokens[i]) - len(placed.tokens[i].lstrip())]
            out[i] = lead + pii.redact(value, [whole], self.mode.value, self.secret)[0]
            replaced.add(hit)
        return out


TARGET = ("explanation", "target")
TARGET_TOKENS = "target_tokens"


@dataclasses.dataclass(frozen=True)
class TargetPieces:
    """A generation explanation's target tokens, and where each lies in its target text
    (None: a blank piece or the end marker)."""

    tokens: list[str]
    places: list[tuple[int, int] | None] | None  # None: they do not spell the target
    target: str


PART_OF_A_CHARACTER = "\ufffd"  # what a piece holding part of a character's bytes decodes to


def placed_target_tokens(outcome: Outcome) -> TargetPieces | None:
    """The target tokens of an outcome's explanation placed in its target; None without
    them. Pieces that do not spell the target get no places (redacted_pieces then blanks
    them all when the target held a value).

    Pieces must follow each other in the target with nothing but whitespace between them,
    so none is placed on a later copy of its text. A run of pieces that each hold part of a
    character (byte-level tokenizers split CJK characters and emoji so) covers the text
    between the pieces on either side of it."""
    expl = outcome.explanation
    tokens = (expl.detail or {}).get(TARGET_TOKENS) if expl is not None else None
    if expl is None or not isinstance(expl.target, str) or not isinstance(tokens, list):
        return None
    target = expl.target
    places: list[tuple[int, int] | None] = []
    split: list[int] = []  # pieces of a character whose text is not placed yet
    at = 0
    for n, piece in enumerate(tokens):
        if not isinstance(piece, str):
            return None  # not target tokens as explainers write them: walked as texts
        core = piece.strip()
        if core and not core.strip(PART_OF_A_CHARACTER):
            split.append(len(places))
            places.append(None)
            continue
        if not core or (piece == END_OF_OUTPUT and n == len(tokens) - 1):
            places.append(None)
            continue
        start = target.find(core, at)
        if start < 0 or (target[at:start].strip() and not split):
            return TargetPieces(tokens, None, target)
        for k in split:  # the character(s) between the last piece placed and this one
            places[k] = (at, start)
        split = []
        places.append((start, start + len(core)))
        at = start + len(core)
    for k in split:
        places[k] = (at, len(target))
    if target[at:].strip() and not split:
        return TargetPieces(tokens, None, target)  # the pieces end before the target does
    return TargetPieces(tokens, places, target)


# An explanation's texts: what it explains (a generation's output, "label: text" of an
# entity) and, in its detail, an answer's words and a generation's target tokens.
EXPLANATION_TEXTS = ("target", "error", "detail.**")


def set_leaf(outcome: Outcome, at: tuple[str | int, ...] | None, value: str) -> None:
    if at is None:
        outcome.error = value
    elif at[0] == "output":
        put_leaf(outcome.output, at[1:], value)
    else:
        expl = outcome.explanation
        assert expl is not None
        if at[1] in ("target", "error"):
            setattr(expl, str(at[1]), value)
        else:
            put_leaf(expl.detail, at[2:], value)


def without(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in f.items() if k != "field"} for f in findings]


def output_paths(spec: TaskSpec) -> tuple[str, ...]:
    return TEXT_OUTPUTS.get(spec.output.value, ())


def actor_entity_spans(
    settings: Settings,
    entity_spec: TaskSpec,
    job: JobView,
    redaction: Redaction,
    chunk_id: str,
    calls: ActorCalls,
) -> EntitySpans:
    """entity_spans over the entity model's actor: spans of the job's model types."""
    model = redaction.model
    assert model is not None
    params = entity_spec.check_params({}, settings)
    entity_job = dataclasses.replace(
        job,
        task=entity_spec.name,
        model=model.name,
        model_version=model.version,
        params={**params, "model_path": model.path},
        explain_policy="none",
    )
    wanted = set(redaction.model_types)

    def entity_spans(texts: list[str]) -> list[list[pii.Span]]:
        items = [Item(key=str(n), text=text) for n, text in enumerate(texts)]
        done = run_chunk(settings, entity_spec, entity_job, chunk_id, items, calls, False)
        spans: list[list[pii.Span]] = []
        for outcome in done:
            if outcome.status is not ItemStatus.OK or outcome.output is None:
                # never stored unredacted: the chunk's attempt fails, and is retried
                raise ModelError(f"the PII entity model failed on a text: {outcome.error}")
            found = []
            for e in outcome.output.get("entities", []):
                if (kind := model_type(e["label"])) in wanted:
                    found.append(pii.Span(kind, e["start"], e["end"], float(e["score"]), "model"))
            spans.append(found)
        return spans

    return entity_spans


def stage_for(
    settings: Settings,
    catalog: Catalog,
    job: JobView,
    secret: Callable[[], bytes],
    chunk_id: str,
    calls: ActorCalls,
) -> PiiStage | None:
    """The chunk's redaction stage, or None when its job redacts nothing. `secret`: called
    for the tenant's secret (a DB read) only when the job has a policy."""
    redaction = Redaction.of_job(job.params)
    if redaction is None or redaction.mode is RedactMode.NONE:
        return None
    spans = None
    if redaction.model_types:
        spans = actor_entity_spans(
            settings, catalog.get(ENTITY_TASK), job, redaction, chunk_id, calls
        )
    return PiiStage(redaction, secret(), output_paths(catalog.get(job.task)), spans)
