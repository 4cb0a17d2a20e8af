"""What reading long inputs whole costs (issue 18), side by side in one run, handlers in process:

    .venv/bin/python bench/long_inputs.py [--texts 16] [--words 2000] [--clips 2]

- text: `embed` over N texts of --words words under `truncate` and under `windows`, with the
  windows per text: windows should cost about their count (no worse).
- audio: `transcribe` (the tone-digits CTC model) over 75 s clips read in windows against
  the same clips in one pass each (what a model without a window limit could do), and
  whether the windowed transcripts are exact.
The last line is one JSON object."""

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(run: Any, rounds: int = 3) -> float:
    """The best of `rounds` runs, seconds (the least disturbed by the machine's noise)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def text_case(texts: int, words: int) -> dict[str, Any]:
    from producers.model_refs import resolve
    from schemas.catalog import load_catalog
    from schemas.jobs import Item
    from workers.handlers import handler_for

    spec = load_catalog().get("embed")
    handler = handler_for(spec)
    handler.setup(str(resolve("all-MiniLM-L6-v2", spec, Path(tempfile.mkdtemp())).path), "cpu")
    sentence = "The parcel arrived late, the box was damaged and nobody answered the phone."
    body = " ".join([sentence] * (words // len(sentence.split()) + 1))
    items = [Item(key=str(n), text=f"({n}) {body}") for n in range(texts)]
    out: dict[str, Any] = {"texts": texts, "words": words}
    for policy in ("truncate", "windows"):
        feats = [handler.preprocess(i, {"long_text": policy}) for i in items]
        seconds = timed(lambda feats=feats: handler.predict(feats))
        out[policy] = {"texts_per_s": round(texts / seconds, 2), "windows": len(feats[0].windows)}
    out["windows_cost_per_window"] = round(
        out["truncate"]["texts_per_s"] / out["windows"]["texts_per_s"] / out["windows"]["windows"],
        3,
    )
    return out


def audio_case(clips: int) -> dict[str, Any]:
    import numpy as np
    import soundfile as sf

    from ops.demo_model_cache import build_all
    from schemas.catalog import load_catalog
    from schemas.jobs import Item
    from schemas.media_refs import MediaLimits
    from workers.handlers import handler_for
    from workers.handlers.audio import AudioFeatures
    from workers.training.synth_tones import random_digits, tone_digits

    models = ROOT / ".sluice" / "models"
    build_all(models, ["tone-digits-ctc"])
    handler = handler_for(load_catalog().get("transcribe"))
    handler.setup(str(models / "tone-digits-ctc"), "cpu")
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp())
    truth, feats = [], []
    params = {"media_limits": asdict(MediaLimits(roots=(str(folder),)))}
    for n in range(clips):
        digits = random_digits(rng, 375, 375)
        path = folder / f"{n}.wav"
        sf.write(path, tone_digits(digits, 16_000, rng), 16_000, subtype="FLOAT")
        truth.append(digits)
        feats.append(handler.preprocess(Item(key=str(n), path=str(path)), params))
    rows = handler.predict(feats)
    windowed = timed(lambda: handler.predict(feats), rounds=2)
    whole = timed(lambda: [handler.ctc_frames([AudioFeatures(f.samples)]) for f in feats], rounds=2)
    seconds = sum(f.length for f in feats) / 16_000
    return {
        "clips": clips,
        "audio_seconds": round(seconds, 1),
        "windows_per_clip": len(rows[0]["windows"]),
        "exact": all(r["text"] == t for r, t in zip(rows, truth, strict=True)),
        "windowed_audio_s_per_s": round(seconds / windowed, 1),
        "one_pass_audio_s_per_s": round(seconds / whole, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--clips", type=int, default=2)
    args = parser.parse_args()
    text = text_case(args.texts, args.words)
    print(
        f"embed, {text['texts']} texts of {text['words']} words: truncate "
        f"{text['truncate']['texts_per_s']} texts/s, windows {text['windows']['texts_per_s']} "
        f"texts/s ({text['windows']['windows']} windows each; cost per window "
        f"{text['windows_cost_per_window']}x a truncated text)"
    )
    audio = audio_case(args.clips)
    print(
        f"transcribe, {audio['clips']} clips of tone digits ({audio['audio_seconds']} s): "
        f"{audio['windows_per_clip']} windows each, {audio['windowed_audio_s_per_s']} s of audio "
        f"per s windowed vs {audio['one_pass_audio_s_per_s']} in one pass; exact: {audio['exact']}"
    )
    print(json.dumps({"text": text, "audio": audio}))


if __name__ == "__main__":
    main()
