"""Token counts of tasks that count them: each `ok` row's output says its `prompt_tokens` and
`completion_tokens`; a job sums them as its chunks settle (jobs.prompt_tokens and
jobs.completion_tokens, in the chunk's transaction) and its tenant's usage adds both."""

from dataclasses import dataclass
from typing import Any

from schemas.jobs import Outcome
from schemas.states import ItemStatus
from storage import tables as t


def count(output: dict[str, Any] | None, name: str) -> int | None:
    value = (output or {}).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class TokenCounts:
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def as_dict(self) -> dict[str, int]:
        return {"prompt": self.prompt, "completion": self.completion, "total": self.total}

    @classmethod
    def of(cls, job: t.Job) -> "TokenCounts | None":
        if job.prompt_tokens is None and job.completion_tokens is None:
            return None
        return cls(job.prompt_tokens or 0, job.completion_tokens or 0)

    @classmethod
    def of_outcomes(cls, outcomes: list[Outcome]) -> "TokenCounts | None":
        """The chunk's tokens, or None when no row counts any (a task that counts none)."""
        ok = [o.output for o in outcomes if o.status == ItemStatus.OK]
        prompts = [c for o in ok if (c := count(o, "prompt_tokens")) is not None]
        completions = [c for o in ok if (c := count(o, "completion_tokens")) is not None]
        if not prompts and not completions:
            return None
        return cls(sum(prompts), sum(completions))

    def add_to(self, job: t.Job) -> None:
        job.prompt_tokens = (job.prompt_tokens or 0) + self.prompt
        job.completion_tokens = (job.completion_tokens or 0) + self.completion
