"""How every model, tokenizer and processor is loaded, in the handlers and the training recipes
alike: weights from safetensors only (a pickled `.bin` could run code as it is read) and never
the model directory's own Python (`trust_remote_code=False`, so an `auto_map` is ignored)."""

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

# what makes `from_pretrained` safe; a caller cannot override them
SAFE_LOADING: Final[Mapping[str, Any]] = MappingProxyType(
    {"use_safetensors": True, "trust_remote_code": False}
)
# processors, feature extractors and image processors have no weights, only code to refuse
SAFE_PROCESSOR_LOADING: Final[Mapping[str, Any]] = MappingProxyType({"trust_remote_code": False})


def _load(loader: Any, path: str | Path, safe: Mapping[str, Any], options: dict[str, Any]) -> Any:
    overridden = sorted(set(options) & set(safe))
    if overridden:
        raise ValueError(f"{overridden} are fixed by workers.safe_loading and cannot be passed")
    return loader.from_pretrained(path, **options, **safe)


def load_pretrained(loader: Any, path: str | Path, **options: Any) -> Any:
    """`loader.from_pretrained(path, **options)` for a model or tokenizer (`loader` an
    `Auto*` class or a model class), with safetensors only and no custom code."""
    return _load(loader, path, SAFE_LOADING, options)


def load_processor(loader: Any, path: str | Path, **options: Any) -> Any:
    """`loader.from_pretrained(path, **options)` for a processor or feature extractor, with
    no custom code."""
    return _load(loader, path, SAFE_PROCESSOR_LOADING, options)
