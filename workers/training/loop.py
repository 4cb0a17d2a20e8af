"""The training loop every Ray Train worker runs (TorchTrainer, DDP over gloo or NCCL).

Generic over recipes (workers/training/recipes). Rank 0 evaluates on the held-out part,
checkpoints each epoch through `ray.train.report`, and writes progress to the ledger; every
rank reports, as Ray Train requires. With DP, Opacus replaces DDP: DPDDP broadcasts the
initial weights and the DP optimiser all-reduces the clipped, noised gradients.
"""

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from schemas.object_refs import is_object_uri
from schemas.training import TrainSpec
from storage.engine import make_engine
from storage.model_artifacts import ModelCache
from storage.object_store import ObjectStore
from storage.training_runs import TrainingRuns
from workers.training import checkpoint
from workers.training.audit import Audit, agree
from workers.training.best_epoch import BestEpoch
from workers.training.recipes import Prepared, recipe_for

FINAL_METRICS = "final-metrics.json"
PROGRESS_HISTORY = 1000  # epochs of history kept in the run's progress


class Rows(Dataset[tuple[torch.Tensor, ...]]):
    """The training arrays as (row index, *tensors): the index is what the audit records."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.keys = sorted(arrays)
        self.tensors = [torch.as_tensor(arrays[k]) for k in self.keys]

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return (torch.tensor(i), *(t[i] for t in self.tensors))

    def batch(self, values: list[torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in zip(self.keys, values, strict=True)}


class Reporter:
    """Rank 0's progress in the ledger (what `sluice status` shows)."""

    def __init__(self, config: dict[str, Any], rank: int) -> None:
        self.run_id, self.owner = config["run_id"], config["owner"]
        self.runs = TrainingRuns(make_engine(config["database_url"])) if rank == 0 else None

    def write(self, progress: dict[str, Any]) -> bool:
        """False once the run was cancelled, or once this attempt no longer holds its lease
        (another worker took the run over): then it must stop, not train beside it."""
        if self.runs is None:
            return True
        if not self.runs.holds(self.run_id, self.owner):
            return False
        self.runs.update_progress(self.run_id, progress)
        return True


def local_base(spec: TrainSpec, cache_dir: Path, store: ObjectStore) -> TrainSpec:
    """`spec` with an object-store base replaced by this host's copy of it, checked against
    the digest taken at submit (the driver and every Ray Train worker make their own copy:
    hosts share no paths)."""
    if not spec.base or not is_object_uri(spec.base):
        return spec
    local = ModelCache(cache_dir, store).materialise(spec.base, spec.base_version or "")
    return spec.model_copy(update={"base": str(local)})


