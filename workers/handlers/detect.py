"""detect-objects: any AutoModelForObjectDetection directory (DETR, YOLOS, RT-DETR families)
with its image processor, post-processed by that processor exactly as the transformers
`object-detection` pipeline does: boxes in the input image's pixels, labels, scores above the
job's threshold. Explained per box: a saliency grid for the box's score."""

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForObjectDetection

from schemas.jobs import Explanation, Item
from schemas.vision_params import DEFAULT_THRESHOLD
from workers.explain.image import cell_size, to_grid
from workers.explain.tensors import failed_explanation, integrated_gradients, short
from workers.handlers.image import ImageFeatures, ImageHandler, run_by_shape
from workers.safe_loading import load_pretrained

EXPLAINED_BOXES = 5  # the most confident boxes of an image explained, each one IG run


@dataclass
class DetectionFeatures(ImageFeatures):
    threshold: float = DEFAULT_THRESHOLD
    # set by predict, read by explain: (query, class) of each object, in the output's order
    queries: list[tuple[int, int]] | None = None


class DetectObjectsHandler(ImageHandler):
    # Runs in float32 whatever the runtime's precision (inference_dtype is not read): boxes
    # and scores are then the pipeline's.

    def setup(self, model_path: str, device: str) -> None:
        self.device = torch.device(device)
        self.load_processor(model_path)
        self.model = load_pretrained(AutoModelForObjectDetection, model_path)
        self.model.to(self.device).eval()
        config: Any = self.model.config
        self.labels = {int(i): str(name) for i, name in config.id2label.items()}
        # a value per channel: the processor keeps each image's aspect, so the reference
        # takes the shape of the image explained
        self.black_value = self.black()[:, 0, 0]

    def preprocess(self, item: Item, params: dict[str, Any]) -> DetectionFeatures:
        image = super().preprocess(item, params)
        threshold = float(params.get("threshold", DEFAULT_THRESHOLD))
        return DetectionFeatures(image.pixels, image.width, image.height, threshold)

    def query_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, queries, classes) probabilities as the post-processing scores them: a softmax
        with a last "no object" class dropped (DETR, YOLOS), else sigmoids (RT-DETR)."""
        if logits.shape[-1] == len(self.labels) + 1:
            return torch.softmax(logits.float(), dim=-1)[..., :-1]
        return torch.sigmoid(logits.float())

    def detect(self, batch: list[DetectionFeatures], pixels: torch.Tensor) -> list[dict[str, Any]]:
        with torch.inference_mode():
            outputs = self.model(pixel_values=pixels.to(self.device))
        found = []
        for n, features in enumerate(batch):
            one = type(outputs)(**{k: v[n : n + 1] for k, v in outputs.items() if _batched(v)})
            post = self.processor.post_process_object_detection
            result = post(one, threshold=features.threshold,
                          target_sizes=[(features.height, features.width)])[0]  # fmt: skip
            # Which query made each object, from the processor itself: the same scores with
            # each query's box replaced by its number keep the same objects in the same order
            # (DETR's threshold, RT-DETR's top-k), each box now saying its query.
            tagged = type(one)(**{**one, "pred_boxes": query_tags(one.pred_boxes)})
            tags = post(tagged, threshold=features.threshold, target_sizes=None)[0]
            queries = tags["boxes"][:, 0].round().long().tolist()
            objects = sorted(
                zip(result["scores"].tolist(), result["labels"].tolist(),
                    result["boxes"].tolist(), queries, strict=True),
                key=lambda o: -o[0],
            )  # fmt: skip
            features.queries = [(q, int(c)) for _, c, _, q in objects]
            found.append(
                {
                    "objects": [
                        {
                            "label": self.labels.get(int(c), str(c)),
                            "score": round(s, 6),
                            "box": [round(v, 3) for v in box],
                        }
                        for s, c, box, _ in objects
                    ],
                    "count": len(objects),
                    "image_size": [features.width, features.height],
                }
            )
        return found

    def predict(self, batch: list[DetectionFeatures]) -> list[dict[str, Any]]:
        return run_by_shape(batch, self.detect)

    def confidence(self, output: dict[str, Any]) -> float | None:
        """The weakest object found: a box barely above the threshold is the uncertain one."""
        return min((float(o["score"]) for o in output["objects"]), default=None)

    def explain(
        self,
        batch: list[DetectionFeatures],
        outputs: list[dict[str, Any]],
        steps: int,
        internal_batch_size: int,
    ) -> list[Explanation]:
        out = []
        for features, output in zip(batch, outputs, strict=True):
            top = output["objects"][0]["label"] if output["objects"] else None
            try:
                out.append(self.explain_boxes(features, output, steps, internal_batch_size))
            except Exception as exc:
                out.append(failed_explanation(self.explain_method, exc, top))
        return out

    def explain_boxes(
        self, features: DetectionFeatures, output: dict[str, Any], steps: int, batch_size: int
    ) -> Explanation:
        """Integrated Gradients from a black image for each box's score (its query's
        probability of its class), summed into a grid of cells; the most confident box's
        grid is the explanation's `attributions`, every box's is in `detail.boxes`."""
        queries = (features.queries or [])[:EXPLAINED_BOXES]
        _, height, width = features.pixels.shape
        cell = cell_size(height, width)
        detail: dict[str, Any] = {
            "input_size": [int(height), int(width)],
            "cell": cell,
            "grid": [0, 0],
            "boxes": [],
            "explained": len(queries),
            "objects": output["count"],
        }
        if not queries:
            return Explanation(method=self.explain_method, detail=detail)

        def forward(pixels: torch.Tensor) -> torch.Tensor:
            return self.query_scores(self.model(pixel_values=pixels).logits).flatten(1)

        pixels = features.pixels.unsqueeze(0).expand(len(queries), -1, -1, -1).to(self.device)
        base = self.black_value.to(self.device)[None, :, None, None].expand_as(pixels).contiguous()
        targets = [q * len(self.labels) + c for q, c in queries]  # (query, class) flattened
        attr, delta = integrated_gradients(
            forward, pixels.contiguous(), base, targets, steps, batch_size
        )
        grids = to_grid(attr.float().cpu(), cell)
        detail["grid"] = [int(grids.shape[1]), int(grids.shape[2])]
        detail["boxes"] = [
            {**obj, "attributions": [short(v) for v in grids[k].flatten().tolist()],
             "convergence_delta": round(float(delta[k]), 6)}
            for k, obj in enumerate(output["objects"][: len(queries)])
        ]  # fmt: skip
        first = detail["boxes"][0]
        return Explanation(
            method=self.explain_method,
            target=first["label"],
            attributions=first["attributions"],
            convergence_delta=first["convergence_delta"],
            detail=detail,
        )


def query_tags(boxes: torch.Tensor) -> torch.Tensor:
    """(B, queries, 4) boxes as (centre x, centre y, width, height) whose corners read back as
    each query's number: (q, 0, q, 0)."""
    tags = torch.zeros_like(boxes)
    tags[..., 0] = torch.arange(boxes.shape[1], dtype=boxes.dtype, device=boxes.device)
    return tags


def _batched(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0
