"""What every command-line tool of the project shares: user errors as one line on stderr
and a non-zero exit (:func:`user_errors`), and one logging setup (:func:`setup_logging`).

``@user_errors("python -m pipeline.train")`` on a ``main`` turns the exceptions that mean
"the input is wrong" (missing files or directories, bad values, mismatched model
settings, a model directory in use) into ``<prog>: error: <message>`` and exit code 2,
without a traceback. Any other exception is a bug and keeps its traceback. Set
``AD_TRACEBACK=1`` in the environment to see the traceback of user errors too (and, as
``--verbosity=1``, the start-up lines :mod:`artifacts.quiet_start` hides).
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable

USER_ERROR_EXIT_CODE = 2
USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
    PermissionError, ValueError)


def one_line(err: BaseException) -> str:
    """The exception's message on one line (its first line if it has several)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def user_errors(prog: str, extra: tuple[type[BaseException], ...] = ()
                ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: runs ``main``; a user error (:data:`USER_ERRORS` + ``extra``) prints
    ``<prog>: error: <message>`` on stderr and exits with :data:`USER_ERROR_EXIT_CODE`."""
    caught = USER_ERRORS + tuple(extra)

    def decorate(main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return main(*args, **kwargs)
            except caught as err:
                if os.environ.get("AD_TRACEBACK"):
                    raise
                print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
                sys.exit(USER_ERROR_EXIT_CODE)
        return run

    return decorate


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO lines are bookkeeping, not news (e.g. TensorFlow's one line per
# checkpoint shard and per renamed SavedModel input, Beam's runner choice and state
# cache); their warnings and errors still show.
QUIET_LOGGERS = ("tensorflow", "absl", "h5py", "matplotlib", "PIL", "apache_beam")


def setup_logging(level: int = logging.INFO) -> None:
    """The one logging setup of every CLI: ``level`` for the project's loggers, WARNING for
    the chatty libraries in :data:`QUIET_LOGGERS`, one format."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
