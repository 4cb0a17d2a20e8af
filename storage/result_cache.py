"""The result cache (issue 16): a tenant's `ok` results, stored under a keyed digest of what
makes them, so that the same input run again with the same model, task parameters,
explanation settings and redaction is answered from the ledger instead of the model.

What is keyed (HMAC-SHA256 with the tenant's secret; DESIGN: digests of user data are never
plain hashes), as canonical JSON:
- the scope, once per job (`CacheScope`): the task and its handler, the model digest (the job's
  `model_version`: SHA-256 of the weights, config and tokenizer files, and a registered
  model's full weights SHA-256), the task parameters (less those that never change an output:
  where the model lies, the registry's names, the input roots, the cache flag), the worker's
  options that can change an output (explanation steps, and any option a later change adds
  that is not known to leave outputs alone), the explanation method, the redaction policy
  (none exists yet: a placeholder, so that adding one changes every key) and a digest of
  the code that makes outputs (workers/code_digest.py: any change to it, a fix or a new
  default, makes older entries miss);
- the input: the text, the fields, the record, and the bytes of the media (a file's content,
  not its path: a file changed in place is new input; inline data and a file with the same
  bytes are the same input). The item's key only where the output depends on it: a job with
  a sampling seed (each row's seed is derived from the key).

The explanation policy is not keyed: it picks rows, not results. A stored row stands for a
row the job's policy explains only if it was stored with an explanation (`answer`); a row
the policy does not explain is given without one. So `sample:RATE` explains the same rows,
cached or not, as a run without the cache would.

Entries are written in the transaction that settles their chunk (Ledger.complete), and go
with the job that stored them (a foreign key with ON DELETE CASCADE): retention and erasure
of that job remove them; `clear` removes a tenant's or a job's.
"""

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Text, bindparam, cast, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from schemas.jobs import RESULT_CACHE_PARAM, ExplainPolicy, Explanation, Item, Outcome
from schemas.states import ExplanationStatus, ItemStatus
from storage import tables as t
from storage.tenant_secrets import tenant_secret

CACHE_FORMAT = 1  # raised when what is keyed changes: every older entry then misses
# Job parameters that never change an output: where the model lies (its digest is keyed),
# the registry's names for it, the roots and object prefixes media are read under (the
# media's bytes are keyed, read under those), and the cache flag itself.
UNKEYED_PARAMS = frozenset(
    {"model_path", "registry", "input_roots", "object_prefixes", RESULT_CACHE_PARAM}
)
LOOKUP_BATCH = 1000  # digests per query: far below any database's parameter limit


def canonical(value: Any) -> bytes:
    """One byte string per JSON value, whatever the order its mappings were built in."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


@dataclass(frozen=True)
class CacheScope:
    """Everything a job's result depends on besides its input."""

    task: str
    handler: str
    model_digest: str
    params: dict[str, Any]
    explainer: dict[str, Any] | None  # method and the worker's options that change outputs
    worker: dict[str, Any] = field(default_factory=dict)
    redaction: Any = None  # placeholder until redaction policies exist
    code: str = ""  # a digest of the code that makes outputs (workers/code_digest.py)

    @property
    def keys_by_item_key(self) -> bool:
        """A job with a sampling seed derives each row's seed from the row's key."""
        return self.params.get("seed") is not None

    def encoded(self) -> bytes:
        return canonical(
            {
                "format": CACHE_FORMAT,
                "task": self.task,
                "handler": self.handler,
                "model": self.model_digest,
                "params": {k: v for k, v in self.params.items() if k not in UNKEYED_PARAMS},
                "explainer": self.explainer,
                "worker": self.worker,
                "redaction": self.redaction,
                "code": self.code,
            }
        )


def item_digest(secret: bytes, scope: bytes, item: Item, media: bytes | None, by_key: bool) -> str:
    """The keyed digest of one item's input under `scope` (CacheScope.encoded()). `media`:
    the bytes of its file or inline data, if it has one."""
    mac = hmac.new(secret, scope, hashlib.sha256)
    described = {
        "text": item.text,
        "fields": item.fields,
        "record": item.record,
        "media": media is not None,
        "key": item.key if by_key else None,
    }
    # a chat's turns and a row's own parameters (OpenAI requests): only where given, so the
    # digests of every other item stay as they were
    described.update({f: v for f in ("messages", "options") if (v := getattr(item, f))})
    mac.update(b"\n" + canonical(described))
    if media is not None:
        mac.update(b"\n" + media)
    return mac.hexdigest()


@dataclass(frozen=True)
class CachedResult:
    output: str  # JSON text, as stored: copied into the new row without being parsed
    explanation: Explanation | None  # only an explanation that succeeded is stored
    explain_policy: str  # the policy of the job that stored it


def answer(entry: CachedResult, policy: ExplainPolicy, job_id: str, key: str) -> Outcome | None:
    """Row `key` of job `job_id` answered by `entry`, explained as the job's policy picks; or
    None where the entry cannot stand for the model (a row to explain, stored without an
    explanation; a low-confidence policy other than the one it was stored under: the row's
    confidence is the handler's to judge, and it is not here)."""
    explanation: Explanation | None = None
    if policy.kind == "low-confidence":
        if ExplainPolicy.parse(entry.explain_policy) != policy:
            return None
        explanation = entry.explanation  # the same output: the same choice
    elif policy.kind != "none" and policy.wants(job_id, key, None):
        if entry.explanation is None:
            return None
        explanation = entry.explanation
    return Outcome(
        key=key,
        status=ItemStatus.OK,
        stored_output=entry.output,
        explanation=explanation,
        cached=True,
    )


