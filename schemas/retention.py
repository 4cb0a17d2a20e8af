"""How long a job's data is kept (issue 22): a period per job (`--retention 30d`) within its
tenant's limit (its grant's `retention_days`, else SLUICE_RETENTION_DAYS); none: kept until
purged. The period runs from when the job ends; the beat task `sluice.retention` then
removes it (storage/erasure.py)."""

import re

from schemas.errors import SluiceError
from schemas.settings import Settings

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
DURATION_HELP = "a number and a unit: 90m, 12h, 30d, 2w"
MAX_SECONDS = 99_999 * UNIT_SECONDS["w"]  # far beyond any need; a date still fits


def parse_duration(text: str) -> int:
    """Seconds in `text` (90m, 12h, 30d, 2w); a SluiceError saying how to write one."""
    found = DURATION.match(str(text))
    if not found:
        raise SluiceError(f"{text!r} is not a duration: use {DURATION_HELP}")
    seconds = int(float(found.group(1)) * UNIT_SECONDS[found.group(2).lower()])
    if not 1 <= seconds <= MAX_SECONDS:
        raise SluiceError(f"{text!r}: a duration must be between 1s and 99999w")
    return seconds


def tenant_limit_s(settings: Settings, tenant: str | None) -> int | None:
    """The longest a tenant's job data is kept: its grant's, else the server's; None: no
    limit."""
    grant = settings.grant_for(tenant)
    days = (grant.retention_days if grant is not None else None) or settings.retention_days
    return max(1, int(days * 86_400)) if days else None


def retry_retention_s(parent_s: int | None, settings: Settings, tenant: str | None) -> int | None:
    """A retry keeps its parent's retention, shortened to the tenant's limit as of now."""
    limit = tenant_limit_s(settings, tenant)
    if parent_s is None or limit is None:
        return parent_s if limit is None else limit
    return min(parent_s, limit)


def job_retention_s(asked: str | int | None, settings: Settings, tenant: str | None) -> int | None:
    """A job's retention in seconds: what it asked (a duration, or seconds), at most its
    tenant's limit (a longer one is refused, saying the limit); else the limit."""
    limit = tenant_limit_s(settings, tenant)
    if asked is None or asked == "":
        return limit
    seconds = asked if isinstance(asked, int) else parse_duration(asked)
    if not 1 <= seconds <= MAX_SECONDS:
        raise SluiceError(f"retention must be between 1s and 99999w, got {asked!r}")
    if limit is not None and seconds > limit:
        raise SluiceError(
            f"retention {asked} is longer than this tenant's limit of {limit / 86_400:g} days"
        )
    return seconds
