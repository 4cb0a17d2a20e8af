"""The exception hierarchy. Every message says what was wrong and what to do about it."""


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""


class ConfigError(SluiceError):
    """The settings are inconsistent or a service cannot be reached."""


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
