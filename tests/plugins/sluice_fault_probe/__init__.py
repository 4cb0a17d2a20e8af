"""A test-only task for the fault suite (tests/fault): `fault-probe` answers the length of
each text, after `seconds_per_item` of pretend model work per item. Its handler exits the
model's process, as a segfaulting model would, on an item whose text is CRASH_MARKER; and
fails the first FAILING_CALLS predictions (batches) holding FAIL_MARKER that its process
sees: a chunk of two such items fails its first attempt whole (its batch, then each item
alone), and is retried later. Registered with SLUICE_TASK_MODULES=sluice_fault_probe
(tests/plugins on PYTHONPATH)."""

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

CRASH_MARKER = "__crash__"
FAIL_MARKER = "__fail_first__"
FAILING_CALLS = 3


class FaultProbeParams(TaskParams):
    seconds_per_item: float = Field(
        0.0, ge=0, le=10, description="pretend model work per item, in seconds"
    )


FAULT_PROBE = TaskSpec(
    "fault-probe",
    Modality.TEXT,
    "sluice_fault_probe.handler:FaultProbeHandler",
    f"the length of each text, slowly; the model's process dies on {CRASH_MARKER!r}",
    OutputShape.FIELDS,
    params=FaultProbeParams,
    model=ModelNeeds(kind=ModelKind.NONE, files=ModelFiles.NONE, description="no model"),
    chunk_size=20,
)

SLUICE_TASKS = [FAULT_PROBE]
