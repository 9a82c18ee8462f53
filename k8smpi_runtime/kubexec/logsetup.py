"""kubexec's diagnostics: one line ``kubexec: message`` per warning or error, never on stdout.

Imported only when a record is about to be written (see :mod:`k8smpi_runtime.lazylog`): a
call that succeeds quietly never imports :mod:`logging`.
"""

from __future__ import annotations

import logging
import sys

LOGGERS = ("kubexec", "k8smpi_runtime")


class OneLine(logging.Formatter):
    """``kubexec: message`` for warnings and errors; debug lines name their logger."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"kubexec: {message}"
        else:
            level = record.levelname.lower()
            text = f"kubexec: {level}: +{record.relativeCreated:.0f}ms {record.name}: {message}"
        if record.exc_info and self.verbose:
            text += "\n" + self.formatException(record.exc_info)
        return text


def install(*, level: int, verbose: bool, log_file: str | None) -> logging.Handler:
    """A handler on the kubexec and package loggers: ``log_file``, else stderr."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    problem = None
    if log_file:
        try:
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as e:
            problem = f"cannot open log file {log_file}: {e.strerror}; logging to stderr"
    handler.setFormatter(OneLine(verbose=verbose))
    for name in LOGGERS:
        log = logging.getLogger(name)
        log.handlers = [handler]
        log.setLevel(level)
        log.propagate = False
    if problem:
        logging.getLogger("kubexec").warning("%s", problem)
    return handler


def remove(handler: logging.Handler) -> None:
    handler.close()
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(handler)
