"""The loops Sluice's text tasks are measured against (bench/embed_throughput.py runs them):
what a user writes with transformers alone, and a Ray Data pipeline.

- `plain_loop`: batches of 64 texts in input order, each tokenised by the tokenizer's batch
  call (padded to the batch's longest), one forward pass, mean pooling (embed, zero-shot) or
  a softmax (classify), results as lists. `sorted_loop`: the same over the texts sorted by
  token count (what a user who knows about padding writes).
- `ray_data`: `from_items` -> `map_batches(cls, batch_size=64, concurrency=1, num_cpus=2)`
  with the same per-batch code, on a private local Ray instance.

Every loop truncates at the handler's max_length (the sentence-transformers max_seq_length,
256 for all-MiniLM-L6-v2), so it does the same work as Sluice's handlers.
"""

import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "ops" / "samples" / "messages.jsonl"
BATCH = 64
LABELS = ["billing", "technical", "account", "shipping", "praise"]
ZERO_SHOT_SCALE = 20.0  # workers/handlers/text.py's


def sample_texts() -> list[str]:
    rows = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line]
    return [str(r["text"]) for r in rows if r.get("text")]


def short_messages(n: int) -> list[str]:
    """N unique short messages (5 to 25 tokens): the samples, cycled, each with a suffix."""
    base = sample_texts()
    return [f"{base[i % len(base)]} (ref {i})" for i in range(n)]


def length_mix(n: int, tokenizer: Any, lo: int = 10, hi: int = 500, seed: int = 0) -> list[str]:
    """N texts of lo..hi tokens, log-uniform (many short, few long: tickets, reviews and
    the odd long e-mail), made by joining sample messages up to each target length."""
    rng = random.Random(seed)
    base = sample_texts()
    lengths = {t: len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in base}
    out = []
    for i in range(n):
        target = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        parts: list[str] = [f"(ref {i})"]
        total = 3
        while total < target:
            text = rng.choice(base)
            parts.append(text)
            total += lengths[text]
        out.append(" ".join(parts))
    return out


def device_setup(model_dir: str, settings: Any) -> tuple[str, str, int, Any]:
    """The device and precision the loops run in (those Sluice's actor picks: a GPU when
    there is one, SLUICE_INFERENCE_DTYPE resolved there), the texts' max length (the
    sentence-transformers max_seq_length the handler uses) and a tokenizer."""
    import torch
    from transformers import AutoTokenizer

    from workers.runtime.devices import resolve_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = resolve_dtype(settings.inference_dtype, device)
    st_config = Path(model_dir) / "sentence_bert_config.json"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    limit = min(512, tokenizer.model_max_length)
    if st_config.is_file():
        limit = int(json.loads(st_config.read_text()).get("max_seq_length") or limit)
    return device, dtype, limit, tokenizer


class TextModel:
    """The per-batch code of the loops: tokenise, forward, pool. `task` is embed,
    classify-text or zero-shot-text."""

    def __init__(
        self, model_dir: str, task: str, max_length: int, device: str = "cpu", dtype: str = ""
    ) -> None:
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.task = task
        self.max_length = max_length
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        loader = AutoModelForSequenceClassification if task == "classify-text" else AutoModel
        model = loader.from_pretrained(model_dir, use_safetensors=True)
        self.model = model.to(device, dtype=getattr(torch, dtype or "float32")).eval()
        self.label_vectors = self.embed(LABELS) if task == "zero-shot-text" else None

    def tokens(self, texts: list[str]) -> Any:
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return enc.to(self.device) if self.device != "cpu" else enc

    def embed(self, texts: list[str]) -> Any:
        torch = self.torch
        enc = self.tokens(texts)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state.float()
            weights = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    def run(self, texts: list[str]) -> list[Any]:
        torch = self.torch
        if self.task == "classify-text":
            with torch.inference_mode():
                logits = self.model(**self.tokens(texts)).logits
            return torch.softmax(logits.float(), dim=-1).tolist()  # type: ignore[no-any-return]
        vectors = self.embed(texts)
        if self.label_vectors is not None:
            probs = torch.softmax(vectors @ self.label_vectors.T * ZERO_SHOT_SCALE, dim=-1)
            return probs.tolist()  # type: ignore[no-any-return]
        return vectors.tolist()  # type: ignore[no-any-return]


