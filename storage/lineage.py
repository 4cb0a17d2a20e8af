"""Per-row lineage (issue 22): what made a row, read from three records written as it was
made, so no row carries copies of what its job shares.

- the job (`jobs.lineage`, at submit): Sluice's version and the model (name, version, the full
  SHA-256 of its weights files, its registry entry and DP budget); its parameters hold the
  explainer (method and steps) and the redaction policy;
- the chunk (`chunks.made_by`, at completion): the worker's Sluice version, the digest of the
  code that makes outputs, the options that can change an output, whether its rows ran on a
  private actor (isolating a crash);
- the row (`results`): the keyed digest of its input, what redaction found, whether it came
  from the result cache, and its explanation's method and status.

The input digest is HMAC-SHA256 with the tenant's secret over the input the model read (after
redaction), in canonical JSON without the row's key: the same input has the same digest within
a tenant, and a digest of a phone number cannot be reversed by trying every phone number.
"""

import hashlib
import hmac
import importlib.metadata
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from schemas.errors import SluiceError
from schemas.jobs import Item
from storage import tables as t
from storage.result_cache import canonical

INPUT_DIGEST = "hmac-sha256"  # how `input_digest` is made, named in every lineage
LINEAGE_FORMAT = 1


def sluice_version() -> str:
    try:
        return importlib.metadata.version("sluice")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout not installed
        return "unknown"


def input_digest(secret: bytes, item: Item) -> str:
    """The keyed digest of an item's input: everything the model may read but its key and
    what redaction recorded finding (a media item's location and stamp, not its bytes)."""
    described = item.model_dump(mode="json", exclude={"key", "redactions"}, exclude_none=True)
    return hmac.new(secret, b"input\n" + canonical(described), hashlib.sha256).hexdigest()


def job_part(job: Any) -> dict[str, Any]:
    """What every row of `job` (a Job row or JobView) shares."""
    recorded = job.lineage or {}
    params = job.params or {}
    return {
        "format": LINEAGE_FORMAT,
        "job_id": job.id,
        "tenant": job.tenant,
        "task": job.task,
        "submitted_with": recorded.get("sluice_version"),
        "model": recorded.get("model") or {"ref": job.model, "version": job.model_version},
        "explainer": params.get("explainer"),
        "redaction": params.get("redaction"),
    }


def row_part(result: Any, made_by: dict[str, Any] | None) -> dict[str, Any]:
    """What is the row's own, and its chunk's worker."""
    return {
        "input_digest": result.input_digest,
        "input_digest_method": INPUT_DIGEST if result.input_digest else None,
        "made_by": made_by,
        "cached": bool(result.cached),
        "redactions_found": [
            {k: f.get(k) for k in ("field", "type", "by")} for f in result.redactions or []
        ],
    }


def row_lineage(engine: Engine, job_id: str, key: str, tenant: str | None = None) -> dict[str, Any]:
    """The lineage of row `key` of job `job_id` (`tenant`: only a job of that tenant); a
    SluiceError naming what is missing."""
    with Session(engine) as s:
        job = s.get(t.Job, job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise SluiceError(f"no job {job_id}")
        result = s.get(t.Result, (job_id, key))
        if result is None:
            raise SluiceError(f"job {job_id} has no result for key {key!r} (yet)")
        made_by = s.scalar(select(t.Chunk.made_by).where(t.Chunk.id == result.chunk_id))
        explanation = s.get(t.Explanation, (job_id, key))
        lineage = {
            **job_part(job),
            "key": key,
            "status": result.status,
            **row_part(result, made_by),
        }
        lineage["explanation"] = (
            {
                "method": explanation.method,
                "status": explanation.status,
                "convergence_delta": explanation.convergence_delta,
            }
            if explanation is not None
            else None
        )
        lineage["created_at"] = result.created_at.isoformat() if result.created_at else None
        return lineage


def chunk_lineages(s: Session, job_id: str) -> dict[str, dict[str, Any] | None]:
    """Each chunk's `made_by`, by chunk id (one small row per chunk: exports join in memory)."""
    rows = s.execute(select(t.Chunk.id, t.Chunk.made_by).where(t.Chunk.job_id == job_id))
    return {chunk_id: made_by for chunk_id, made_by in rows}
