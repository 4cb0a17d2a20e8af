"""Throughput per modality: the bare model loop against Sluice end to end, side by side, and
the image explainer choice (Integrated Gradients against Occlusion).

    .venv/bin/python bench/modalities.py [--images 1000] [--clips 200] [--records 5000]
                                         [--explainers 64] [--data-dir DIR]

Everything is measured in ONE invocation, on the same machine, one after the other, so the
ratios see roughly the same noise (absolute figures on a shared machine drift; ratios less).

(a) Bare: each task's handler in this process on the CPU: preprocess (decode, resample,
    check) and predict, batch by batch at SLUICE_MAX_BATCH_SIZE, after a warm-up batch.
(b) Sluice: the embedded stack (Redis, Ray head, Celery worker) with the same models; a
    warm-up job per task loads the actors; then, per task, submit -> every result persisted.
    Results are checked (all ok) outside the timed section. No explanations in (a) or (b).
(c) Image explainers on held-out digits: seconds per image, and faithfulness measured by
    deletion: the 10% most attributed grid cells are set to the baseline (black) and the drop
    in the predicted label's probability is averaged (higher = the map found what mattered);
    the same for 10% random cells, for reference.

(d) Audio batches of mixed lengths, as the actor merges them (one 30 s clip and 31 of
    0.8-2 s per batch, synthetic): the classifier's predict, which runs clips in groups of
    similar length, against one forward pass with every clip padded to the longest, batch
    by batch alternately; seconds, samples fed to the model, and their ratios. With
    --grouping-only, (d) alone.

The last line of output is one JSON object with the figures.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASKS = {"images": "classify-image", "audio": "classify-audio", "records": "classify-records"}
MODELS = {
    "images": "digits-classifier",
    "audio": "sounds-classifier",
    "records": "breast-cancer-classifier",
}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def make_inputs(data_dir: Path, counts: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Rows per modality: media by path (cycling through the samples, unique keys), records
    as feature dicts."""
    import csv

    from ops.demo_data import make_samples
    from schemas.settings import Settings

    samples = make_samples(Settings(data_dir=data_dir))
    images = sorted(p for p in samples["images"].iterdir())
    clips = sorted(p for p in samples["audio"].iterdir())
    with samples["records"].open(encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    return {
        "images": [
            {"id": f"i{n}", "path": str(images[n % len(images)])} for n in range(counts["images"])
        ],
        "audio": [
            {"id": f"a{n}", "path": str(clips[n % len(clips)])} for n in range(counts["audio"])
        ],
        "records": [{**records[n % len(records)], "id": f"r{n}"} for n in range(counts["records"])],
    }


def items_for(
    modality: str, rows: list[dict[str, Any]], features: list[dict[str, Any]]
) -> list[Any]:
    from schemas.jobs import Item
    from schemas.records import check_record

    if modality == "records":
        return [Item(key=r["id"], record=check_record(r, features, ("id",))[0]) for r in rows]
    return [Item(key=r["id"], path=r["path"]) for r in rows]


def run_bare(
    modality: str, rows: list[dict[str, Any]], model: Path, settings: Any
) -> dict[str, Any]:
    from dataclasses import asdict

    from producers.model_refs import record_features
    from schemas.catalog import load_catalog
    from workers.handlers import handler_for

    handler = handler_for(load_catalog().get(TASKS[modality]))
    handler.setup(str(model), "cpu")
    features = record_features(model) if modality == "records" else []
    items = items_for(modality, rows, features)
    params = {"media_limits": asdict(settings.media_limits())}
    batch = settings.max_batch_size
    handler.predict([handler.preprocess(i, params) for i in items[:batch]])  # warm-up
    t0 = time.perf_counter()
    done = 0
    for start in range(0, len(items), batch):
        done += len(
            handler.predict([handler.preprocess(i, params) for i in items[start : start + batch]])
        )
    seconds = time.perf_counter() - t0
    assert done == len(items)
    return {"seconds": seconds, "items_per_s": len(items) / seconds}


def write_input(data_dir: Path, modality: str, rows: list[dict[str, Any]]) -> Path:
    path = data_dir / f"bench-{modality}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_sluice(
    inputs: dict[str, list[dict[str, Any]]], models: Path, settings: Any
) -> dict[str, dict[str, Any]]:
    from ops import stack
    from producers import Client

    stack.up(settings)
    try:
        client = Client(settings)
        out = {}
        for modality, rows in inputs.items():
            model = str(models / MODELS[modality])
            warm = write_input(settings.data_dir, f"warm-{modality}", rows[:8])
            view = client.wait(
                client.submit_file(warm, TASKS[modality], model=model, key_column="id"), timeout=600
            )
            log(f"sluice: warm-up {modality} {view.status}")
            path = write_input(settings.data_dir, modality, rows)
            t0 = time.perf_counter()
            job_id = client.submit_file(path, TASKS[modality], model=model, key_column="id")
            view = client.wait(job_id, timeout=1800, poll=0.05)
            seconds = time.perf_counter() - t0
            log(f"sluice: {modality} {view.status} in {seconds:.2f}s")
            if view.counts.ok != len(rows):
                raise RuntimeError(f"{modality}: {view.counts.model_dump()}")
            out[modality] = {"seconds": seconds, "items_per_s": len(rows) / seconds}
        return out
    finally:
        stack.down(settings)