def token_counts(model: TextModel, texts: list[str]) -> list[int]:
    enc = model.tokenizer(texts, truncation=True, max_length=model.max_length)
    return [len(ids) for ids in enc["input_ids"]]


def timed_loop(model: TextModel, texts: list[str], batch: int = BATCH) -> dict[str, Any]:
    """One pass of batches over `texts` in the order given: items/s and the padding."""
    real = padded = 0
    window = [time.time()]  # wall-clock bounds, to match GPU utilisation samples (gpu_check)
    started, cpu_started = time.perf_counter(), time.process_time()
    for start in range(0, len(texts), batch):
        part = texts[start : start + batch]
        outputs = model.run(part)
        assert len(outputs) == len(part)
    seconds = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    window.append(time.time())
    counts = token_counts(model, texts)
    for start in range(0, len(counts), batch):
        part_counts = counts[start : start + batch]
        real += sum(part_counts)
        padded += len(part_counts) * max(part_counts)
    return {
        "items_per_s": len(texts) / seconds,
        "seconds": seconds,
        "cpu_s": cpu_s,
        "token_fill": real / padded,
        "window": window,
    }


def plain_loop(model: TextModel, texts: list[str]) -> dict[str, Any]:
    return timed_loop(model, texts)


def sorted_loop(model: TextModel, texts: list[str]) -> dict[str, Any]:
    """Texts sorted by token count (the sort itself is timed: a user's loop does it too)."""
    started = time.perf_counter()
    counts = token_counts(model, texts)
    ordered = [texts[i] for i in sorted(range(len(texts)), key=counts.__getitem__)]
    sort_s = time.perf_counter() - started
    result = timed_loop(model, ordered)
    seconds = result["seconds"] + sort_s
    return {**result, "seconds": seconds, "items_per_s": len(texts) / seconds}


def warm(model: TextModel, texts: list[str]) -> None:
    for start in range(0, min(len(texts), 2 * BATCH), BATCH):
        model.run(texts[start : start + BATCH])


def ray_data(
    model_dir: str,
    task: str,
    max_length: int,
    texts: list[str],
    log: Callable[[str], None],
    device: str = "cpu",
    dtype: str = "",
) -> dict[str, Any]:
    """The Ray Data pipeline a user writes, on a private local Ray instance (started and
    warmed outside the timed section: one small run first)."""
    import logging

    import ray
    import ray.data

    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        num_cpus=max(2, os.cpu_count() or 2),
    )
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False

        class Predict:
            def __init__(self) -> None:
                self.model = TextModel(model_dir, task, max_length, device, dtype)

            def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
                return {"out": self.model.run(list(batch["text"]))}

        def pipeline(part: list[str]) -> int:
            items = ray.data.from_items([{"text": t} for t in part])
            gpus = 1 if device != "cpu" else 0
            predicted = items.map_batches(
                Predict, batch_size=BATCH, concurrency=1, num_cpus=2, num_gpus=gpus
            )
            return sum(1 for _ in predicted.iter_rows())

        t0 = time.perf_counter()
        pipeline(texts[:BATCH])
        log(f"ray data: warm-up run in {time.perf_counter() - t0:.1f}s")
        window = [time.time()]
        started = time.perf_counter()
        done = pipeline(texts)
        seconds = time.perf_counter() - started
        window.append(time.time())
        if done != len(texts):
            raise RuntimeError(f"ray data gave {done} rows for {len(texts)} texts")
        return {"items_per_s": len(texts) / seconds, "seconds": seconds, "window": window}
    finally:
        ray.shutdown()


def build_classifier(model_dir: Path, out: Path) -> Path:
    """A text classifier of the encoder's size (its weights, a seeded head of len(LABELS)
    labels) saved as safetensors: classify-text's work without a download."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: n for n, label in enumerate(LABELS)},
        use_safetensors=True,
    )
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out
