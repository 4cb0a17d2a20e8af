"""Text throughput: Sluice end to end against the loops a user would write, side by side.

    .venv/bin/python bench/embed_throughput.py [--docs 2000] [--mix-docs 192]
        [--task-docs 1000] [--cases embed,embed-mix,classify-text,zero-shot-text]
        [--rounds 2] [--no-ray-data] [--data-dir DIR] [--json-out FILE]

Everything runs in ONE invocation, one measurement after the other, over the same texts: on
a shared machine throughput drifts with whatever else runs, so figures from separate runs are
not comparable; taken back to back they see about the same noise, and their RATIOS are what
this reports (issue 16's targets). Treat single figures as noisy; repeat when it matters.

Cases (model all-MiniLM-L6-v2; classify-text on a classifier of its size, built here):
- embed: N short English/Chinese messages (5 to 25 tokens, ops/samples/messages.jsonl).
- embed-mix: texts of 10 to 500 tokens, log-uniform (truncated at the model's 256).
- classify-text, zero-shot-text (five labels): short messages.

First, for embed, the Ray Data pipeline (`from_items` -> `map_batches(cls, batch_size=64,
concurrency=1, num_cpus=2)`, bench/text_loops.py) on a private Ray instance. Then, with the
embedded stack up (redis, a Ray head, a Celery worker; fresh data dir), per case a warm-up
job (the actor loaded, each Celery child joined to Ray) and --rounds rounds of: the loop a
user writes in this process (batches of 64 in input order, the tokenizer's batch call, one
forward pass each), the same loop over the texts sorted by token count, and Sluice end to
end (submit -> wait -> finished, every result in the ledger; read back and checked after
the clock stops). Alternating them lets drift in a shared machine's load hit all three
alike; a ratio is the median of the rounds' ratios. The actor's batch fill and token fill
over each job are read from its stats, and the CPU seconds of every stack process by role.

On a GPU host the loops and Sluice run on the GPU, in the precision SLUICE_INFERENCE_DTYPE
resolves to there (bench/gpu_check.sh). The last line of output is one JSON object.
"""

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack_probes as probes  # noqa: E402  (bench/ is not a package)
import text_loops as loops  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
CASES = ("embed", "embed-mix", "classify-text", "zero-shot-text")
TASK_OF = {"embed-mix": "embed"}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def texts_for(case: str, args: argparse.Namespace, tokenizer: Any) -> list[str]:
    if case == "embed":
        return loops.short_messages(args.docs)
    if case == "embed-mix":
        return loops.length_mix(args.mix_docs, tokenizer)
    return loops.short_messages(args.task_docs)


# -- rounds: the loops and Sluice, alternated -----------------------------------------------


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput (with its other figures)."""
    return sorted(runs, key=lambda r: float(r["items_per_s"]))[len(runs) // 2]


def run_rounds(
    cases: list[str],
    texts: dict[str, list[str]],
    models: dict[str, str],
    settings: Any,
    setup: tuple[str, str, int],
    rounds: int,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, float]]]:
    """Per case: `rounds` x (input-order loop, sorted loop, Sluice job), with the stack up
    throughout, so that drift in the machine's load hits all three alike. Medians of
    each, and the median of the per-round ratios."""
    from ops import stack
    from producers import Client

    device, dtype, max_length = setup
    if stack.running(settings):
        raise SystemExit(f"a stack is already running in {settings.data_dir}; pick another")
    t0 = time.perf_counter()
    stack.up(settings)
    loops_out: dict[str, Any] = {}
    sluice: dict[str, Any] = {}
    per_round: dict[str, dict[str, float]] = {}
    try:
        log(f"sluice: stack up in {time.perf_counter() - t0:.1f}s ({settings.data_dir})")
        client = Client(settings)
        for n, case in enumerate(cases):
            task = TASK_OF.get(case, case)
            warm_sluice(client, settings, task, models, first=n == 0)
            model = loops.TextModel(models[task], task, max_length, device, dtype)
            loops.warm(model, texts[case])
            runs = []
            for r in range(rounds):
                plain = loops.plain_loop(model, texts[case])
                ordered = loops.sorted_loop(model, texts[case])
                job = sluice_job(client, settings, case, texts[case], models)
                runs.append((plain, ordered, job))
                log(
                    f"{case} round {r + 1}: loop {plain['items_per_s']:.1f}, sorted loop "
                    f"{ordered['items_per_s']:.1f}, sluice {job['items_per_s']:.1f} items/s "
                    f"(batch fill {job['batch_fill']}, token fill {job['token_fill']}; "
                    f"CPU s {job['cpu_s']})"
                )
            del model
            gc.collect()
            loops_out[case] = {
                "input_order": median_run([p for p, _, _ in runs]),
                "sorted": median_run([o for _, o, _ in runs]),
            }
            sluice[case] = median_run([j for _, _, j in runs])
            per_round[case] = {
                "vs input-order loop": statistics.median(
                    j["items_per_s"] / p["items_per_s"] for p, _, j in runs
                ),
                "vs sorted loop": statistics.median(
                    j["items_per_s"] / o["items_per_s"] for _, o, j in runs
                ),
            }
    finally:
        log("sluice: stopping the stack")
        stack.down(settings)
    return loops_out, sluice, per_round


# -- Sluice end to end -------------------------------------------------------------------------


def submit_options(task: str, models: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {"cache": False}
    if task == "classify-text":
        options["model"] = models[task]
    if task == "zero-shot-text":
        options["labels"] = loops.LABELS
    return options


def warm_sluice(client: Any, settings: Any, task: str, models: dict[str, str], first: bool) -> None:
    """Before the clock: each Celery child joins Ray (a chunk each, the last of one item)
    and the task's actor loads its model; for later tasks only the actor loads."""
    from schemas.catalog import load_catalog

    chunk = int(settings.chunk_size or load_catalog().get(task).chunk_size)
    n_warm = chunk * (settings.worker_concurrency - 1) + 1 if first else 8
    t0 = time.perf_counter()
    warm_id = client.submit_texts(
        loops.short_messages(n_warm), task, **submit_options(task, models)
    )
    warm_view = client.wait(warm_id, timeout=600)
    if warm_view.counts.ok != n_warm:
        raise RuntimeError(f"warm-up {warm_id}: {warm_view.counts.model_dump()}")
    log(f"sluice {task}: warm-up of {n_warm} in {time.perf_counter() - t0:.1f}s")


