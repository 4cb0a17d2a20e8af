"""classify-image: any AutoModelForImageClassification directory with its image processor;
and what every image task shares: an item read as the model's processor prepares it."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from schemas.jobs import Explanation, Item
from workers.explain.image import explain_images
from workers.handlers.base import Handler, R
from workers.handlers.outputs import top_labels
from workers.media_decoding import limits_from, load_image
from workers.safe_loading import load_pretrained, load_processor


@dataclass
class ImageFeatures:
    pixels: torch.Tensor  # (C, H, W), as the processor prepares it
    width: int
    height: int


F = TypeVar("F", bound=ImageFeatures)


class ImageHandler(Handler):
    """An image item decoded under the job's limits (workers/media_decoding.py: bombs,
    truncated files and references outside the roots are `invalid`), then prepared by the
    model's own image processor."""

    processor: Any

    def load_processor(self, model_path: str) -> None:
        self.processor = load_processor(AutoImageProcessor, model_path)

    def prepare(self, image: Any) -> torch.Tensor:
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert isinstance(pixels, torch.Tensor)
        return pixels

    def preprocess(self, item: Item, params: dict[str, Any]) -> ImageFeatures:
        image = load_image(item, limits_from(params))
        return ImageFeatures(self.prepare(image), *image.size)

    def black(self) -> torch.Tensor:
        """Integrated Gradients' reference image: black, as the processor prepares it."""
        from PIL import Image

        return self.prepare(Image.new("RGB", (64, 64)))


def run_by_shape(batch: list[F], run: Callable[[list[F], torch.Tensor], list[R]]) -> list[R]:
    """`run(group, pixels)` on each group of inputs the processor made the same shape, with
    their pixels stacked; the results back in input order. Processors that keep the aspect
    ratio (DETR, YOLOS) make one shape per image size, and padding a smaller image to a
    larger one changes what a model without a pixel mask (or with convolutions across the
    mask's edge) sees: grouped by shape, each image's output is what it would be alone."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, features in enumerate(batch):
        groups.setdefault(tuple(features.pixels.shape), []).append(i)
    out: list[Any] = [None] * len(batch)
    for idx in groups.values():
        group = [batch[i] for i in idx]
        pixels = torch.stack([f.pixels for f in group])
        for i, result in zip(idx, run(group, pixels), strict=True):
            out[i] = result
    return out


class ImageClassifyHandler(ImageHandler):
    def setup(self, model_path: str, device: str) -> None:
        self.device = torch.device(device)
        self.load_processor(model_path)
        self.model = load_pretrained(AutoModelForImageClassification, model_path)
        self.model.to(self.device).eval()
        config: Any = self.model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.baseline = self.black().unsqueeze(0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(pixel_values=pixels).logits, dim=-1)

    def predict(self, batch: list[ImageFeatures]) -> list[dict[str, Any]]:
        pixels = torch.stack([f.pixels for f in batch]).to(self.device)
        with torch.inference_mode():
            probs = self.forward(pixels).float().cpu().tolist()
        return [
            {**top_labels(row, self.labels), "image_size": [f.width, f.height]}
            for row, f in zip(probs, batch, strict=True)
        ]

    def confidence(self, output: dict[str, Any]) -> float | None:
        return float(output["score"])

    def explain(
        self,
        batch: list[ImageFeatures],
        outputs: list[dict[str, Any]],
        steps: int,
        internal_batch_size: int,
    ) -> list[Explanation]:
        pixels = torch.stack([f.pixels for f in batch]).to(self.device)
        targets = [self.labels.index(o["label"]) for o in outputs]
        return explain_images(
            self.forward,
            pixels,
            self.baseline.to(self.device),
            targets,
            [o["label"] for o in outputs],
            self.explain_method,
            steps,
            internal_batch_size,
        )
