"""How a job's rows are explained: the catalog's method and its steps, recorded on the job
(`params["explainer"]`) when it is submitted, so that every row can say how it was explained
(lineage) and the actor explains by the job's settings, not by its worker's."""

from typing import Any

from schemas.errors import SluiceError
from schemas.settings import Settings
from schemas.task_spec import TaskSpec

EXPLAINER_PARAM = "explainer"
MIN_EXPLAIN_STEPS = 2
# A job's steps multiply its explanations' cost (each a forward and a backward pass for
# Integrated Gradients): a tenant asking for millions would hold a shared actor for days.
MAX_EXPLAIN_STEPS = 512


def job_explainer(
    spec: TaskSpec, settings: Settings, explain: str, steps: int | None
) -> dict[str, Any] | None:
    """What a job records of its explainer: None for a job that explains nothing; else the
    catalog's method and the steps asked for, or SLUICE_EXPLAIN_STEPS, or the catalog's."""
    if steps is not None:
        if explain == "none":
            raise SluiceError("explain steps were given, but the job explains nothing (--explain)")
        if not MIN_EXPLAIN_STEPS <= steps <= MAX_EXPLAIN_STEPS:
            raise SluiceError(
                f"explain steps must be between {MIN_EXPLAIN_STEPS} and {MAX_EXPLAIN_STEPS}, "
                f"got {steps}"
            )
    if explain == "none" or spec.explainer is None:
        return None
    chosen = steps or settings.explain_steps or spec.explainer.steps
    return {"method": spec.explainer.method, "steps": int(chosen)}


def explainer_of(params: dict[str, Any], spec: TaskSpec, settings: Settings) -> dict[str, Any]:
    """The explainer a job runs with: as it recorded, or (a job recorded before jobs chose
    theirs) this worker's default, as such a job was explained before."""
    recorded = params.get(EXPLAINER_PARAM)
    if isinstance(recorded, dict) and "steps" in recorded:
        return recorded
    if spec.explainer is None:
        return {"method": "none", "steps": 0}
    steps = settings.explain_steps or spec.explainer.steps
    return {"method": spec.explainer.method, "steps": int(steps)}
