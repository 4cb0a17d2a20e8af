"""Evidence that data-parallel training is real: each rank's shard and weights, compared.

After an epoch every rank shares the row indices it trained on and a digest of its weights;
the shards must be disjoint and the weights identical (gradients were all-reduced)."""

import hashlib
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def _distributed(world: int) -> bool:
    return world > 1 and dist.is_available() and dist.is_initialized()


def agree(flags: list[bool], world: int, device: torch.device) -> list[bool]:
    """Rank 0's decisions, for every rank: all stop, and report, at the same epoch."""
    if not _distributed(world):
        return flags
    value = torch.tensor([1 if f else 0 for f in flags], device=device)
    dist.broadcast(value, src=0)
    return [bool(v) for v in value.tolist()]


def weights_digest(model: nn.Module) -> str:
    """The parameters only: what DDP synchronises. Buffers such as BatchNorm's running
    statistics stay per rank (DDP copies rank 0's at each forward; rank 0's are saved)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class Audit:
    def __init__(self, rank: int, world: int, n_rows: int) -> None:
        self.rank, self.world, self.n_rows = rank, world, n_rows

    def epoch(self, seen: list[torch.Tensor], model: nn.Module) -> dict[str, Any]:
        indices = sorted({int(i) for batch in seen for i in batch})
        mine = {"rank": self.rank, "rows": len(indices), "weights": weights_digest(model)}
        gathered: list[Any] = [(mine, indices)]
        if _distributed(self.world):
            gathered = [None] * self.world
            dist.all_gather_object(gathered, (mine, indices))
        ranks = [g[0] for g in gathered]
        shards = [set(g[1]) for g in gathered]
        overlap = sum(len(a & b) for i, a in enumerate(shards) for b in shards[i + 1 :])
        covered = len(set().union(*shards))
        return {
            "workers": self.world,
            "ranks": ranks,
            "shard_overlap_rows": overlap,
            "rows_covered": covered,
            "rows_total": self.n_rows,
            "weights_in_sync": len({r["weights"] for r in ranks}) == 1,
        }
