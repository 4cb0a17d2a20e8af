"""`generate`: text from a prompt template, on a sequence-to-sequence (AutoModelForSeq2SeqLM)
or decoder-only (AutoModelForCausalLM) model directory.

Rows are batched only with rows that decode the same way (the same temperature, top_p, stop
strings and token budget), and by prompt length (base.run_by_length), so padding stays small;
decoder-only prompts are padded on the left, so every row's generation starts right after its
own prompt. Greedy rows in a batch give what each gives alone. A sampled row runs alone under
its own seed (derived from the job's seed and its key), so a retried chunk repeats it."""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
)

from schemas.errors import InvalidInput
from schemas.generation_params import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_PROMPT,
    render_prompt,
    sampling,
)
from schemas.jobs import Explanation, Item, messages_problem, text_problem
from schemas.states import FinishReason, RowFlag
from workers.handlers.base import Handler, run_by_length
from workers.safe_loading import load_pretrained

UNLIMITED = 1_000_000  # tokenizers say "no limit" with a huge model_max_length


@dataclass(frozen=True)
class Decoding:
    """What rows must share to be generated in one batch."""

    max_new_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()

    @property
    def samples(self) -> bool:
        return bool(self.temperature)


@dataclass
class Prompt:
    key: str
    text: str  # as the model reads it (the chat template applied)
    ids: list[int]
    decoding: Decoding
    seed: int | None = None
    schema: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def row_seed(job_seed: int, key: str) -> int:
    """A row's sampling seed: the same for the same job seed and key, whichever chunk,
    worker or retry generates it."""
    digest = hashlib.sha256(f"{job_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def encode_prompt(tokenizer: Any, prompt: str) -> tuple[str, list[int]]:
    """The prompt as a model reads it, in inference and training alike: one user turn (see
    `encode_messages`); the text the model reads and its token ids."""
    return encode_messages(tokenizer, [{"role": "user", "content": prompt}])


def encode_messages(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[int]]:
    """A conversation as a model reads it: inside the tokenizer's chat template where it has
    one (which then holds any special tokens itself), ending where the assistant's turn
    begins; a model without one reads the turns' texts, a line each."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text, list(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = "\n".join(m["content"] for m in messages)
    return text, list(tokenizer(text)["input_ids"])


def positions_of(config: Any, tokenizer: Any) -> int | None:
    """How many positions the model has (prompt and generated tokens together, for a
    decoder-only model; each side, for an encoder-decoder); None where it has no limit."""
    for name in ("max_position_embeddings", "n_positions", "max_target_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < UNLIMITED else None


class GenerateHandler(Handler):
    max_chars = 1_000_000  # the producer's cap is the user-facing one

    def setup(self, model_path: str, device: str) -> None:
        self.device = torch.device(device)
        config = load_pretrained(AutoConfig, model_path)
        self.encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        auto = AutoModelForSeq2SeqLM if self.encoder_decoder else AutoModelForCausalLM
        self.tokenizer = load_pretrained(AutoTokenizer, model_path)
        self.model = load_pretrained(auto, model_path).to(self.device).eval()
        self.positions = positions_of(config, self.tokenizer)
        self.eos = self.model.generation_config.eos_token_id
        if self.eos is None:
            self.eos = self.tokenizer.eos_token_id
        ends = [self.eos] if isinstance(self.eos, int) else list(self.eos or [])
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.model.generation_config.pad_token_id
        # Without a pad token, pad with an end token (Llama 3 has several; id 0 is "!")
        self.pad_id = pad if pad is not None else (ends[0] if ends else 0)
        # A stop string ends a row while its batch-mates go on: transformers then fills the
        # row with the pad id, which ends the text only where it is a token of its own.
        self.pad_ends_text = pad is not None and pad in self.tokenizer.all_special_ids

    # -- per item --------------------------------------------------------------------------
    def preprocess(self, item: Item, params: dict[str, Any]) -> Prompt:
        params = {**params, **(item.options or {})}  # a row's own decoding (OpenAI requests)
        if item.messages is not None:
            text, ids = self.encode_chat(item.messages)
        else:
            problem = text_problem(item.text, "text", self.max_chars)
            if problem:
                raise InvalidInput(problem)
            template = params.get("prompt", DEFAULT_PROMPT)
            try:
                prompt = render_prompt(template, {**(item.fields or {}), "text": item.text})
            except KeyError as exc:
                raise InvalidInput(f"no value for the prompt's {{{exc.args[0]}}}") from None
            text, ids = self.encode(prompt)
        asked = params.get("max_new_tokens")
        budget, notes = self.budget(len(ids), int(asked or DEFAULT_MAX_NEW_TOKENS))
        if asked is None:  # the default within the model's positions is no news
            notes = []
        temperature, top_p = sampling(params.get("temperature"), params.get("top_p")) or (
            None,
            None,
        )
        decoding = Decoding(budget, temperature, top_p, tuple(params.get("stop") or ()))
        seed = row_seed(int(params.get("seed") or 0), item.key) if decoding.samples else None
        return Prompt(item.key, text, ids, decoding, seed, params.get("json_schema"), notes)

    def encode(self, prompt: str) -> tuple[str, list[int]]:
        """The prompt as the model was trained to read it (see `encode_prompt`)."""
        return encode_prompt(self.tokenizer, prompt)

    def encode_chat(self, messages: list[dict[str, str]]) -> tuple[str, list[int]]:
        """A conversation as the model reads it (see `encode_messages`)."""
        if problem := messages_problem(messages, self.max_chars):
            raise InvalidInput(problem)
        return encode_messages(self.tokenizer, messages)

    def budget(self, prompt_tokens: int, wanted: int) -> tuple[int, list[str]]:
        """max_new_tokens within the model's positions, and the note saying so if lowered."""
        if self.positions is None:
            return wanted, []
        if prompt_tokens >= self.positions and (
            not self.encoder_decoder or prompt_tokens > self.positions
        ):
            raise InvalidInput(
                f"the prompt is {prompt_tokens} tokens; the model reads at most "
                f"{self.positions - (0 if self.encoder_decoder else 1)}"
            )
        room = self.positions - (1 if self.encoder_decoder else prompt_tokens)
        if wanted <= room:
            return wanted, []
        why = "positions" if self.encoder_decoder else "positions, and the prompt takes "
        why += "" if self.encoder_decoder else f"{prompt_tokens} tokens"
        return room, [
            f"max_new_tokens {wanted} capped at {room}: the model has {self.positions} {why}"
        ]

    # -- batches ---------------------------------------------------------------------------
    def predict(self, batch: list[Prompt]) -> list[Any]:
        out: list[Any] = [None] * len(batch)
        groups: dict[Decoding, list[int]] = {}
        for i, prompt in enumerate(batch):
            groups.setdefault(prompt.decoding, []).append(i)
        for decoding, members in groups.items():
            if decoding.samples:  # each under its own seed
                for i in members:
                    out[i] = self.generate([batch[i]], decoding)[0]
                continue

            def run(idx: list[int], m: list[int] = members, d: Decoding = decoding) -> list[Any]:
                return self.generate([batch[m[j]] for j in idx], d)

            rows = run_by_length([len(batch[i].ids) for i in members], run)
            for i, row in zip(members, rows, strict=True):
                out[i] = row
        return out

    def inputs(self, prompts: list[Prompt]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, padded on the left for a decoder-only model (its
        next token follows the last position) and on the right for an encoder."""
        longest = max(len(p.ids) for p in prompts)
        ids, mask = [], []
        for p in prompts:
            pad = [self.pad_id] * (longest - len(p.ids))
            ones, zeros = [1] * len(p.ids), [0] * len(pad)
            left = not self.encoder_decoder
            ids.append(pad + p.ids if left else p.ids + pad)
            mask.append(zeros + ones if left else ones + zeros)
        return {
            "input_ids": torch.tensor(ids, device=self.device),
            "attention_mask": torch.tensor(mask, device=self.device),
        }

    def generate(self, prompts: list[Prompt], decoding: Decoding) -> list[Any]:
        inputs = self.inputs(prompts)
        options: dict[str, Any] = {
            "max_new_tokens": decoding.max_new_tokens,
            "pad_token_id": self.pad_id,
            "do_sample": decoding.samples,
            # one sequence per row, as this job asks: a model's own beam settings would
            # change the decoding and return several rows per prompt
            "num_beams": 1,
            "num_return_sequences": 1,
        }
        if decoding.samples:
            options["temperature"] = decoding.temperature
            options["top_p"] = decoding.top_p
            torch.manual_seed(prompts[0].seed or 0)  # one row per call when sampling
        else:  # the model's own sampling defaults must not turn greedy decoding off
            options.update(temperature=None, top_p=None, top_k=None)
        if decoding.stop:
            start = 1 if self.encoder_decoder else inputs["input_ids"].shape[1]
            options["stopping_criteria"] = StoppingCriteriaList(
                [StopStrings(self.tokenizer, decoding.stop, start)]
            )
        with torch.inference_mode():
            sequences = self.model.generate(**inputs, **options)
        start = 1 if self.encoder_decoder else inputs["input_ids"].shape[1]
        return [
            self.finished(p, sequences[n, start:].tolist(), decoding) for n, p in enumerate(prompts)
        ]

    def finished(self, prompt: Prompt, generated: list[int], decoding: Decoding) -> Any:
        """One row's output (or, for output that fails its JSON Schema, its InvalidInput)."""
        ends = {self.eos} if isinstance(self.eos, int) else set(self.eos or ())
        tokens: list[int] = []
        reason = FinishReason.LENGTH
        for token in generated:
            if token in ends:
                reason = FinishReason.STOP
                break
            if token == self.pad_id and self.pad_ends_text:  # stopped by a stop string
                break
            tokens.append(token)
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = [text.find(s) for s in decoding.stop if s in text]
        if cut:
            text, reason = text[: min(cut)], FinishReason.STOP_STRING
        flags = []
        if reason is FinishReason.LENGTH:
            flags.append(RowFlag.MAX_NEW_TOKENS.value)
        if not text.strip():
            flags.append(RowFlag.EMPTY.value)
        if prompt.notes:
            flags.append(RowFlag.CAPPED.value)
        output: dict[str, Any] = {
            "text": text,
            "prompt_tokens": len(prompt.ids),
            "completion_tokens": len(tokens),
            "finish_reason": reason.value,
            "flags": flags,
        }
        if prompt.notes:
            output["notes"] = prompt.notes
        if prompt.schema is not None:
            try:
                output["json"] = checked_json(text, prompt.schema)
            except InvalidInput as exc:
                return exc
        return output

    def explain(
        self,
        batch: list[Prompt],
        outputs: list[dict[str, Any]],
        steps: int,
        internal_batch_size: int,
    ) -> list[Explanation]:
        from workers.explain.generation import explain_generations

        return explain_generations(self, batch, outputs)


class StopStrings(StoppingCriteria):
    """Ends a row once its generated text holds a stop string. Text, not tokens, is matched
    (a stop string may span tokens or sit inside one), with the tokenizer's own decoding:
    transformers' `stop_strings` needs a vocabulary it can map to text, which word-level
    tokenizers lack."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], start: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.start = start  # where generated tokens begin in each row

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        done = [any(s in text for s in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def checked_json(text: str, schema: dict[str, Any]) -> Any:
    """The generated text parsed as JSON and valid against `schema`; InvalidInput says why
    not (the reason is stored on the row)."""
    import jsonschema

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the output is not JSON ({exc.msg} at character {exc.pos}): "
                           f"{text[:200]!r}") from None  # fmt: skip
    kind = jsonschema.validators.validator_for(schema)
    validator = kind(schema, format_checker=kind.FORMAT_CHECKER)
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    except Exception as exc:  # a reference the submit check could not foresee
        raise InvalidInput(f"the JSON Schema could not be applied: {type(exc).__name__}: "
                           f"{exc}"[:500]) from None  # fmt: skip
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "the top level"
        raise InvalidInput(f"the output does not match the JSON Schema at {where}: "
                           f"{errors[0].message}")  # fmt: skip
    return value