def compare_image_explainers(model: Path, n: int, steps: int) -> dict[str, dict[str, float]]:
    import torch

    from ops.demo_models import digits_holdout
    from workers.explain.image import INTEGRATED_GRADIENTS, OCCLUSION, explain_images
    from workers.handlers.image import ImageClassifyHandler

    handler = ImageClassifyHandler()
    handler.setup(str(model), "cpu")
    pixels = torch.stack([handler.prepare(img.convert("RGB")) for img, _ in digits_holdout()[:n]])
    with torch.no_grad():
        probs = handler.forward(pixels)
    targets = probs.argmax(-1).tolist()
    names = [handler.labels[t] for t in targets]
    rng = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, float]] = {}
    for method in (INTEGRATED_GRADIENTS, OCCLUSION):
        t0 = time.perf_counter()
        expls = []
        for start in range(0, n, 8):
            expls += explain_images(
                handler.forward,
                pixels[start : start + 8],
                handler.baseline,
                targets[start : start + 8],
                names[start : start + 8],
                method,
                steps,
                8,
            )
        seconds = (time.perf_counter() - t0) / n
        drops, random_drops = [], []
        for i, e in enumerate(expls):
            rows, cols = e.detail["grid"]  # type: ignore[index]
            cell = e.detail["cell"]  # type: ignore[index]
            k = max(1, rows * cols // 10)
            scores = torch.tensor(e.attributions)
            for chosen, sink in (
                (scores.topk(k).indices, drops),
                (torch.randperm(rows * cols, generator=rng)[:k], random_drops),
            ):
                masked = pixels[i].clone()
                for c in chosen.tolist():
                    r, q = divmod(c, cols)
                    masked[:, r * cell : (r + 1) * cell, q * cell : (q + 1) * cell] = (
                        handler.baseline[0, :, r * cell : (r + 1) * cell, q * cell : (q + 1) * cell]
                    )
                with torch.no_grad():
                    p = handler.forward(masked[None])[0, targets[i]].item()
                sink.append(probs[i, targets[i]].item() - p)
        out[method] = {
            "seconds_per_image": seconds,
            "deletion_drop": sum(drops) / n,
            "random_drop": sum(random_drops) / n,
        }
        log(
            f"explainer {method}: {seconds * 1000:.1f} ms/image, deletion drop "
            f"{out[method]['deletion_drop']:.3f} (random {out[method]['random_drop']:.3f})"
        )
    return out


def compare_audio_grouping(model: Path, batches: int) -> dict[str, float]:
    import numpy as np

    from workers.handlers.audio import AudioClassifyHandler, AudioFeatures
    from workers.handlers.base import length_groups
    from workers.training.synth_audio import SOUND_LABELS, synthesize

    handler = AudioClassifyHandler()
    handler.setup(str(model), "cpu")
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(batches):
        short = [
            synthesize(SOUND_LABELS[n % 4], rng.uniform(0.8, 2.0), handler.rate, rng)
            for n in range(31)
        ]
        long = synthesize("rising-chirp", 30.0, handler.rate, rng)
        runs.append([AudioFeatures(c) for c in [*short[:10], long, *short[10:]]])
    seconds = {"grouped": 0.0, "padded": 0.0}
    fed = {"grouped": 0, "padded": 0}
    handler.predict(runs[0][:4])  # warm-up
    for batch in runs:
        lengths = [f.length for f in batch]
        fed["padded"] += len(batch) * max(lengths)
        fed["grouped"] += sum(len(g) * max(lengths[i] for i in g) for g in length_groups(lengths))
        for name, predict in (("grouped", handler.predict), ("padded", handler.probabilities)):
            t0 = time.perf_counter()
            outputs = predict(batch)
            seconds[name] += time.perf_counter() - t0
            assert len(outputs) == len(batch)
    real = sum(f.length for batch in runs for f in batch)
    out = {
        "batches": batches,
        "grouped_s_per_batch": seconds["grouped"] / batches,
        "padded_s_per_batch": seconds["padded"] / batches,
        "speedup": seconds["padded"] / seconds["grouped"],
        "grouped_fed_per_real_sample": fed["grouped"] / real,
        "padded_fed_per_real_sample": fed["padded"] / real,
    }
    log(
        f"audio grouping: {out['grouped_s_per_batch']:.3f} s/batch grouped, "
        f"{out['padded_s_per_batch']:.3f} s/batch padded to the longest"
    )
    return out


def print_audio_grouping(r: dict[str, float]) -> None:
    print(
        f"\naudio batches of 32 (one 30 s clip, 31 of 0.8-2 s), {r['batches']:.0f} batches:\n"
        f"  grouped by length   {r['grouped_s_per_batch']:7.3f} s/batch  "
        f"{r['grouped_fed_per_real_sample']:6.2f} samples fed per real sample\n"
        f"  padded to longest   {r['padded_s_per_batch']:7.3f} s/batch  "
        f"{r['padded_fed_per_real_sample']:6.2f} samples fed per real sample\n"
        f"  padded / grouped    {r['speedup']:7.2f}x time"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--explainers", type=int, default=64, help="digits to explain")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--grouping-batches", type=int, default=3, help="audio batches for (d)")
    parser.add_argument("--grouping-only", action="store_true", help="run (d) alone")
    args = parser.parse_args(argv)

    from ops.demo_data import build_models, models_dir, samples_dir
    from schemas.settings import Settings

    temp = args.data_dir is None
    data_dir = (Path(tempfile.mkdtemp(prefix="sluice-bench-")) if temp else args.data_dir).resolve()
    settings = Settings(data_dir=data_dir)
    build_models(settings, [MODELS["audio"]] if args.grouping_only else list(MODELS.values()))
    models = models_dir(settings)
    if args.grouping_only:
        grouping = compare_audio_grouping(models / MODELS["audio"], args.grouping_batches)
        print_audio_grouping(grouping)
        print(json.dumps({"audio_grouping": {k: round(v, 4) for k, v in grouping.items()}}))
        if temp:
            shutil.rmtree(data_dir, ignore_errors=True)
        return 0
    inputs = make_inputs(
        data_dir, {"images": args.images, "audio": args.clips, "records": args.records}
    )
    settings.input_roots = str(samples_dir(settings))

    bare = {}
    for modality, rows in inputs.items():
        bare[modality] = run_bare(modality, rows, models / MODELS[modality], settings)
        log(f"bare: {modality} {bare[modality]['items_per_s']:.1f} items/s")
    sluice = run_sluice(inputs, models, settings)
    from schemas.catalog import load_catalog

    image_explainer = load_catalog().get("classify-image").explainer
    steps = settings.explain_steps or (image_explainer.steps if image_explainer else 24)
    explainers = compare_image_explainers(models / MODELS["images"], args.explainers, steps)
    grouping = compare_audio_grouping(models / MODELS["audio"], args.grouping_batches)

    print(
        f"\n{'modality':<10} {'items':>7} {'bare items/s':>13} {'sluice items/s':>15} {'ratio':>7}"
    )
    for modality, rows in inputs.items():
        b, s = bare[modality]["items_per_s"], sluice[modality]["items_per_s"]
        print(f"{modality:<10} {len(rows):>7} {b:>13.1f} {s:>15.1f} {s / b:>7.3f}")
    print(f"\nimage explainers on {args.explainers} digits ({steps} IG steps):")
    for method, r in explainers.items():
        print(
            f"  {method:<22} {r['seconds_per_image'] * 1000:7.1f} ms/image  deletion drop "
            f"{r['deletion_drop']:.3f}  (random cells {r['random_drop']:.3f})"
        )
    print_audio_grouping(grouping)
    print(
        json.dumps(
            {
                "throughput": {
                    m: {
                        "items": len(inputs[m]),
                        "bare_items_per_s": round(bare[m]["items_per_s"], 2),
                        "sluice_items_per_s": round(sluice[m]["items_per_s"], 2),
                        "ratio": round(sluice[m]["items_per_s"] / bare[m]["items_per_s"], 4),
                    }
                    for m in inputs
                },
                "image_explainers": {
                    k: {kk: round(vv, 5) for kk, vv in v.items()} for k, v in explainers.items()
                },
                "audio_grouping": {k: round(v, 4) for k, v in grouping.items()},
            }
        ),
        flush=True,
    )
    if temp:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
