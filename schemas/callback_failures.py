"""Why a callback attempt failed, as the tenant sees it: a category and the HTTP status, never
the exception text or the addresses involved (those go to the worker's log only)."""

from enum import StrEnum


class CallbackFailure(StrEnum):
    TIMEOUT = "timeout"
    REFUSED = "refused"
    DNS = "dns"
    BLOCKED_ADDRESS = "blocked_address"
    TLS = "tls"
    CONNECTION_ERROR = "connection_error"
    HTTP_3XX = "http_3xx"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"

    @property
    def meaning(self) -> str:
        return MEANINGS[self]

    @classmethod
    def for_status(cls, status_code: int) -> "CallbackFailure":
        """The category of a non-2xx answer (redirects are not followed: a 3xx fails)."""
        if status_code >= 500:
            return cls.HTTP_5XX
        if status_code >= 400:
            return cls.HTTP_4XX
        return cls.HTTP_3XX


MEANINGS = {
    CallbackFailure.TIMEOUT: "no complete answer within SLUICE_CALLBACK_TIMEOUT (whole attempt)",
    CallbackFailure.REFUSED: "the receiver's host refused the connection",
    CallbackFailure.DNS: "the host name did not resolve",
    CallbackFailure.BLOCKED_ADDRESS: "the host resolved to a private or reserved address",
    CallbackFailure.TLS: "the TLS handshake or the certificate check failed",
    CallbackFailure.CONNECTION_ERROR: "the connection failed or broke off",
    CallbackFailure.HTTP_3XX: "the receiver answered a redirect (not followed)",
    CallbackFailure.HTTP_4XX: "the receiver answered 4xx",
    CallbackFailure.HTTP_5XX: "the receiver answered 5xx",
}
