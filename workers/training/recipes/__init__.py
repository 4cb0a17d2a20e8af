"""One recipe per trainable task: data to tensors, the model, its loss, evaluation, saving."""

from workers.training.recipes.base import Prepared, Recipe


def recipe_for(task: str) -> Recipe:
    """The recipe that trains `task` (imported lazily: each pulls in its model family)."""
    if task in ("classify-records", "regress-records"):
        from workers.training.recipes.records import RecordsRecipe

        return RecordsRecipe(task)
    if task == "classify-text":
        from workers.training.recipes.text import TextRecipe

        return TextRecipe()
    if task == "classify-image":
        from workers.training.recipes.image import ImageRecipe

        return ImageRecipe()
    if task == "classify-audio":
        from workers.training.recipes.audio import AudioRecipe

        return AudioRecipe()
    raise KeyError(f"no training recipe for task {task!r}")


__all__ = ["Prepared", "Recipe", "recipe_for"]
