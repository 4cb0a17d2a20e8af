"""classify-image: any AutoModelForImageClassification directory with its image processor."""

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from schemas.jobs import Explanation, Item
from workers.explain.image import INTEGRATED_GRADIENTS, explain_images
from workers.handlers.base import Handler
from workers.media import limits_from, load_image

LOAD = {"use_safetensors": True, "trust_remote_code": False}
MAX_LISTED_LABELS = 5


@dataclass
class ImageFeatures:
    pixels: torch.Tensor  # (C, H, W), as the processor prepares it
    width: int
    height: int


def top_labels(probs: list[float], labels: list[str]) -> dict[str, Any]:
    """The best label, its score, and the probabilities of the few most likely ones."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    return {
        "label": labels[order[0]],
        "score": round(probs[order[0]], 6),
        "probabilities": {labels[i]: round(probs[i], 6) for i in order[:MAX_LISTED_LABELS]},
    }


class ImageClassifyHandler(Handler):
    task = "classify-image"
    modality = "image"
    # Measured against occlusion in bench/modalities.py; see the README's explanations section.
    explain_method = INTEGRATED_GRADIENTS

    def setup(self, model_path: str, device: str) -> None:
        from PIL import Image

        self.device = torch.device(device)
        self.processor = AutoImageProcessor.from_pretrained(model_path)
        self.model = AutoModelForImageClassification.from_pretrained(model_path, **LOAD)
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


HANDLERS: dict[str, type[Handler]] = {ImageClassifyHandler.task: ImageClassifyHandler}
