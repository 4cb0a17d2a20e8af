"""embed-image: L2-normalised image embeddings from CLIP's image tower (or any image-text
model's) or from a vision encoder (workers/vision_towers.py). With the same CLIP directory,
`embed` on texts uses the text tower, so a text's and an image's cosine compare them."""

from typing import Any

import torch
from transformers import AutoModel

from workers.handlers.image import ImageFeatures, ImageHandler, run_by_shape
from workers.runtime.devices import torch_dtype
from workers.safe_loading import load_pretrained
from workers.vision_towers import image_vectors, untrained_pooler


class ImageEmbedHandler(ImageHandler):
    def setup(self, model_path: str, device: str) -> None:
        self.device = torch.device(device)
        self.load_processor(model_path)
        model, loading = load_pretrained(AutoModel, model_path, output_loading_info=True)
        self.use_pooler = not untrained_pooler(list(loading.get("missing_keys") or []))
        self.model = model.to(self.device, dtype=torch_dtype(self.inference_dtype)).eval()

    def predict(self, batch: list[ImageFeatures]) -> list[dict[str, Any]]:
        dtype = next(self.model.parameters()).dtype

        def run(_: list[ImageFeatures], pixels: torch.Tensor) -> list[list[float]]:
            with torch.inference_mode():
                pixels = pixels.to(self.device, dtype=dtype)
                vectors = image_vectors(self.model, pixels, self.use_pooler)
            return vectors.cpu().numpy().round(7).tolist()  # type: ignore[no-any-return]

        vectors = run_by_shape(batch, run)
        return [
            {"embedding": v, "dim": len(v), "image_size": [f.width, f.height]}
            for v, f in zip(vectors, batch, strict=True)
        ]
