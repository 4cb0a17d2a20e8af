"""Keep Presidio's loggers quiet and free of text values.

They log every recognizer load at INFO, and at least one message logs the matched value itself
(IbanRecognizer: "Failed to validate text %s"). Below WARNING is dropped, and the arguments of
what remains are removed so a value can never reach a log line (the template stays)."""

import logging

PRESIDIO_LOGGERS = ("presidio-analyzer", "presidio-anonymizer")


class DropArguments(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.args = None
        return True


def quiet_presidio_loggers() -> None:
    for name in PRESIDIO_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if not any(isinstance(f, DropArguments) for f in logger.filters):
            logger.addFilter(DropArguments())
