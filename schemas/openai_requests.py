"""Requests of the OpenAI-compatible API (issue 25) as Sluice items: a line of a batch input
file, and the bodies of /v1/chat/completions (the `generate` task) and /v1/embeddings
(`embed`). What Sluice cannot honour (n > 1, tools, logprobs, token-id input, dimensions) is
refused by name; in a batch that is the line's error, never the batch's.

Keys: a request's `custom_id` is its item's key. What Sluice adds to a key follows U+241E,
which a custom_id may not hold: `id␞3/5` is the fourth of the five inputs of an embeddings
request with a list, `id␞dup7` a repeat of `id` on line 7, `␞line7` line 7 with no usable
custom_id."""

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.errors import OpenAIRequestError
from schemas.generation_params import GenerateParams, sampling
from schemas.jobs import Item
from schemas.storable import key_problem

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
TASK_OF_ENDPOINT = {CHAT: "generate", EMBEDDINGS: "embed"}
SEPARATOR = "\u241e"
MAX_CUSTOM_ID = 400  # keys are stored in 512 characters, with room for what Sluice adds
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's cap on one embeddings request's list
MAX_STOPS = 4  # OpenAI's
ROLES = ("system", "developer", "user", "assistant")
# Read and let pass: they change nothing Sluice computes.
IGNORED = ("model", "user", "store", "metadata", "service_tier", "stream_options")
# Refused by name: honouring them would change the answer in ways Sluice cannot.
UNSUPPORTED = (
    "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "logprobs",
    "top_logprobs", "logit_bias", "audio", "modalities", "prediction", "web_search_options",
    "reasoning_effort", "verbosity",
)  # fmt: skip
CHAT_FIELDS = (
    "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
    "response_format", "n", "frequency_penalty", "presence_penalty", "stream",
)  # fmt: skip
EMBEDDING_FIELDS = ("input", "encoding_format", "dimensions")


@dataclass(frozen=True)
class ItemKey:
    """What an item's key says of the request it came from."""

    custom_id: str | None
    index: int | None = None  # of an embeddings request's list input
    of: int = 1  # items of its request
    part: str | None = None  # what Sluice added besides an index (dupN, lineN)

    def request(self, key: str) -> str:
        """The request it belongs to: its custom_id, or a bad line's own key."""
        return key if self.part or self.custom_id is None else self.custom_id


def split_key(key: str) -> ItemKey:
    custom_id, sep, rest = key.partition(SEPARATOR)
    if not sep:
        return ItemKey(key)
    index, slash, of = rest.partition("/")
    if slash and index.isdigit() and of.isdigit():
        return ItemKey(custom_id, int(index), int(of))
    return ItemKey(custom_id or None, part=rest)


def _refuse_unknown(body: dict[str, Any], known: tuple[str, ...]) -> None:
    for name, value in body.items():
        if name in IGNORED or name in known or value is None:  # null: as if not sent
            continue
        if name in UNSUPPORTED:
            if name == "logprobs" and value in (False, None):
                continue
            if name in ("tools", "functions", "logit_bias") and not value:
                continue
            raise OpenAIRequestError(
                f"{name} is not supported by Sluice's local models", name, "unsupported_parameter"
            )
        raise OpenAIRequestError(f"unknown parameter {name!r}", name, "unknown_parameter")


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise OpenAIRequestError(f"{name} must be a number from {low:g} to {high:g}", name)
    return float(value)


def _content(turn: Any, n: int) -> dict[str, str]:
    where = f"messages[{n}]"
    if not isinstance(turn, dict) or turn.get("role") not in ROLES:
        raise OpenAIRequestError(
            f"{where} needs a role ({', '.join(ROLES)}) and content", f"{where}.role"
        )
    content = turn.get("content")
    if isinstance(content, list):  # text parts; images and audio are another model's work
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise OpenAIRequestError(
                    f"{where}.content: only text parts are supported", f"{where}.content"
                )
            texts.append(str(part.get("text", "")))
        content = "".join(texts)
    if not isinstance(content, str) or "\x00" in content:
        raise OpenAIRequestError(f"{where}.content must be text", f"{where}.content")
    role = "system" if turn["role"] == "developer" else turn["role"]
    return {"role": role, "content": content}


