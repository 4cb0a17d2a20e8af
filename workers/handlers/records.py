"""classify-records and regress-records: a Sluice records model (safetensors MLP, feature
schema and normalisation statistics; see workers/training/records_mlp.py)."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from schemas.errors import InvalidInput
from schemas.jobs import Explanation, Item
from schemas.records import check_record
from workers.explain.records import explain_records
from workers.handlers.base import Handler
from workers.handlers.outputs import top_labels
from workers.training.records_mlp import load_records_model, normalise


@dataclass
class RecordFeatures:
    values: dict[str, float]
    row: list[float]  # raw values in the model's feature order; normalised per batch


class RecordsHandler(Handler):
    def setup(self, model_path: str, device: str) -> None:
        self.device = torch.device(device)
        model, self.config, self.features = load_records_model(model_path)
        self.model = model.to(self.device).eval()
        self.names = [f["name"] for f in self.features]

    def preprocess(self, item: Item, params: dict[str, Any]) -> RecordFeatures:
        values, problem = check_record(item.record or {}, self.features)
        if problem or values is None:
            raise InvalidInput(problem or "empty record")
        return RecordFeatures(values, [values[n] for n in self.names])

    def stack(self, batch: list[RecordFeatures]) -> torch.Tensor:
        """The batch, normalised at once (per item it cost more than the model)."""
        rows = np.array([f.row for f in batch], dtype=np.float64)
        return torch.as_tensor(
            normalise(rows, self.features), dtype=torch.float32, device=self.device
        )

    def explain(
        self,
        batch: list[RecordFeatures],
        outputs: list[dict[str, Any]],
        steps: int,
        internal_batch_size: int,
    ) -> list[Explanation]:
        return explain_records(
            self.forward,
            self.stack(batch),
            [f.values for f in batch],
            self.features,
            self.targets(outputs),
            self.names_of(outputs),
            steps,
            internal_batch_size,
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def targets(self, outputs: list[dict[str, Any]]) -> list[int]:
        raise NotImplementedError

    def names_of(self, outputs: list[dict[str, Any]]) -> list[str | None]:
        raise NotImplementedError


class ClassifyRecordsHandler(RecordsHandler):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(inputs), dim=-1)

    def predict(self, batch: list[RecordFeatures]) -> list[dict[str, Any]]:
        with torch.inference_mode():
            probs = self.forward(self.stack(batch)).float().cpu().tolist()
        return [top_labels(row, self.config["labels"]) for row in probs]

    def confidence(self, output: dict[str, Any]) -> float | None:
        return float(output["score"])

    def targets(self, outputs: list[dict[str, Any]]) -> list[int]:
        return [self.config["labels"].index(o["label"]) for o in outputs]

    def names_of(self, outputs: list[dict[str, Any]]) -> list[str | None]:
        return [o["label"] for o in outputs]


class RegressRecordsHandler(RecordsHandler):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The prediction in the target's own units (the net predicts it standardised)."""
        return self.model(inputs) * float(self.config["target_std"]) + float(
            self.config["target_mean"]
        )

    def predict(self, batch: list[RecordFeatures]) -> list[dict[str, Any]]:
        with torch.inference_mode():
            values = self.forward(self.stack(batch))[:, 0].float().cpu().tolist()
        return [{"value": round(v, 6), "target": self.config.get("target")} for v in values]

    def targets(self, outputs: list[dict[str, Any]]) -> list[int]:
        return [0] * len(outputs)

    def names_of(self, outputs: list[dict[str, Any]]) -> list[str | None]:
        return [self.config.get("target")] * len(outputs)
