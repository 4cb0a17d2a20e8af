"""classify-image: any AutoModelForImageClassification directory with its image processor."""

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from schemas.jobs import Explanation, Item
from workers.explain.image import explain_images
from workers.handlers.base import Handler
from workers.handlers.outputs import top_labels
from workers.media_decoding import limits_from, load_image
from workers.safe_loading import load_pretrained, load_processor


@dataclass
class ImageFeatures:
    pixels: torch.Tensor  # (C, H, W), as the processor prepares it
    width: int
    height: int


class ImageClassifyHandler(Handler):
    def setup(self, model_path: str, device: str) -> None:
        from PIL import Image

        self.device = torch.device(device)
        self.processor = load_processor(AutoImageProcessor, model_path)
        self.model = load_pretrained(AutoModelForImageClassification, model_path)
        self.model.to(self.device).eval()
        config: Any = self.model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        # The reference image of Integrated Gradients: black, prepared like any input.
        self.baseline = self.prepare(Image.new("RGB", (64, 64))).unsqueeze(0)

    def prepare(self, image: Any) -> torch.Tensor:
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert isinstance(pixels, torch.Tensor)
        return pixels

    def preprocess(self, item: Item, params: dict[str, Any]) -> ImageFeatures:
        image = load_image(item, limits_from(params))
        return ImageFeatures(self.prepare(image), *image.size)

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
