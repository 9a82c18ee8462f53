"""Module loggers that import :mod:`logging` only when a record is actually emitted.

Modules on kubexec's path write ``logger = lazylog.getLogger(__name__)`` and use it like a
:class:`logging.Logger` (``debug``, ``info``, ``warning``, ``error``, ``exception``,
``isEnabledFor``). By default every call goes to the real logger of that name, so tools that
configure :mod:`logging` see no difference. kubexec's entry point calls :func:`drop_below`:
records under its level are then dropped here, and :mod:`logging` (about 6 ms of a call's
start, with ``traceback`` and ``string``) is imported only for the first record that passes,
after the entry point's ``setup`` has installed its handlers.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from typing import Any

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

_threshold = 0
_setup: Callable[[], None] | None = None


def drop_below(level: int, setup: Callable[[], None] | None = None) -> None:
    """Drop records under ``level`` without importing logging; ``setup`` runs (once) before
    the first record that passes. ``drop_below(0)`` restores plain forwarding."""
    global _threshold, _setup
    _threshold, _setup = level, setup


def getLogger(name: str) -> Logger:
    return Logger(name)


class Logger:
    """The part of :class:`logging.Logger` the package uses, forwarded on demand."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def real(self) -> logging.Logger:
        """The :class:`logging.Logger` of this name (importing logging, running the setup)."""
        global _setup
        import logging  # noqa: PLC0415 - the point of this module

        if _setup is not None:
            setup, _setup = _setup, None
            setup()
        return logging.getLogger(self.name)

    def isEnabledFor(self, level: int) -> bool:
        return level >= _threshold and self.real().isEnabledFor(level)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        if _threshold <= DEBUG:
            self.real().debug(msg, *args, stacklevel=2, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        if _threshold <= INFO:
            self.real().info(msg, *args, stacklevel=2, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        if _threshold <= WARNING:
            self.real().warning(msg, *args, stacklevel=2, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        if _threshold <= ERROR:
            self.real().error(msg, *args, stacklevel=2, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        if _threshold <= ERROR:
            kwargs.setdefault("exc_info", True)
            self.real().error(msg, *args, stacklevel=2, **kwargs)