def sluice_job(
    client: Any, settings: Any, case: str, texts: list[str], models: dict[str, str]
) -> dict[str, Any]:
    """One timed job: submit -> wait -> finished (every result in the ledger); the results
    are read back and checked after the clock stops."""
    from schemas.catalog import load_catalog

    task = TASK_OF.get(case, case)
    before = probes.actor_stats(settings).get(task, {})
    cpu_before = probes.stack_cpu(settings)
    window = [time.time()]
    t0 = time.perf_counter()
    job_id = client.submit_texts(texts, task, **submit_options(task, models))
    submit_s = time.perf_counter() - t0
    view = client.wait(job_id, timeout=1800, poll=0.1)
    seconds = time.perf_counter() - t0
    window.append(time.time())
    cpu = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in probes.stack_cpu(settings).items()}
    fill = probes.fill_between(before, probes.actor_stats(settings).get(task, {}))
    rows = list(client.results(job_id))
    ok = sum(1 for r in rows if r["status"] == "ok" and r.get("output"))
    return {
        "items_per_s": len(texts) / seconds,
        "seconds": seconds,
        "submit_s": submit_s,
        "status": str(view.status),
        "ok_rows": ok,
        "chunk_size": int(settings.chunk_size or load_catalog().get(task).chunk_size),
        "cpu_s": cpu,
        "window": window,
        **fill,
    }


# -- report ------------------------------------------------------------------------------------


def ratios(
    per_round: dict[str, dict[str, float]], sluice: dict[str, Any], ray_data: dict[str, Any] | None
) -> dict[str, float]:
    out = {f"{case} {name}": value for case, r in per_round.items() for name, value in r.items()}
    if ray_data and "embed" in sluice:
        out["embed vs Ray Data"] = sluice["embed"]["items_per_s"] / ray_data["items_per_s"]
    return out


TARGETS = {"vs input-order loop": 1.0, "vs sorted loop": 0.9, "vs Ray Data": 1.7}


