"""What Sluice's image tasks cost next to the loop a user would write with transformers, side by
side in one run, handlers in process (issue 19):

    .venv/bin/python bench/vision.py [--images 256]

- `embed-image` (tiny-clip): the handler's batches against `CLIPModel.get_image_features` called
  once per image (the unbatched loop) and in batches of 32 (the batched loop); then the same on
  a randomly initialised CLIP of ViT-B/32's shape at 224 pixels (--base-images of them),
  where the model's own work is what a real one costs.
- `detect-objects` (shapes-detector): the handler over images of 3 sizes (batched by the shape
  the processor makes) against the transformers object-detection pipeline, one image a call.
Both include preprocessing (decoding the PNG files and the processor). The last line is one
JSON object."""

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from long_inputs import timed  # noqa: E402  (best of 3, as the other benchmarks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--base-images", type=int, default=64)
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image
    from transformers import (
        AutoImageProcessor,
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        pipeline,
    )

    from ops.demo_model_cache import build_all
    from schemas.catalog import load_catalog
    from schemas.jobs import Item
    from schemas.media_refs import MediaLimits
    from workers.handlers import handler_for
    from workers.training.synth_shapes import scene

    models = ROOT / ".sluice" / "models"
    build_all(models, ["tiny-clip", "shapes-detector"])
    catalog = load_catalog()
    figures: dict[str, Any] = {"images": args.images}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        paths = []
        for n in range(args.images):
            image, _ = scene(64, rng, most=1)
            width = (64, 96, 128)[n % 3]
            paths.append(root / f"{n}.png")
            image.resize((width, 64)).save(paths[-1])
        items = [Item(key=p.name, path=str(p)) for p in paths]
        params = {"media_limits": asdict(MediaLimits(roots=(str(root),)))}

        def run_handler(task: str, model: Path, extra: dict[str, Any], count: int) -> float:
            handler = handler_for(catalog.get(task))
            handler.setup(str(model), "cpu")

            def run() -> None:
                for at in range(0, count, 32):  # as the actor's batches
                    batch = items[at : min(at + 32, count)]
                    handler.predict([handler.preprocess(i, {**params, **extra}) for i in batch])

            return timed(run)

        def embed_case(clip: Path, count: int) -> dict[str, Any]:
            model = CLIPModel.from_pretrained(clip).eval()
            processor = AutoImageProcessor.from_pretrained(clip)

            def clip_loop(batch: int) -> None:
                with torch.inference_mode():
                    for at in range(0, count, batch):
                        images = [Image.open(p).convert("RGB") for p in paths[at : at + batch]]
                        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
                        model.get_image_features(pixel_values=pixels)

            sluice = run_handler("embed-image", clip, {}, count)
            one_by_one = timed(lambda: clip_loop(1))
            batched = timed(lambda: clip_loop(32))
            return {
                "images": count,
                "sluice_images_per_s": round(count / sluice, 1),
                "loop_one_by_one_images_per_s": round(count / one_by_one, 1),
                "loop_batched_images_per_s": round(count / batched, 1),
                "sluice_vs_one_by_one": round(one_by_one / sluice, 2),
                "sluice_vs_batched": round(batched / sluice, 2),
            }

        figures["embed_image_tiny_clip"] = embed_case(models / "tiny-clip", args.images)
        base = root / "clip-b32-shaped"
        CLIPModel(CLIPConfig()).save_pretrained(base)  # random weights: speed only
        CLIPImageProcessorPil().save_pretrained(base)
        figures["embed_image_vit_b32_shape"] = embed_case(base, args.base_images)
        detector = pipeline("object-detection", model=str(models / "shapes-detector"))
        sluice_detect = run_handler(
            "detect-objects", models / "shapes-detector", {"threshold": 0.5}, args.images
        )
        piped = timed(lambda: [detector(Image.open(p).convert("RGB"), threshold=0.5)
                               for p in paths])  # fmt: skip
        figures["detect_objects"] = {
            "sluice_images_per_s": round(args.images / sluice_detect, 1),
            "pipeline_images_per_s": round(args.images / piped, 1),
            "sluice_vs_pipeline": round(piped / sluice_detect, 2),
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
