"""Parameters of the reading tasks: `answer-question` (a question over a context, both
built from the item's fields) and `extract-entities` (entity spans in a text)."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints, field_validator

from schemas.generation_params import MAX_TEMPLATE_CHARS, render_prompt, template_fields
from schemas.jobs import Item
from schemas.task_spec import TaskParams
from schemas.text_patterns import NON_BLANK_TEMPLATE

DEFAULT_QUESTION = "{question}"
DEFAULT_CONTEXT = "{context}"
DEFAULT_STRIDE = 32  # context tokens consecutive windows share
MAX_ANSWER_TOKENS = 30
STRIDE = (
    "tokens consecutive windows share where a text (a question's context) is longer than the "
    "model's window: every part is read, and a span at one window's edge is whole in the next"
)
MIN_SCORE = (
    "the least score kept: an entity below it is left out, an answer below it is given as "
    "none (without it, a question has no answer only where the model's no-answer score beats "
    "its best span)"
)


def _checked_template(value: str, what: str) -> str:
    if len(value) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"the {what} template is over {MAX_TEMPLATE_CHARS} characters")
    if "\x00" in value:
        raise ValueError(f"the {what} template holds a NUL character")
    if not value.strip():
        raise ValueError(f"the {what} template is empty")
    template_fields(value)
    return value


class AnswerQuestionParams(TaskParams):
    question: str = Field(
        DEFAULT_QUESTION,
        description="the question, as a template over the item's fields: '{question}' (the "
        "default) reads a `question` column or field, '{q}' another, and a text without "
        "braces asks every row the same question; {{ }} are literal braces",
    )
    context: str = Field(
        DEFAULT_CONTEXT,
        description="the context the answer is taken from, as a template over the item's "
        "fields: '{context}' (the default) reads a `context` column or field, or the text "
        "column where there is none; '{title}\\n{body}' joins two; answer offsets count "
        "characters of the context as built",
    )
    stride: int = Field(DEFAULT_STRIDE, ge=0, le=256, description=STRIDE)
    max_answer_tokens: int = Field(
        15, ge=1, le=MAX_ANSWER_TOKENS, description="the longest answer, in tokens"
    )
    min_score: float = Field(0.0, ge=0, le=1, description=MIN_SCORE)

    # Rows need no text column: the question and context are built from their fields.
    reads_text_column: ClassVar[bool] = False
    reads_item_fields: ClassVar[bool] = True

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        return _checked_template(value, "question")

    @field_validator("context")
    @classmethod
    def _context(cls, value: str) -> str:
        return _checked_template(value, "context")

    @classmethod
    def api_fields(cls, settings: Any) -> dict[str, tuple[Any, Any]]:
        """The templates' syntax, in the published schema."""
        template = Annotated[
            str, StringConstraints(max_length=MAX_TEMPLATE_CHARS, pattern=NON_BLANK_TEMPLATE)
        ]
        return {
            name: (template, Field(cls.model_fields[name].default,
                                   description=cls.model_fields[name].description))
            for name in ("question", "context")
        }  # fmt: skip

    @classmethod
    def templates(cls, params: dict[str, Any]) -> dict[str, str]:
        return {
            "question": str(params.get("question") or DEFAULT_QUESTION),
            "context": str(params.get("context") or DEFAULT_CONTEXT),
        }

    @classmethod
    def row_fields(cls, given: dict[str, Any]) -> list[str]:
        names: list[str] = []
        for template in cls.templates(given).values():
            try:
                names += [n for n in template_fields(template) if n not in names]
            except ValueError:  # the parameters' own check says why, at submit
                return []
        return names

    @classmethod
    def prepare_batch(cls, params: dict[str, Any], items: list[Item]) -> list[Item]:
        """Each item as the worker reads it: `text` the context, `fields` {"question": ...},
        both built from its row. A row without a field the templates read, or whose question
        or context comes out blank, ends `invalid`, its error naming the fields it has (so a
        misnamed column shows on every row of the job)."""
        templates = cls.templates(params)
        wanted = cls.row_fields(params)
        out = []
        for it in items:
            if it.invalid:
                out.append(Item(key=it.key, invalid=it.invalid))
                continue
            values = _values(it)
            if missing := [f for f in wanted if f not in values]:
                has = ", ".join(sorted(values)) or "none"
                out.append(Item(key=it.key, invalid=f"no value for "
                                f"{', '.join('{' + f + '}' for f in missing)} (the row's "
                                f"fields: {has}; the question and context templates "
                                "name others)"))  # fmt: skip
                continue
            question = render_prompt(templates["question"], values)
            context = render_prompt(templates["context"], values)
            if not question.strip():
                out.append(Item(key=it.key, invalid="the question is empty"))
            elif not context.strip():
                out.append(Item(key=it.key, invalid="the context is empty"))
            else:
                out.append(Item(key=it.key, text=context, fields={"question": question}))
        return out


def _values(item: Item) -> dict[str, str]:
    """What a template may read of an item: its fields, and its text (the text column) as
    `text` and, where it has no `context` field, as `context`."""
    values = dict(item.fields or {})
    if isinstance(item.text, str):
        values.setdefault("text", item.text)
        values.setdefault("context", item.text)
    return values


class ExtractEntitiesParams(TaskParams):
    aggregation: Literal["simple", "first", "average", "max", "none"] = Field(
        "simple",
        description="how word pieces join into entities, as the transformers "
        "token-classification pipeline's aggregation_strategy: simple (the default), first, "
        "average or max (whole words), or none (each piece as tagged)",
    )
    stride: int = Field(DEFAULT_STRIDE, ge=0, le=256, description=STRIDE)
    min_score: float = Field(0.0, ge=0, le=1, description=MIN_SCORE)
