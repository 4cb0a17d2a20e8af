"""Every exception class Sluice defines. Every message says what was wrong and what to do
about it.

    Exception
    ├── SluiceError                    raised on purpose; the CLI exits 2 with its message
    │   ├── ConfigError
    │   │   ├── SchemaVersionError
    │   │   ├── NotQueuedError
    │   │   ├── ClusterMismatchError
    │   │   └── PiiModelMissingError   names asked for, and no SLUICE_PII_MODEL to find them
    │   ├── InputFileError
    │   │   └── DuplicateKeysError
    │   ├── PipelineFileError          a pipelines file (sluice listen) with mistakes, by line
    │   ├── OpenAIRequestError         a request the OpenAI-compatible API refuses (its shape)
    │   ├── BusError                   a message bus refused or lost a connection or publish
    │   ├── ModelError
    │   │   ├── ModelNotFoundError
    │   │   │   └── UnknownRegisteredModelError  (also a RegistryError)
    │   │   ├── RegistryError
    │   │   └── ModelLocationError     a model this host cannot read, or changed since submit
    │   │       └── ModelChangedError  its files are not the submitted ones: items `invalid`
    │   ├── ObjectStoreError           an s3:// (fsspec) location not read or written
    │   ├── UnknownTaskError
    │   ├── JobNotFoundError
    │   ├── RunNotFoundError
    │   ├── RetryRefusedError
    │   ├── PurgeRefusedError          a job still running: cancel it first (REST: 409)
    │   ├── TrainingError
    │   ├── InvalidInput
    │   ├── UnsafeIdentifierError
    │   ├── UnusableKeyError
    │   ├── TooManyItemsError
    │   └── QuotaExceededError
    ├── ValueError
    │   └── MediaRefError              a media reference that must not be followed
    ├── RuntimeError
    │   └── IsolationUnfinished        worker control flow: retry the chunk isolated
    ├── LeaseLost                      worker control flow: another worker owns the run
    ├── WorkCancelled                  worker control flow: the chunk's Ray work was cancelled
    └── NotSignedIn                    a console page without a live session: the sign-in page

IsolationUnfinished, LeaseLost and WorkCancelled never reach a user: the worker that raises
them also catches them; NotSignedIn is answered with the console's sign-in page (or a 401).
"""


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""


class ConfigError(SluiceError):
    """The settings are inconsistent or a service cannot be reached."""


class PipelineFileError(SluiceError):
    """A pipelines file `sluice listen` cannot run: each mistake on a line `FILE:LINE: ...`."""


class OpenAIRequestError(SluiceError):
    """A request (or one line of a batch) the OpenAI-compatible API refuses: answered in
    OpenAI's error shape with this status, `param` (the field at fault) and `code`."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.param, self.code, self.status = param, code, status
        self.retry_after_s = retry_after_s  # a 429's Retry-After


class BusError(SluiceError):
    """A message bus (RabbitMQ, NATS, MQTT) refused a connection, a declaration or a publish;
    the listener reconnects with backoff."""


class SchemaVersionError(ConfigError):
    """The database's schema is not the one this code was written for."""


class InputFileError(SluiceError):
    """A submitted file cannot be read or does not have the expected shape."""


class DuplicateKeysError(InputFileError):
    def __init__(self, keys: list[str]) -> None:
        shown = ", ".join(repr(k) for k in keys[:20])
        more = f" (and {len(keys) - 20} more)" if len(keys) > 20 else ""
        super().__init__(
            f"duplicate keys in the input: {shown}{more}; every item needs a unique key"
        )
        self.keys = keys


class ModelError(SluiceError):
    """A model reference is missing, unsafe or cannot be loaded."""


class ModelNotFoundError(ModelError):
    """A model reference that names no model this task can use (no such directory or hub id,
    one this tenant may not use, or a model for another task): the REST API answers 404."""