def _json_schema(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return schema
        raise OpenAIRequestError(
            "response_format.json_schema.schema must be a JSON Schema object",
            "response_format.json_schema",
        )
    raise OpenAIRequestError(
        "response_format.type must be text, json_object or json_schema", "response_format"
    )


def chat_item(key: str, body: dict[str, Any], seed: int = 0) -> Item:
    """A /v1/chat/completions body as a `generate` item: its messages, and its decoding as
    the item's own options (GenerateParams' names). A request that samples without a seed
    of its own takes `seed` (drawn per batch or call); a greedy one needs none, so the same
    greedy request is one entry of the result cache whichever batch sends it."""
    _refuse_unknown(body, CHAT_FIELDS)
    if body.get("n") not in (None, 1):
        raise OpenAIRequestError("n must be 1: one choice per request", "n", "unsupported_value")
    if body.get("stream"):
        raise OpenAIRequestError("stream is not supported: ask without it", "stream")
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0):
            raise OpenAIRequestError(f"{name} is not supported (only 0)", name)
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise OpenAIRequestError("messages must be a list of at least one message", "messages")
    messages = [_content(turn, n) for n, turn in enumerate(turns)]
    options: dict[str, Any] = {}
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
                raise OpenAIRequestError(f"{name} must be a whole number from 1 to 4096", name)
            options.setdefault("max_new_tokens", value)
    if (temperature := _number(body, "temperature", 0, 2)) is not None:
        options["temperature"] = temperature
    if (top_p := _number(body, "top_p", 0, 1)) is not None:
        if top_p == 0:
            raise OpenAIRequestError("top_p must be above 0", "top_p")
        options["top_p"] = top_p
    given = body.get("seed")
    if given is not None and (isinstance(given, bool) or not isinstance(given, int)):
        raise OpenAIRequestError("seed must be a whole number", "seed")
    if sampling(options.get("temperature"), options.get("top_p")) is not None:
        options["seed"] = (seed if given is None else given) % 2**31
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is not None:
        if not isinstance(stops, list) or len(stops) > MAX_STOPS:
            raise OpenAIRequestError(f"stop must be a string or up to {MAX_STOPS}", "stop")
        if any(not isinstance(s, str) or not s or "\x00" in s for s in stops):
            raise OpenAIRequestError("each stop must be a non-empty string", "stop")
        if stops:
            options["stop"] = stops
    if (schema := _json_schema(body.get("response_format"))) is not None:
        try:
            GenerateParams(json_schema=schema)  # a schema that cannot work: refused now
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise OpenAIRequestError(message, "response_format.json_schema") from None
        options["json_schema"] = schema
    return Item(key=key, messages=messages, options=options or None)


def embedding_items(custom_id: str, body: dict[str, Any]) -> list[Item]:
    """A /v1/embeddings body as `embed` items: one per input (a list: one per member, keyed
    `custom_id␞N`), with its encoding_format (float or base64) among the options."""
    _refuse_unknown(body, EMBEDDING_FIELDS)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise OpenAIRequestError("encoding_format must be float or base64", "encoding_format")
    if body.get("dimensions") is not None:
        raise OpenAIRequestError(
            "dimensions is not supported: this model's vectors cannot be shortened (leave it "
            "out for the model's own size)",
            "dimensions",
            "unsupported_parameter",
        )
    given = body.get("input")
    options = {"encoding_format": encoding} if encoding != "float" else None
    if isinstance(given, str) and given.strip():
        return [Item(key=custom_id, text=given, options=options)]
    if (
        isinstance(given, str)
        or not isinstance(given, list)
        or not given
        or len(given) > MAX_EMBEDDING_INPUTS
    ):
        raise OpenAIRequestError(
            f"input must be a string or a list of 1 to {MAX_EMBEDDING_INPUTS} strings", "input"
        )
    if not all(isinstance(x, str) for x in given):
        raise OpenAIRequestError(
            "input must be text: token-id input is not supported (send the text)", "input"
        )
    if not all(x.strip() for x in given):
        raise OpenAIRequestError("input must not hold an empty string", "input")
    return [
        Item(key=f"{custom_id}{SEPARATOR}{n}/{len(given)}", text=text, options=options)
        for n, text in enumerate(given)
    ]


