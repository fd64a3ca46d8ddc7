"""What every command-line tool of the project shares: user errors as one line on stderr
and a non-zero exit (:func:`user_errors`), and one logging setup (:func:`setup_logging`).

``@user_errors("python -m pipeline.train")`` on a ``main`` turns the exceptions that mean
"the input is wrong" (missing files or directories, bad values, mismatched model
settings, a model directory in use) into ``<prog>: error: <message>`` and exit code 2,
without a traceback. Any other exception is a bug and keeps its traceback. Set
``AD_TRACEBACK=1`` in the environment to see the traceback of user errors too (and, as
``--verbosity=1``, the start-up lines :mod:`artifacts.quiet_start` hides).

The CLIs that pass unknown flags on (the Beam jobs: unknown flags are Beam's
PipelineOptions) parse absl flags into a private :class:`absl.flags.FlagValues` made by
:func:`flag_values` with :func:`parse_flags`: ``--flagfile`` works for every flag (and may
hold Beam options), ``--help`` prints the flags, and a bad command line raises
:class:`UsageError`, one line and exit 2 through :func:`user_errors` like any user error.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

from absl import flags

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


# --------------------------------------------------------------------------------------
# absl flags of the CLIs that pass unknown flags on (Beam's PipelineOptions).
# --------------------------------------------------------------------------------------
class UsageError(ValueError):
    """A command line that cannot run (a missing or malformed flag, flags that do not go
    together): ``<prog>: error: <message>``, exit 2, through :func:`user_errors`."""


class _ChoiceParser(flags.EnumParser):
    """absl's enum parser with a message naming the choices: ``flag --split_by=name:
    invalid choice (choose from hash, top_folder)``."""

    def parse(self, argument: str) -> str:
        if argument not in self.enum_values:
            raise ValueError(f"invalid choice (choose from {', '.join(self.enum_values)})")
        return argument


def _calling_module() -> str:
    """The module name absl would file a flag under, for the caller of our caller."""
    name = sys._getframe(2).f_globals.get("__name__", "")
    return sys.argv[0] if name == "__main__" else name


def define_choice(name: str, default: str | None, choices: Iterable[str], help: str,
                  fv: flags.FlagValues) -> None:
    """``flags.DEFINE_enum`` on ``fv`` whose error says 'invalid choice' and lists them."""
    choices = list(choices)
    flags.DEFINE(_ChoiceParser(choices), name, default, f"<{'|'.join(choices)}>: {help}",
                 flag_values=fv, serializer=flags.ArgumentSerializer(),
                 module_name=_calling_module())


def flag_values() -> flags.FlagValues:
    """A new, private FlagValues (one per parse: a ``main`` can run repeatedly in one
    process) with the flags every such CLI has: ``-h/--help`` (also ``--helpshort``,
    ``--helpfull``) and ``-v/--verbosity`` (read from the command line before the imports
    by :mod:`artifacts.quiet_start`; absl defines these only in its global FLAGS)."""
    fv = flags.FlagValues()
    flags.DEFINE_bool("help", False, "show the flags and exit", short_name="h", flag_values=fv)
    flags.DEFINE_bool("helpshort", False, "as --help", flag_values=fv)
    flags.DEFINE_bool("helpfull", False, "as --help", flag_values=fv)
    flags.DEFINE_integer("verbosity", 0, "1: TF/Beam start-up noise (on the command line, "
                         "not in a flagfile: it is read before the imports)", short_name="v",
                         flag_values=fv)
    return fv


def parse_flags(fv: flags.FlagValues, argv: Sequence[str], prog: str, doc: str
                ) -> tuple[SimpleNamespace, list[str]]:
    """Parses ``argv`` (without the program name) into ``fv``; returns the flags' values
    by name and, in their order, the arguments that are not ours: Beam's pipeline options
    (an unknown flag, also a misspelled one of ours, goes there as with argparse's
    ``parse_known_args``; Beam warns "Discarding unparseable args" for those it does not
    know). Every ``--flagfile=F`` is expanded first (one ``--flag=value`` per line, ``#``
    comments; Beam options too); ``--no-NAME`` means ``--noNAME`` for our boolean flags.
    ``--help``: ``doc`` and the flags on stdout, SystemExit(0). A malformed flag (a bad
    value, a choice not offered, a flagfile line ``--flag value``): :class:`UsageError`."""
    try:
        args = fv.read_flags_from_files(list(argv), force_gnu=False)
        args = [_no_dash_alias(fv, arg) for arg in args]
        for arg in args:
            name = arg.partition("=")[0]
            if arg.startswith("-") and len(name.split()) > 1:
                raise UsageError(f"{arg!r}: expected {name.split()[0]}=VALUE (a flagfile "
                                 "holds one --flag=value per line)")
        rest = fv([prog, *args], known_only=True)[1:]
    except (flags.Error, ValueError) as err:
        raise UsageError(one_line(err).removeprefix("ERROR:: ")) from err
    if fv["help"].value or fv["helpshort"].value or fv["helpfull"].value:
        print(f"{doc.strip()}\n\n{fv.get_help()}")
        raise SystemExit(0)
    values = {name: fv[name].value for name in fv if fv[name].name == name}
    return SimpleNamespace(**values), rest


def _no_dash_alias(fv: flags.FlagValues, arg: str) -> str:
    """``--no-NAME`` (argparse's spelling) -> ``--noNAME`` for a boolean flag of ``fv``."""
    name = arg[len("--no-"):] if arg.startswith("--no-") else ""
    return f"--no{name}" if name in fv and fv[name].boolean else arg


def require(args: SimpleNamespace, *names: str) -> None:
    """UsageError naming the flags of ``names`` that were not given (are None)."""
    missing = [f"--{name}" for name in names if getattr(args, name) is None]
    if missing:
        raise UsageError(f"the following flags are required: {', '.join(missing)}")


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