def train_loop(config: dict[str, Any]) -> None:
    spec = TrainSpec.model_validate(config["spec"])
    if config.get("base"):  # the base's location, not the driver host's copy
        store = ObjectStore(config.get("storage_options"))
        base = spec.model_copy(update={"base": config["base"]})
        spec = local_base(base, Path(config["model_cache_dir"]), store)
    # the driver's plan (workers/training/plan.py) set what the user left to it
    assert spec.epochs is not None and spec.batch_size is not None
    recipe = recipe_for(spec)
    prepared: Prepared = ray.get(config["data"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(spec.seed)
    model = recipe.build(spec, prepared.meta).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser: torch.optim.Optimizer = torch.optim.AdamW(
        trainable,
        lr=spec.learning_rate or recipe.default_learning_rate,
        weight_decay=getattr(recipe, "weight_decay", 1e-3),
    )
    state: dict[str, Any] = {"epoch": 0, "history": []}
    best_weights = None
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as directory:
            state = checkpoint.load(Path(directory), model, optimiser)
            best_weights = checkpoint.load_best(Path(directory))
    rows = Rows(prepared.train)
    heldout = {k: torch.as_tensor(v).to(device) for k, v in prepared.heldout.items()}
    # rank 0 alone watches the validation loss; the others follow its call to stop
    validation = (
        {k: torch.as_tensor(v).to(device) for k, v in prepared.validation.items()}
        if rank == 0
        else {}
    )
    best = BestEpoch(recipe, validation, config.get("patience"), state, best_weights)
    privacy = None
    if spec.dp:
        from workers.training.privacy import make_private

        model, optimiser, loader, privacy = make_private(
            model, optimiser, rows, spec, world, state.get("dp_history")
        )
    else:
        model = ray.train.torch.prepare_model(model)
        sampler: DistributedSampler[Any] = DistributedSampler(
            rows, num_replicas=world, rank=rank, shuffle=True, seed=spec.seed, drop_last=world > 1
        )
        # --batch-size is the global batch: each of the ranks takes its share
        loader = DataLoader(rows, batch_size=max(1, spec.batch_size // world), sampler=sampler)
    reporter = Reporter(config, rank)
    audit = Audit(rank, world, len(rows))
    start_epoch = int(state["epoch"])
    progress: dict[str, Any] = {
        "epochs": spec.epochs,
        "workers": world,
        "metric": recipe.primary_metric,
        "early_stopping": config.get("patience"),
        # the plan the run follows (workers/training/plan.py): what the user left to Sluice
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate or recipe.default_learning_rate,
        "resumed_from_epoch": start_epoch or None,
        "history": state["history"][-PROGRESS_HISTORY:],
    }
    model.train()
    last_saved = time.monotonic()
    # a run that stopped early and died before registering resumes straight to its end
    last_epoch = start_epoch if state.get("stopped") else spec.epochs
    for epoch in range(start_epoch, last_epoch):
        sampler_now = getattr(loader, "sampler", None)
        if isinstance(sampler_now, DistributedSampler):
            sampler_now.set_epoch(epoch)
        # Randomness (dropout, DP's Poisson sampling and noise) from (seed, epoch, rank): a
        # resumed run draws fresh noise, never a replay of its first epochs' (the privacy
        # accountant assumes independent noise at every step).
        torch.manual_seed(spec.seed * 1_000_003 + epoch * 101 + rank)
        started, losses, seen = time.perf_counter(), [], []
        for index, *values in loader:
            # An empty Poisson batch (DP) still takes its step: Opacus adds noise to zero
            # gradients, and every rank must join the optimiser's all-reduce.
            optimiser.zero_grad()
            loss = recipe.loss(model, rows.batch(values, device))
            loss.backward()
            optimiser.step()
            if len(index):
                losses.append(float(loss.detach()))
                seen.append(index)
        ddp = audit.epoch(seen, checkpoint.unwrap(model))
        # only rank 0's metrics are kept: the other ranks skip the held-out pass
        metrics = (
            recipe.evaluate(checkpoint.unwrap(model), heldout, prepared.meta) if (rank == 0) else {}
        )
        if best.active:
            metrics.update(best.observe(checkpoint.unwrap(model), epoch + 1))
        # under DP the training loss is not published: it is computed from private rows
        # without noise, outside ε (held-out metrics are not training data)
        mean_loss = float(np.mean(losses)) if losses and privacy is None else None
        entry = {
            "epoch": epoch + 1,
            "loss": mean_loss,
            "seconds": round(time.perf_counter() - started, 4),
            **metrics,
        }
        if privacy is not None:
            entry["epsilon"] = privacy.epsilon()
        state = {"epoch": epoch + 1, "history": [*state["history"], entry], **best.state()}
        if privacy is not None:
            state["dp_history"] = privacy.history()
        progress.update(
            epoch=epoch + 1,
            loss=entry["loss"],
            metric_value=metrics.get(recipe.primary_metric),
            best_epoch=best.best_epoch,
            epsilon=entry.get("epsilon"),
            ddp=ddp,
            # the ledger keeps the newest epochs (a write per epoch must stay
            # small); the checkpoint keeps them all
            history=state["history"][-PROGRESS_HISTORY:],
        )
        # Checkpoints (and so reports: Ray Train's report waits on its controller) at most
        # once per checkpoint_seconds, and at the last epoch; progress goes to the ledger.
        due = (
            time.monotonic() - last_saved >= config["checkpoint_seconds"]
            or epoch + 1 == spec.epochs
        )
        keep_going, due, stop = agree([reporter.write(progress), due, best.stop], world, device)
        if not keep_going:  # cancelled or taken over: no checkpoint (the new owner writes its
            return  # own); the driver sees why in the ledger
        if stop:
            state["stopped"] = True  # every rank: they all resume from rank 0's checkpoint
        if due or stop:
            _report(entry, model, optimiser, state, save=rank == 0, best=best.weights)
            last_saved = time.monotonic()
        if stop:  # no better validation loss for `patience` epochs: the best one is kept
            break
    if rank == 0:
        chosen = best.restore(checkpoint.unwrap(model))
        chosen["epochs_run"] = int(state["epoch"])
        out = config["output_dir"]
        if not is_object_uri(out):
            _finish(recipe, model, spec, prepared, heldout, Path(out), privacy, chosen)
            return
        with tempfile.TemporaryDirectory(prefix="sluice-model-") as scratch:
            _finish(recipe, model, spec, prepared, heldout, Path(scratch), privacy, chosen)
            ObjectStore(config.get("storage_options")).upload_dir(Path(scratch), out)


def _report(
    entry: dict[str, Any],
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    state: dict[str, Any],
    save: bool,
    best: dict[str, torch.Tensor] | None = None,
) -> None:
    """Every rank reports; only rank 0 hands Ray Train a checkpoint to persist."""
    with tempfile.TemporaryDirectory() as directory:
        persisted = None
        if save:
            checkpoint.save(Path(directory), model, optimiser, state, best)
            persisted = ray.train.Checkpoint.from_directory(directory)
        ray.train.report({k: v for k, v in entry.items() if v is not None}, checkpoint=persisted)


def _finish(
    recipe: Any,
    model: nn.Module,
    spec: TrainSpec,
    prepared: Prepared,
    heldout: dict[str, torch.Tensor],
    out: Path,
    privacy: Any,
    chosen: dict[str, Any],
) -> None:
    """The model directory inference loads, with its held-out metrics (and DP budget), the
    epoch chosen, and the classical baseline's figure beside them."""
    import json

    inner = checkpoint.unwrap(model)
    metrics = recipe.evaluate(inner, heldout, prepared.meta)
    metrics.update(n_train=prepared.n_train, n_heldout=prepared.n_heldout, **chosen)
    if prepared.validation:
        metrics["n_validation"] = len(next(iter(prepared.validation.values())))
    if prepared.baseline is not None:
        metrics["baseline"] = prepared.baseline
    out.mkdir(parents=True, exist_ok=True)
    recipe.save(inner.to("cpu"), out, spec, prepared.meta, metrics)
    final: dict[str, Any] = {"metrics": metrics, "primary_metric": recipe.primary_metric}
    if privacy is not None:
        final["dp"] = privacy.budget()
    (out / FINAL_METRICS).write_text(json.dumps(final, indent=2))