def request_items(endpoint: str, key: str, body: Any, seed: int = 0) -> list[Item]:
    if not isinstance(body, dict):
        raise OpenAIRequestError("body must be a JSON object", "body")
    if endpoint == CHAT:
        return [chat_item(key, body, seed)]
    return embedding_items(key, body)


def body_model(body: Any) -> str:
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model.strip():
        raise OpenAIRequestError("model is required: a registry name or a local model", "model")
    return model


class BatchLines:
    """The lines of one batch input file as items, in order: a bad line is one `invalid`
    item with the reason, never an error of the batch. The first usable line names the
    batch's model; every line must name the same one and the batch's endpoint."""

    def __init__(self, endpoint: str, seed: int = 0) -> None:
        self.endpoint = endpoint
        self.seed = seed  # of the batch's sampled requests that bring none
        self.model: str | None = None
        self.seen: dict[str, int] = {}  # custom_id -> its line
        self.requests = 0

    def too_long(self, line: int, cap: int) -> list[Item]:
        """A line over the cap, refused unread."""
        self.requests += 1
        why = f"line {line}: over {cap} bytes (SLUICE_OPENAI_MAX_LINE_BYTES)"
        return [Item(key=f"{SEPARATOR}line{line}", invalid=why)]

    def items(self, raw: bytes, line: int) -> list[Item]:
        self.requests += 1
        custom_id: str | None = None
        try:
            try:
                request = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise OpenAIRequestError(f"line {line} is not JSON: {exc}") from None
            if not isinstance(request, dict):
                raise OpenAIRequestError(f"line {line} is not a JSON object")
            given = request.get("custom_id")
            if not isinstance(given, str) or not given or len(given) > MAX_CUSTOM_ID:
                raise OpenAIRequestError(
                    f"custom_id must be a string of 1 to {MAX_CUSTOM_ID} characters", "custom_id"
                )
            if SEPARATOR in given or key_problem(given):
                raise OpenAIRequestError(
                    "custom_id may not hold U+241E, NUL or a lone surrogate", "custom_id"
                )
            custom_id = given
            if custom_id in self.seen:
                first = self.seen[custom_id]
                raise OpenAIRequestError(
                    f"custom_id {custom_id!r} is repeated (first on line {first}): "
                    "each request needs its own",
                    "custom_id",
                    "duplicate_custom_id",
                )
            self.seen[custom_id] = line
            if request.get("method", "POST") != "POST":
                raise OpenAIRequestError("method must be POST", "method")
            if request.get("url") != self.endpoint:
                raise OpenAIRequestError(
                    f"url must be the batch's endpoint {self.endpoint!r}", "url", "invalid_url"
                )
            body = request.get("body")
            model = body_model(body)
            if self.model is not None and model != self.model:
                raise OpenAIRequestError(
                    f"model {model!r} differs from the batch's {self.model!r} (its first "
                    "usable line's): one model per batch",
                    "body.model",
                    "model_mismatch",
                )
            made = request_items(self.endpoint, custom_id, body, self.seed)
            self.model = model  # the first usable line names the batch's model
            return made
        except OpenAIRequestError as exc:
            if custom_id is None:
                key = f"{SEPARATOR}line{line}"
            elif self.seen.get(custom_id) != line:
                key = f"{custom_id}{SEPARATOR}dup{line}"
            else:
                key = custom_id
            where = f" ({exc.param})" if exc.param else ""
            return [Item(key=key, invalid=f"line {line}{where}: {exc}")]
