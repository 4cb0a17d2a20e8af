"""Training checkpoints without pickle: weights and optimiser tensors in safetensors, the
rest (epoch, history, privacy accountant) in JSON. Ray Train persists the directory."""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

MODEL_FILE = "model.safetensors"
OPTIMISER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
BEST_FILE = "best.safetensors"  # the best epoch's weights so far (early stopping)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP (`module`) and Opacus (`_module`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").contiguous()


def save(
    directory: Path,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    state: dict[str, Any],
    best: dict[str, torch.Tensor] | None = None,
) -> None:
    # save_model writes a tied weight once (an LM head tied to its embeddings: T5, BART,
    # GPT-2); save_file refuses tensors that share memory
    save_model(unwrap(model), str(directory / MODEL_FILE), force_contiguous=True)
    opt = optimiser.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, slots in opt["state"].items():
        for slot, value in slots.items():
            key = f"{index}.{slot}"
            if isinstance(value, torch.Tensor):
                tensors[key] = _cpu(value)
            else:
                scalars[key] = value
    if tensors:
        save_file(tensors, str(directory / OPTIMISER_FILE))
    if best is not None:  # clones: no two keys share memory (save_file refuses that)
        save_file({k: v.contiguous() for k, v in best.items()}, str(directory / BEST_FILE))
    state = {**state, "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars}}
    (directory / STATE_FILE).write_text(json.dumps(state))


def load_best(directory: Path) -> dict[str, torch.Tensor] | None:
    """The best epoch's weights a checkpoint holds, if it holds them."""
    path = directory / BEST_FILE
    return load_file(str(path)) if path.exists() else None


def load(directory: Path, model: nn.Module, optimiser: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore weights and optimiser state in place; returns the JSON state."""
    load_model(unwrap(model), str(directory / MODEL_FILE))  # ties the shared weights again
    state: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    saved = state.pop("optimizer")
    tensors = (
        load_file(str(directory / OPTIMISER_FILE)) if (directory / OPTIMISER_FILE).exists() else {}
    )
    slots: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *saved["scalars"].items()]:
        index, slot = key.split(".", 1)
        slots.setdefault(int(index), {})[slot] = value
    optimiser.load_state_dict({"state": slots, "param_groups": saved["param_groups"]})
    return state
