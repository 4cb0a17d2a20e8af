"""DP-SGD with Opacus: per-sample clipping and Gaussian noise calibrated to (ε, δ) over the
whole run, Poisson sampling, and an RDP accountant whose history survives a resume."""

from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP
from torch import nn
from torch.utils.data import DataLoader, Dataset

from schemas.training import TrainSpec


class Privacy:
    def __init__(self, engine: PrivacyEngine, optimiser: Any, spec: TrainSpec) -> None:
        assert spec.dp is not None and spec.epochs is not None and spec.batch_size is not None
        self.engine, self.optimiser, self.dp = engine, optimiser, spec.dp

    def epsilon(self) -> float:
        return float(self.engine.get_epsilon(self.dp.delta))

    def history(self) -> list[list[float]]:
        return [list(step) for step in self.engine.accountant.history]

    def budget(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon(),
            "delta": self.dp.delta,
            "target_epsilon": self.dp.epsilon,
            "noise_multiplier": float(self.optimiser.noise_multiplier),
            "max_grad_norm": self.dp.max_grad_norm,
            "accountant": "rdp",
        }


def make_private(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    rows: Dataset[Any],
    spec: TrainSpec,
    world: int,
    history: list[list[float]] | None,
) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader[Any], Privacy]:
    """Wrap for DP. The noise is set for the target ε after all epochs; on a resume the
    accountant's history is restored, so ε counts every step ever taken."""
    assert spec.dp is not None and spec.epochs is not None and spec.batch_size is not None
    if world > 1:
        model = DPDDP(model)  # broadcasts rank 0's weights; the optimiser all-reduces
    # Opacus samples each row with probability 1/len(loader), sharded over ranks: the
    # expected batch over all ranks is spec.batch_size.
    loader = DataLoader(rows, batch_size=spec.batch_size)
    engine = PrivacyEngine(accountant="rdp")
    private_model, private_optimiser, private_loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=optimiser,
        data_loader=loader,
        target_epsilon=spec.dp.epsilon,
        target_delta=spec.dp.delta,
        epochs=spec.epochs,
        max_grad_norm=spec.dp.max_grad_norm,
    )
    if history:
        engine.accountant.history = [tuple(step) for step in history]
    return (
        private_model,
        private_optimiser,
        private_loader,
        Privacy(engine, private_optimiser, spec),
    )
