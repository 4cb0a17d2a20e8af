"""Parameters of `detect-objects`."""

from pydantic import Field

from schemas.task_spec import TaskParams

DEFAULT_THRESHOLD = 0.5  # the transformers object-detection pipeline's default


class DetectParams(TaskParams):
    threshold: float = Field(
        DEFAULT_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="objects scoring above it are kept (as the object-detection pipeline's "
        "threshold): lower finds more, and more false ones",
    )