def print_report(
    loops_out: dict[str, Any],
    sluice: dict[str, Any],
    ray_data: dict[str, Any] | None,
    found: dict[str, float],
    context: dict[str, Any],
) -> None:
    print()
    print(
        f"text throughput, model {MODEL}, device {context['device']} ({context['dtype']}), "
        f"{os.cpu_count()} CPUs; load before: {context['load_before']}"
    )
    print(f"{'case':<16} {'texts':>6} {'loop':>8} {'sorted':>8} {'sluice':>8}  items/s; fills")
    for case, s in sluice.items():
        lo = loops_out[case]
        print(
            f"{case:<16} {context['sizes'][case]:>6} {lo['input_order']['items_per_s']:>8.1f} "
            f"{lo['sorted']['items_per_s']:>8.1f} {s['items_per_s']:>8.1f}  "
            f"loop token fill {lo['input_order']['token_fill']:.2f}; sluice batch fill "
            f"{s['batch_fill']}, token fill {s['token_fill']}, chunk {s['chunk_size']}"
        )
    print()
    print("CPU seconds per 1,000 texts (robust to a busy machine; all stack processes):")
    for case, s in sluice.items():
        n = context["sizes"][case] / 1000
        loop_cpu = loops_out[case]["input_order"]["cpu_s"] / n
        sorted_cpu = loops_out[case]["sorted"]["cpu_s"] / n
        parts = ", ".join(f"{k} {v / n:.1f}" for k, v in sorted(s["cpu_s"].items()))
        total = sum(s["cpu_s"].values()) / n
        print(
            f"  {case:<16} loop {loop_cpu:.1f}, sorted {sorted_cpu:.1f}; "
            f"sluice {total:.1f} = {parts}"
        )
    if ray_data:
        print(f"{'Ray Data embed':<16} {context['sizes']['embed']:>6} "
              f"{ray_data['items_per_s']:>8.1f}")  # fmt: skip
    print()
    for name, value in found.items():
        target = next(t for suffix, t in TARGETS.items() if name.endswith(suffix))
        verdict = "ok" if value >= target else "BELOW"
        print(f"{name:<40} {value:6.3f}x  (target >= {target}x: {verdict})")
    print(f"load after: {context['load_after']}")
    print()


def uptime() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="short messages to embed")
    parser.add_argument("--mix-docs", type=int, default=192, help="texts of 10-500 tokens")
    parser.add_argument("--task-docs", type=int, default=1000, help="classify/zero-shot texts")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="loops and Sluice, alternated")
    parser.add_argument("--no-ray-data", action="store_true", help="skip the Ray Data pipeline")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temp dir")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := sorted(set(cases) - set(CASES)):
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")

    from producers import model_refs
    from schemas.catalog import load_catalog
    from schemas.settings import Settings

    temp = args.data_dir is None
    data_dir = (Path(tempfile.mkdtemp(prefix="sluice-bench-")) if temp else args.data_dir).resolve()
    settings = Settings(data_dir=data_dir)
    load_before = uptime()
    embed_dir = model_refs.resolve(MODEL, load_catalog().get("embed"), data_dir).path
    models = {"embed": str(embed_dir), "zero-shot-text": str(embed_dir)}
    if "classify-text" in cases:
        built = loops.build_classifier(embed_dir, data_dir / "bench-classifier")
        models["classify-text"] = str(built)
    device, dtype, max_length, tokenizer = loops.device_setup(str(embed_dir), settings)
    texts = {case: texts_for(case, args, tokenizer) for case in cases}
    log(f"cases {cases}; device {device} ({dtype}); data dir {data_dir}")

    ray_data = None
    if "embed" in cases and not args.no_ray_data:
        ray_data = loops.ray_data(
            models["embed"], "embed", max_length, texts["embed"], log, device, dtype
        )
        log(f"ray data: {ray_data['items_per_s']:.1f} items/s")
    loops_out, sluice, per_round = run_rounds(
        cases, texts, models, settings, (device, dtype, max_length), args.rounds
    )
    found = ratios(per_round, sluice, ray_data)
    context = {
        "device": device,
        "dtype": dtype,
        "load_before": load_before,
        "load_after": uptime(),
        "sizes": {case: len(t) for case, t in texts.items()},
    }
    print_report(loops_out, sluice, ray_data, found, context)
    summary = {
        "ratios": {k: round(v, 3) for k, v in found.items()},
        "items_per_s": {
            case: {
                "input_order_loop": round(loops_out[case]["input_order"]["items_per_s"], 1),
                "sorted_loop": round(loops_out[case]["sorted"]["items_per_s"], 1),
                "sluice": round(s["items_per_s"], 1),
                "batch_fill": s["batch_fill"],
                "token_fill": s["token_fill"],
                "actor_device": s.get("device"),
                "actor_dtype": s.get("dtype"),
            }
            for case, s in sluice.items()
        },
        "ray_data_items_per_s": round(ray_data["items_per_s"], 1) if ray_data else None,
        # wall-clock bounds of each timed section (bench/gpu_check.sh matches GPU samples)
        "windows": {
            **{f"{c} loop": lo["input_order"]["window"] for c, lo in loops_out.items()},
            **{f"{c} sorted loop": lo["sorted"]["window"] for c, lo in loops_out.items()},
            **{f"{c} sluice": s["window"] for c, s in sluice.items()},
            **({"embed ray data": ray_data["window"]} if ray_data else {}),
        },
        **context,
    }
    line = json.dumps(summary)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    ok = all(
        s["status"] == "succeeded" and s["ok_rows"] == len(texts[c]) for c, s in sluice.items()
    )
    if not ok:
        log(f"a Sluice job did not succeed whole: {sluice}; data dir kept: {data_dir}")
    elif temp:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
