"""What every command-line tool's ``main()`` does around its own work, written once.

- logging: only entry points configure it (:func:`configure_logging`): debug lines of the tool
  and the package on stderr with ``-v``, warnings otherwise; stdout stays the tool's output;
- :func:`run_main`: parse, run, and turn a known failure into one line ``<prog>: <why>`` on
  stderr and its documented exit status (the traceback only with ``-v``), Ctrl-C into its
  status, a reader that went away (``| head``) into a quiet end.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

from k8smpi_runtime.errors import ForbiddenError, K8smpiError, UnauthorizedError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

_handlers: dict[str, logging.Handler] = {}


def configure_logging(prog: str, *, verbose: bool) -> None:
    """Calling it again (tests run ``main()`` many times) replaces the handler, never adds."""
    old = _handlers.pop(prog, None)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for name in (prog, "k8smpi_runtime"):
        log = logging.getLogger(name)
        if old is not None:
            log.removeHandler(old)
        log.addHandler(handler)
        log.setLevel(logging.DEBUG if verbose else logging.WARNING)
        log.propagate = False
    _handlers[prog] = handler


def run_main(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    run: Callable[[argparse.Namespace], int],
    exit_status: Callable[[BaseException], int],
    *,
    usage: int,
    interrupted: int,
) -> int:
    """``run(args)``'s status, or the documented one for a known failure."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (argparse printed them)
        return e.code if isinstance(e.code, int) else usage
    configure_logging(prog, verbose=bool(getattr(args, "verbose", False)))
    try:
        return run(args)
    except K8smpiError as e:
        logging.getLogger(prog).debug("failed", exc_info=True)
        message = str(e)
        if isinstance(e, UnauthorizedError | ForbiddenError):
            message = f"API access denied: {e}"
        sys.stderr.write(f"{prog}: {message}\n")
        return exit_status(e)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{prog}: interrupted\n")
        return interrupted
    except BrokenPipeError:
        # `... | head`: the reader left; nothing more to say (and nothing at exit either).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
