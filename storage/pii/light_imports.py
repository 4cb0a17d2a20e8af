"""Presidio without the model stacks: presidio_analyzer imports spaCy, whose thinc imports
torch when it is installed, and Presidio's NER recognizers import transformers. Sluice uses
neither (a blank pipeline, pattern recognizers only), and a producer must never load them
(DESIGN: torch and transformers only under workers/): 11 s of CPU to import, 3 s without."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager

MODEL_STACKS = ("torch", "transformers")


@contextmanager
def without_model_stacks() -> Iterator[None]:
    """While Presidio is imported, `import torch` and `import transformers` fail (thinc and
    Presidio take that as "not installed"). A process that already holds them (a worker, a
    test) keeps them: nothing is blocked there."""
    blocked = [name for name in MODEL_STACKS if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
