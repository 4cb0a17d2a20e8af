"""What object storage costs against local files (issue 20), on moto's S3 server over HTTP on
127.0.0.1 (no network latency: a real S3 adds round trips, so these are floors).

    .venv/bin/python bench/object_store.py [--images 300] [--repeats 3]

Everything runs in ONE invocation, side by side; each measurement runs --repeats times and the
fastest counts.

(a) Accepting media references at submit: `media_item` per reference (what a list file or an
    API body goes through): local paths under an input root vs s3:// URIs (one HEAD each) vs
    one listing of a prefix (`items_from_prefix`, the stamps from the listing).
(b) Reading them in the worker: `item_bytes` per item (the stamp check and the read): local
    vs s3:// (a HEAD and a GET each).
(c) A model's first copy on a host (`ModelCache.fetch`: list, download, hash every file) vs
    the next job's `materialise` on that host (a cached copy: no request at all), for the
    tiny demo text classifier (~1 MB) saved here.

The last line of output is one JSON object with the figures.
"""

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from producers.adapters import adapter_for  # noqa: E402
from producers.adapters.media_items import media_item  # noqa: E402
from schemas.modalities import Modality  # noqa: E402
from schemas.settings import Settings  # noqa: E402
from storage.media_sources import item_bytes  # noqa: E402
from storage.model_artifacts import ModelCache  # noqa: E402
from storage.object_store import ObjectStore  # noqa: E402


def fastest(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    print("   runs:", ", ".join(f"{t:.3f}s" for t in times))
    return min(times)


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto's S3 server did not start")


def tiny_model(out: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, num_labels=2,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(out, safe_serialization=True)
    (out / "vocab.txt").write_text("\n".join(f"w{i}" for i in range(1000)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import boto3
    from PIL import Image

    proc, endpoint = start_moto()
    try:
        options = {"s3": {"endpoint_url": endpoint, "key": "k", "secret": "s"}}
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
            region_name="us-east-1",
        )  # fmt: skip
        s3.create_bucket(Bucket="bench")
        work = Path(tempfile.mkdtemp(prefix="sluice-bench-s3-"))
        root = work / "media"
        root.mkdir()
        for n in range(args.images):
            Image.new("RGB", (64, 64), (n % 256, 80, 160)).save(root / f"i{n}.png")
            s3.upload_file(str(root / f"i{n}.png"), "bench", f"media/i{n}.png")
        settings = Settings(
            input_roots=str(root), object_prefixes="s3://bench/media/", storage_options=options
        )
        local_refs = [str(root / f"i{n}.png") for n in range(args.images)]
        s3_refs = [f"s3://bench/media/i{n}.png" for n in range(args.images)]
        figures: dict[str, float] = {}

        print(f"(a) accepting {args.images} references at submit")
        local = fastest(
            args.repeats, lambda: [media_item(r, r, None, settings) for r in local_refs]
        )
        heads = fastest(args.repeats, lambda: [media_item(r, r, None, settings) for r in s3_refs])
        adapter = adapter_for(Modality.IMAGE)
        listing = fastest(
            args.repeats, lambda: adapter.items_from_prefix("s3://bench/media/", settings)
        )
        figures |= {
            "submit_local_per_s": args.images / local,
            "submit_s3_head_per_s": args.images / heads,
            "submit_s3_prefix_per_s": args.images / listing,
        }

        print(f"(b) reading {args.images} items in the worker")
        limits, store = settings.media_limits(), ObjectStore(options)
        local_items = [media_item(r, r, None, settings) for r in local_refs]
        s3_items = [media_item(r, r, None, settings) for r in s3_refs]

        def read(items: list) -> None:
            for i in items:
                item_bytes(i.data, i.path, i.stamp, limits, store)

        read_local = fastest(args.repeats, lambda: read(local_items))
        read_s3 = fastest(args.repeats, lambda: read(s3_items))
        figures |= {
            "read_local_per_s": args.images / read_local,
            "read_s3_per_s": args.images / read_s3,
        }

        print("(c) a model's first copy on a host vs the next job's")
        model = tiny_model(work / "model")
        store.upload_dir(model, "s3://bench/models/tiny")
        size = sum(p.stat().st_size for p in model.iterdir())
        firsts = []
        for n in range(args.repeats):
            cache = ModelCache(work / f"cache-{n}", store)
            started = time.perf_counter()
            _, digest = cache.fetch("s3://bench/models/tiny")
            firsts.append(time.perf_counter() - started)
        cached = fastest(args.repeats, lambda: cache.materialise("s3://bench/models/tiny", digest))
        figures |= {
            "model_bytes": float(size),
            "model_first_copy_s": min(firsts),
            "model_cached_s": cached,
        }
    finally:
        proc.kill()
    print()
    print(f"submit: local {figures['submit_local_per_s']:.0f}/s, s3 one HEAD each "
          f"{figures['submit_s3_head_per_s']:.0f}/s "
          f"({figures['submit_s3_head_per_s'] / figures['submit_local_per_s']:.2f}x), "
          f"s3 prefix listing {figures['submit_s3_prefix_per_s']:.0f}/s")  # fmt: skip
    print(f"worker read: local {figures['read_local_per_s']:.0f}/s, s3 "
          f"{figures['read_s3_per_s']:.0f}/s "
          f"({figures['read_s3_per_s'] / figures['read_local_per_s']:.2f}x)")  # fmt: skip
    print(f"model ({size / 2**20:.1f} MiB): first copy {figures['model_first_copy_s']:.3f}s, "
          f"cached {figures['model_cached_s'] * 1000:.2f} ms")  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
