"""Training defaults that converge and a baseline on every version (issue 17): the plan a run
follows when the user leaves epochs, batch and learning rate to Sluice; the validation split
carved from the training rows; the best epoch kept; the classical baseline on the same split,
and the warning when a version is worse than it. Ray-free: the loop's parts, one at a time."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from torch import nn

from schemas.media_refs import MediaLimits
from schemas.training import CURRENT_DEFAULTS, DataSource, DPSpec, TrainSpec
from storage.registry import ModelVersionView
from workers.training import checkpoint
from workers.training.best_epoch import BestEpoch, changing_state
from workers.training.plan import FIXED_BATCH, FIXED_EPOCHS, batch_for, plan_for
from workers.training.recipes.base import Prepared
from workers.training.recipes.records import RecordsRecipe
from workers.training.recipes.split import carve_validation, holdout_split


def records_spec(**fields: Any) -> TrainSpec:
    data = load_breast_cancer()
    return TrainSpec(
        name="bc",
        task="classify-records",
        recipe="workers.training.recipes.records:RecordsRecipe",
        data=DataSource(file="bc.csv"),
        label_column="diagnosis",
        input_columns=[str(n) for n in data.feature_names],
        labels=sorted(str(n) for n in data.target_names),
        **{"defaults": CURRENT_DEFAULTS, **fields},
    )


def breast_cancer_rows() -> list[dict[str, Any]]:
    data = load_breast_cancer()
    return [
        {
            **{str(n): float(v) for n, v in zip(data.feature_names, x, strict=True)},
            "diagnosis": str(data.target_names[y]),
        }  # fmt: skip
        for x, y in zip(data.data, data.target, strict=True)
    ]


def prepared_with(rows: int, validation: bool) -> Prepared:
    x = np.zeros((rows, 2), dtype=np.float32)
    return Prepared(
        train={"x": x},
        heldout={"x": x[:10]},
        validation={"x": x[:10]} if validation else {},
    )


def test_the_batch_follows_the_number_of_rows_within_bounds():
    assert batch_for(386) == 32  # breast cancer's training rows: 12 steps an epoch
    assert batch_for(60) == 16  # never below 16
    assert batch_for(1_000_000) == 256  # never above 256


def test_a_run_left_to_its_defaults_stops_early_with_a_batch_and_rate_by_its_data():
    recipe = RecordsRecipe(records_spec())
    plan = plan_for(records_spec(), recipe, prepared_with(1600, validation=True))
    assert plan.batch_size == 128
    assert plan.learning_rate == pytest.approx(2e-3)  # 1e-3 x sqrt(128 / 32)
    assert plan.epochs == 300 and plan.patience == 20  # at most 300, stopped early
    big = plan_for(records_spec(), recipe, prepared_with(500_000, validation=True))
    assert big.epochs == 11  # bounded by 20,000 steps of 256 rows: early stopping ends sooner


def test_what_the_user_sets_is_kept_and_dp_or_no_validation_trains_fixed_epochs():
    recipe = RecordsRecipe(records_spec())
    given = records_spec(epochs=40, batch_size=8, learning_rate=0.05)
    plan = plan_for(given, recipe, prepared_with(400, validation=True))
    assert (plan.epochs, plan.batch_size, plan.learning_rate, plan.patience) == (40, 8, 0.05, 4)
    private = records_spec(dp=DPSpec(epsilon=8, delta=1e-5))
    plan = plan_for(private, recipe, prepared_with(400, validation=False))
    assert (plan.epochs, plan.batch_size, plan.patience) == (FIXED_EPOCHS, FIXED_BATCH, None)
    plain = plan_for(records_spec(), recipe, prepared_with(400, validation=False))
    assert plain.epochs == FIXED_EPOCHS and plain.patience is None
    applied = plan_for(records_spec(), recipe, prepared_with(400, validation=True)).applied(
        records_spec()
    )
    assert applied.epochs == 300 and applied.batch_size == 32


def test_the_validation_rows_come_from_the_training_rows_stratified_and_only_when_read():
    labels = np.array(["a"] * 300 + ["b"] * 100)
    train, held = holdout_split(labels, 0.2, 0)
    fit, validation = carve_validation(train, labels, records_spec())
    assert sorted([*fit, *validation]) == sorted(train)  # the training rows, split
    assert not set(validation) & set(held) and not set(fit) & set(validation)
    assert len(validation) == round(len(train) * 0.15)
    assert (labels[validation] == "b").mean() == pytest.approx(0.25, abs=0.03)  # stratified
    for spec in (
        records_spec(early_stopping=False),
        records_spec(dp=DPSpec(epsilon=8, delta=1e-5)),
    ):
        assert len(carve_validation(train, labels, spec)[1]) == 0
    few = np.arange(30)
    assert len(carve_validation(few, labels[:30], records_spec())[1]) == 0  # 4 rows: noise


def test_records_are_prepared_with_a_validation_split_and_the_baseline_on_the_same_rows():
    spec = records_spec()
    rows = breast_cancer_rows()
    prepared = RecordsRecipe(spec).prepare(spec, rows, MediaLimits())
    n_fit, n_val, n_held = (len(part["y"]) for part in (
        prepared.train, prepared.validation, prepared.heldout))  # fmt: skip
    assert (n_fit + n_val, n_held) == (455, 114) and n_val == 68
    seen = {tuple(r) for part in (prepared.train, prepared.validation) for r in part["x"]}
    assert not seen & {tuple(r) for r in prepared.heldout["x"]}  # never a held-out row
    assert prepared.meta["hidden_sizes"] == [32]  # a small set: a small network
    # the baseline: LogisticRegression on the standardised training rows, scored held out
    x = np.concatenate([prepared.train["x"], prepared.validation["x"]])
    y = np.concatenate([prepared.train["y"], prepared.validation["y"]])
    expected = (
        LogisticRegression(max_iter=5000)
        .fit(x, y)
        .score(prepared.heldout["x"], prepared.heldout["y"])
    )
    assert prepared.baseline == {
        "method": "LogisticRegression on standardised features",
        "metric": "heldout_accuracy",
        "value": pytest.approx(expected),
    }
    assert prepared.baseline["value"] > 0.95


class Distance:
    """A recipe whose loss is how far a one-weight model is from 1.0: its epochs are set by
    hand below."""

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((model.weight - 1.0) ** 2).sum() + batch["x"].sum() * 0


def set_weight(model: nn.Linear, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)


def test_the_best_epoch_is_kept_and_stopping_comes_after_patience_epochs(tmp_path: Path):
    model = nn.Linear(1, 1, bias=False)
    rows = {"x": torch.zeros(3, 1)}
    best = BestEpoch(Distance(), rows, patience=2, state={})  # type: ignore[arg-type]
    for epoch, weight in enumerate([3.0, 1.5, 2.0], 1):
        set_weight(model, weight)
        figures = best.observe(model, epoch)
    assert figures == {"validation_loss": 1.0} and not best.stop  # one epoch without gain
    # a checkpoint here; the run is killed and resumes from it
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint.save(tmp_path, model, optimiser, best.state(), best.weights)
    resumed = BestEpoch(
        Distance(),  # type: ignore[arg-type]
        rows,
        patience=2,
        state=checkpoint.load(tmp_path, model, optimiser),
        weights=checkpoint.load_best(tmp_path),
    )
    set_weight(model, 1.9)
    resumed.observe(model, 4)
    assert resumed.stop  # two epochs in a row without a better loss, across the resume
    assert resumed.restore(model) == {"best_epoch": 2, "validation_loss": 0.25}
    assert model.weight.item() == 1.5  # the best epoch's weights, not the last's


def view(metrics: dict[str, Any]) -> ModelVersionView:
    now = datetime.now(UTC)
    return ModelVersionView(
        "bc", 3, "classify-records", "default", "/m", "0" * 64, metrics,
        None, None, None, "staging", now, now,
    )  # fmt: skip


def test_a_version_worse_than_its_baseline_says_so_and_a_better_one_does_not():
    base = {"method": "LogisticRegression on standardised features",
            "metric": "heldout_accuracy", "value": 0.9825}  # fmt: skip
    worse = view({"heldout_accuracy": 0.9561, "baseline": base})
    assert worse.below_baseline == (
        "bc@3 is worse than its baseline: held-out accuracy 0.9561 vs 0.9825 for "
        "LogisticRegression on standardised features on the same split"
    )
    assert view({"heldout_accuracy": 0.9825, "baseline": base}).below_baseline is None
    failed = {"method": base["method"], "error": "one class only"}
    assert view({"heldout_accuracy": 0.5, "baseline": failed}).below_baseline is None
    assert view({"heldout_accuracy": 0.5}).baseline is None  # a version from before


def test_status_shows_the_best_epoch_while_early_stopping_watches():
    from schemas.training import progress_line

    line = progress_line(
        {
            "epoch": 30,
            "epochs": 300,
            "loss": 0.08,
            "metric": "heldout_accuracy",
            "metric_value": 0.9737,
            "early_stopping": 20,
            "best_epoch": 24,
        }  # fmt: skip
    )
    assert line == (
        "epoch 30/300, loss 0.0800, heldout_accuracy 0.9737, best epoch 24 (stops after 20 "
        "without gain)"
    )


def test_a_run_recorded_before_these_defaults_resumes_as_it_started():
    """A run queued or running across the upgrade: its stored spec has no `defaults`. It
    keeps every training row, the records MLP's two layers (its checkpoint's shapes) and its
    fixed epochs."""
    stored = records_spec(epochs=10, batch_size=32).model_dump()
    del stored["defaults"], stored["early_stopping"]
    spec = TrainSpec.model_validate(stored)
    assert (spec.defaults, spec.early_stopping) == (1, False)
    prepared = RecordsRecipe(spec).prepare(spec, breast_cancer_rows(), MediaLimits())
    assert prepared.validation == {} and len(prepared.train["y"]) == 455
    assert prepared.meta["hidden_sizes"] == [64, 32]
    plan = plan_for(spec, RecordsRecipe(spec), prepared)
    assert (plan.epochs, plan.batch_size, plan.patience) == (10, 32, None)


def test_a_private_run_records_no_baseline():
    """A baseline fitted on the private rows without noise would publish a figure outside
    the privacy budget; so would a validation split (checked above)."""
    spec = records_spec(dp=DPSpec(epsilon=8, delta=1e-5))
    prepared = RecordsRecipe(spec).prepare(spec, breast_cancer_rows(), MediaLimits())
    assert prepared.baseline is None and prepared.validation == {}


def test_the_best_epoch_copies_only_what_training_changes():
    body, head = nn.Linear(4, 4), nn.Linear(4, 2)
    body.requires_grad_(False)  # a frozen encoder
    model = nn.Sequential(body, nn.BatchNorm1d(4), head)
    kept = changing_state(model)
    assert set(kept) == {"2.weight", "2.bias", "1.weight", "1.bias", "1.running_mean",
                         "1.running_var", "1.num_batches_tracked"}  # fmt: skip


def test_a_text_head_takes_its_batch_by_the_rows_and_a_fine_tuned_encoder_keeps_32():
    from workers.training.recipes.text import TextRecipe

    def text_spec(**fields: Any) -> TrainSpec:
        return TrainSpec(
            name="t", task="classify-text", recipe="workers.training.recipes.text:TextRecipe",
            data=DataSource(file="t.csv"), label_column="topic", labels=["a", "b"],
            base="/m", defaults=CURRENT_DEFAULTS, **fields,
        )  # fmt: skip

    head = text_spec()
    plan = plan_for(head, TextRecipe(head), prepared_with(3000, validation=True))
    assert plan.batch_size == 256 and plan.epochs == 40
    whole = text_spec(train_encoder=True)
    recipe = TextRecipe(whole)
    recipe.configure(whole)  # as prepare does: the fine-tuning rate
    plan = plan_for(whole, recipe, prepared_with(3000, validation=True))
    assert (plan.batch_size, plan.learning_rate) == (32, None)  # the recipe's own 5e-5
