"""A task from outside Sluice's package, as a user would write one: a spec (this file) and a
handler (handler.py). Registered through SLUICE_TASK_MODULES=sluice_text_stats, or through
the entry point in tests/plugin_dists (the `sluice.tasks` group)."""

from pydantic import Field

from schemas.catalog import (
    Modality,
    ModelFiles,
    ModelKind,
    ModelNeeds,
    OutputShape,
    TaskParams,
    TaskSpec,
)


class TextStatsParams(TaskParams):
    min_word_length: int = Field(
        5, ge=1, description="words at least this long count as long words"
    )


TEXT_STATS = TaskSpec(
    "text-stats",
    Modality.TEXT,
    "sluice_text_stats.handler:TextStatsHandler",
    "counts of words and characters, and the longest word",
    OutputShape.FIELDS,
    params=TextStatsParams,
    model=ModelNeeds(kind=ModelKind.NONE, files=ModelFiles.NONE, description="no model"),
    chunk_size=4,
)

SLUICE_TASKS = [TEXT_STATS]
