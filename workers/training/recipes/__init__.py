"""Recipes by the catalog's dotted path (carried on the spec): nothing here lists tasks. Each
recipe module pulls in its model family, so it is imported only when a run needs it."""

from schemas.errors import ConfigError
from schemas.task_spec import import_object
from schemas.training import TrainSpec
from workers.training.recipes.base import Prepared, Recipe


def recipe_for(spec: TrainSpec) -> Recipe:
    """The recipe that trains `spec.task`, made for that task."""
    try:
        cls = import_object(spec.recipe)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"training recipe {spec.recipe} of task {spec.task} does not "
            f"import: {type(exc).__name__}: {exc}"
        ) from exc
    recipe: Recipe = cls(spec)
    return recipe


__all__ = ["Prepared", "Recipe", "recipe_for"]
