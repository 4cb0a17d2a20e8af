"""How the ledger writes and reads its JSON columns: orjson, which encodes a 384-float
embedding about 15x faster than the standard library (measured: 19 us against 365 us) and
decodes it several times faster; outputs and explanations are mostly floats. A value orjson
refuses (an int beyond 64 bits, a NaN literal in an old row) goes through `json` as before."""

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS  # {1: ...} becomes {"1": ...}, as json.dumps does


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value)


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