class RegistryError(ModelError):
    """A registry request that cannot be met; the message says what to do instead."""


class UnknownRegisteredModelError(RegistryError, ModelNotFoundError):
    """A name or version the tenant has no model under (its own or shared with it): 404,
    the same for another tenant's name as for a name nobody has."""


class UnknownTaskError(SluiceError):
    pass


class JobNotFoundError(SluiceError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class NotQueuedError(ConfigError):
    """A job or training run that is recorded but whose message the broker did not take; the
    sweeper sends it once the broker answers. The REST API answers 503. The message names the
    error's type only: a broker's own message may name hosts a tenant has no business seeing
    (the cause stays chained for the logs)."""

    def __init__(self, what: str, record_id: str, cause: Exception) -> None:
        super().__init__(
            f"{what} {record_id} is recorded but could not be queued "
            f"({type(cause).__name__}); the sweeper sends it once the broker answers "
            "(`sluice sweep`)"
        )
        self.record_id = record_id


class RetryRefusedError(SluiceError):
    """A retry of a job that has not ended, or that has no item that ended `error`: nothing is
    recorded. The REST API answers 409."""


class PurgeRefusedError(SluiceError):
    """A purge of a job that has not ended: nothing is removed; cancel it first. The REST
    API answers 409."""


class InvalidInput(SluiceError):
    """One item is bad; it ends `invalid` with this message and the rest of its chunk goes on."""


class UnsafeIdentifierError(SluiceError):
    """A table or column name that is not a plain SQL identifier; nothing was executed."""


class UnusableKeyError(SluiceError):
    """A key column (or one row's key) whose values would not come back exactly as they
    were read: `sluice enrich` could not write the row back to the row it came from."""


class TooManyItemsError(SluiceError):
    """An input over the item cap, refused while it is read (never built whole first)."""

    def __init__(self, source: str, cap: int, setting: str) -> None:
        super().__init__(
            f"{source}: more than {cap} items, over the cap of {cap} ({setting}); "
            "split the input into several jobs"
        )


class QuotaExceededError(SluiceError):
    """A tenant's limit refused a submission; `retry_after_seconds` says when to try again."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class RunNotFoundError(SluiceError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no training run with id {run_id!r}")
        self.run_id = run_id


class TrainingError(SluiceError):
    """A training request that cannot be trained; the message says what to change."""


class MediaRefError(ValueError):
    """A media reference that must not be followed; the message says why."""


class ObjectStoreError(SluiceError):
    """An object-store location could not be read or written (missing, refused, unreachable,
    or changed since it was checked); the message names the location."""


class ModelLocationError(ModelError):
    """A model's location cannot be read on the host that must load it, or its contents are
    not the ones the job was submitted with; the message names the location and the host."""


class ModelChangedError(ModelLocationError):
    """The model's files are not the ones the job was submitted with: no retry can help, its
    items end `invalid` with this message."""


class IsolationUnfinished(RuntimeError):
    """Isolating a chunk's culprit did not finish in this attempt; the next attempt goes
    straight to a private actor (its reason starts with ISOLATING)."""


class LeaseLost(Exception):
    """Another worker took the run over (this one's lease ran out): leave it to that one."""


class WorkCancelled(Exception):
    """The chunk's lease was lost or its job cancelled; its Ray work was cancelled."""


class ClusterMismatchError(ConfigError):
    """This process would not share the ledger or the Ray cluster with the rest of its Sluice
    cluster (the broker serves another ledger's cluster; this worker joined another Ray than
    the one the models run on): refused at start. The message names both sides and the
    setting that joins them."""


class PiiModelMissingError(ConfigError):
    """A job's redaction acts on names, places or organisations, which only the entity model
    (SLUICE_PII_MODEL) finds, and this server has none configured."""


class NotSignedIn(Exception):
    """A console page asked for without a live session (ops/console): a page is answered
    with the sign-in page, a script's request with 401."""
