"""The demo's generation job: digits spelled out by the toy sequence-to-sequence model that
`sluice models build` makes, so every row's text can be checked against the rule."""

import json
from pathlib import Path
from typing import Any

from ops.demo_data import build_models, models_dir, samples_dir
from schemas.settings import Settings

MODEL = "tiny-spell-seq2seq"
PROMPT = "Spell: {text}"
ROWS = 120


def generation_samples(settings: Settings) -> Path:
    """Digit strings of 1 to 12 digits, one per row, written once."""
    from workers.training.scratch_generators import random_digit_texts

    path = samples_dir(settings) / "digits.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"id": f"d{n:03d}", "digits": d} for n, d in enumerate(random_digit_texts(ROWS, 2))]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def submit_generation(client: Any, settings: Settings) -> str:
    build_models(settings, [MODEL])
    return str(
        client.submit_file(
            generation_samples(settings),
            "generate",
            model=str(models_dir(settings) / MODEL),
            key_column="id",
            text_column="digits",
            prompt=PROMPT,
            max_new_tokens=16,
        )
    )


def generation_truth(settings: Settings) -> dict[str, str]:
    """Each row's expected text: its digits spelled as words."""
    from workers.training.scratch_generators import spell_digits

    rows = map(json.loads, generation_samples(settings).read_text().splitlines())
    return {r["id"]: spell_digits(r["digits"]) for r in rows}