@dataclass(frozen=True)
class CacheWrite:
    """What a chunk's completion stores: the digest of each item the model ran for."""

    tenant: str
    explain_policy: str
    digests: dict[str, str]  # item key -> digest


def store(
    s: Session, job_id: str, write: CacheWrite, outcomes: list[Outcome], now: datetime
) -> int:
    """Store the `ok` outcomes the model made (in the chunk's transaction). A digest stored
    before is replaced: it is rewritten only when the stored row could not stand for this one
    (it lacked an explanation), and the output is the same. Returns how many were written."""
    rows: dict[str, dict[str, Any]] = {}  # by digest: two equal inputs in a chunk, one row
    for o in outcomes:
        digest = write.digests.get(o.key)
        if digest is None or o.cached or o.status != ItemStatus.OK or o.output is None:
            continue
        explained = o.explanation is not None and o.explanation.status == ExplanationStatus.OK
        if o.explanation is not None and not explained:
            continue  # its explanation failed: a later run tries again, not a hit without one
        if digest in rows and not explained:
            continue
        rows[digest] = {
            "tenant": write.tenant,
            "digest": digest,
            "output": o.output,
            "explanation": o.explanation.model_dump(mode="json") if explained else None,  # type: ignore[union-attr]
            "explain_policy": write.explain_policy,
            "job_id": job_id,
            "created_at": now,
        }
    if not rows:
        return 0
    dialect = postgresql if s.bind.dialect.name == "postgresql" else sqlite  # type: ignore[union-attr]
    stmt = dialect.insert(t.ResultCacheEntry)
    replaced = ("output", "explanation", "explain_policy", "job_id", "created_at")
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=["tenant", "digest"],
            set_={c: getattr(stmt.excluded, c) for c in replaced},
        ),
        # in digest order: two chunks storing the same digests lock them in one order
        [rows[d] for d in sorted(rows)],
    )
    return len(rows)


def insert_stored_outputs(
    s: Session,
    job_id: str,
    chunk_id: str,
    outcomes: list[Outcome],
    order: dict[str, int],
    now: datetime,
) -> None:
    """Write cached rows (in the chunk's transaction) with their outputs' JSON text bound as
    is: no decoding and encoding of what the cache already holds as JSON."""
    output: Any = bindparam("stored_output", type_=Text)
    if s.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
        output = cast(output, postgresql.JSONB)
    dialect = postgresql if s.bind.dialect.name == "postgresql" else sqlite  # type: ignore[union-attr]
    stmt = dialect.insert(t.Result.__table__).values(output=output).on_conflict_do_nothing()
    s.execute(
        stmt,
        [
            {
                "job_id": job_id,
                "item_key": o.key,
                "chunk_id": chunk_id,
                "seq": order.get(o.key, 0),
                "status": o.status.value,
                "error": o.error,
                "created_at": now,
                "cached": o.cached,
                "redactions": o.redactions,
                "input_digest": o.input_digest,
                "stored_output": o.stored_output,
            }
            for o in outcomes
        ],
    )


class ResultCache:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def secret(self, tenant: str) -> bytes:
        return tenant_secret(self._engine, tenant)

    def lookup(self, tenant: str, digests: Iterable[str]) -> dict[str, CachedResult]:
        """The tenant's stored results among `digests`, by digest."""
        wanted = list(dict.fromkeys(digests))
        found: dict[str, CachedResult] = {}
        with self._reader() as s:
            for start in range(0, len(wanted), LOOKUP_BATCH):
                query = select(
                    t.ResultCacheEntry.digest,
                    cast(t.ResultCacheEntry.output, Text),  # as text: parsed by nobody
                    t.ResultCacheEntry.explanation,
                    t.ResultCacheEntry.explain_policy,
                ).where(
                    t.ResultCacheEntry.tenant == tenant,
                    t.ResultCacheEntry.digest.in_(wanted[start : start + LOOKUP_BATCH]),
                )
                for digest, output, explanation, policy in s.execute(query):
                    expl = Explanation.model_validate(explanation) if explanation else None
                    found[digest] = CachedResult(output, expl, policy)
        return found

    def count(self, tenant: str | None = None) -> int:
        """Stored results: a tenant's, or (None) every tenant's."""
        query = select(func.count()).select_from(t.ResultCacheEntry)
        if tenant is not None:
            query = query.where(t.ResultCacheEntry.tenant == tenant)
        with self._reader() as s:
            return int(s.scalar(query) or 0)

    def clear(self, tenant: str | None = None, job_id: str | None = None) -> int:
        """Remove stored results: a tenant's, those a job stored, or (neither) every one.
        Returns how many went. What retention and erasure call (with the job's rows, its
        entries go by the foreign key anyway)."""
        query = delete(t.ResultCacheEntry)
        if tenant is not None:
            query = query.where(t.ResultCacheEntry.tenant == tenant)
        if job_id is not None:
            query = query.where(t.ResultCacheEntry.job_id == job_id)
        with self._session.begin() as s:
            return int(s.execute(query).rowcount)  # type: ignore[attr-defined]

    def forget_secret(self, tenant: str) -> None:
        """Erase a tenant: its entries and its secret (a new one is made on its next use, and
        no digest made with the old one can be matched again)."""
        with self._session.begin() as s:
            s.execute(delete(t.ResultCacheEntry).where(t.ResultCacheEntry.tenant == tenant))
            s.execute(delete(t.TenantSecret).where(t.TenantSecret.tenant == tenant))
