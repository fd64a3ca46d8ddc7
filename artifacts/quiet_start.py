"""Quiet start-up: no TensorFlow C++ start-up lines, CUDA-driver notes or Beam's
"apitools not found" warning on a machine without a GPU; real warnings stay.

:func:`install` runs once per process from the ``__init__`` of every package with a
command line (``artifacts``, ``pipeline``, ``beam_jobs``, ``serving``), before any of
them imports TensorFlow or Beam. It

* sets ``TF_CPP_MIN_LOG_LEVEL=1`` unless the user set it: TensorFlow's C++ INFO lines
  (oneDNN note, CPU-feature note, one line per checkpoint shard) are hidden, its
  warnings and errors are not;
* imports ``tensorflow`` and Beam's BigQuery client stubs with file descriptor 2
  redirected to a temporary file, then writes back every line but the ones in
  :class:`StartupNoise`: absl's pre-init banner, "Could not find cuda drivers",
  "failed call to cuInit" once the same process said it found no CUDA driver (on a
  machine with a GPU whose driver fails, that line is news and is kept), and C++ INFO
  lines while ``TF_CPP_MIN_LOG_LEVEL`` hides INFO (on an AVX-512 BF16 AMD EPYC,
  TensorFlow 2.21 logs "oneDNN custom operations are on" while loading its libraries,
  whatever the variable says; an AVX2 CPU logged it later, where the variable hides it). The
  environment variable alone cannot do this: TensorFlow logs these lines while loading
  its shared libraries, before it reads ``TF_CPP_MIN_LOG_LEVEL``;
* drops Beam's "apitools not found" log record (Beam has no BigQuery client here and
  the jobs do not use one), and keeps that ``logging.warning`` call from configuring the
  root logger behind the command's back (the command's own :func:`artifacts.cli.setup_logging`
  would then do nothing).

``AD_TRACEBACK=1``, ``--verbosity=1`` (or more; ``-v 1``) on the command line, or a
user-set ``TF_CPP_MIN_LOG_LEVEL=0`` turn all of this off and show every line.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
import types
from typing import Callable, Iterator, Sequence

TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_TF_LOG_LEVEL = "1"  # hide C++ INFO, keep WARNING and ERROR
VERBOSITY_FLAGS = ("--verbosity", "--v", "-v")

ABSL_BANNER = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$")
NO_DRIVER = re.compile(r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine")
CUINIT = re.compile(r"^E[\d: .]+\d+ cuda_(platform|driver)\.cc:\d+\] failed call to cuInit")
# A C++ INFO line (absl/glog prefix): "I1207 04:00:23.694 1234 port.cc:153] ..."
CPP_INFO = re.compile(r"^I\d{4} [\d:. ]+\d+ [\w.-]+:\d+\] ")
APITOOLS = "apitools not found, and bigquery client libraries are not available"


def verbosity_from_argv(argv: Sequence[str]) -> int:
    """The ``--verbosity`` / ``--v`` / ``-v`` value on a command line (absl's spelling,
    also accepted by the argparse CLIs); 0 when absent or not an integer."""
    value = None
    for i, arg in enumerate(argv):
        name, eq, rest = arg.partition("=")
        if name in VERBOSITY_FLAGS:
            value = rest if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def verbose_requested(argv: Sequence[str] | None = None,
                      environ: dict[str, str] | None = None) -> bool:
    """True when the user asked for every start-up line: ``AD_TRACEBACK`` set,
    ``--verbosity`` >= 1, or ``TF_CPP_MIN_LOG_LEVEL=0`` set."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv
    return (bool(environ.get("AD_TRACEBACK")) or verbosity_from_argv(argv) >= 1
            or environ.get(TF_LOG_LEVEL_ENV) == "0")


class StartupNoise:
    """Decides line by line what of a process's start-up stderr to keep."""

    def __init__(self, hide_info: bool | None = None) -> None:
        self.no_driver = False  # the process said it found no CUDA driver
        self.dropped = 0
        # C++ INFO lines are dropped when TF_CPP_MIN_LOG_LEVEL (as install() leaves it)
        # hides INFO: those logged while TF loads its libraries come before TF reads it.
        if hide_info is None:
            hide_info = os.environ.get(TF_LOG_LEVEL_ENV, QUIET_TF_LOG_LEVEL) != "0"
        self.hide_info = hide_info

    def keep(self, line: str) -> bool:
        """False for a noise line (counted in :attr:`dropped`)."""
        if NO_DRIVER.search(line):
            self.no_driver = True
        elif not (ABSL_BANNER.search(line) or (self.no_driver and CUINIT.search(line))
                  or (self.hide_info and CPP_INFO.search(line))):
            return True
        self.dropped += 1
        return False

    def filter(self, text: str) -> str:
        """``text`` without its noise lines."""
        return "".join(ln for ln in text.splitlines(keepends=True) if self.keep(ln.rstrip("\r\n")))


class ApitoolsFilter(logging.Filter):
    """Drops Beam's "apitools not found" record (logged on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return APITOOLS not in record.getMessage()


class _Collector(logging.Handler):
    """Holds the records of a quiet import, so that a ``logging.warning`` call in an
    imported module does not run ``logging.basicConfig`` on an unconfigured root."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _handled_below_root(name: str) -> bool:
    """Whether a record of logger ``name`` met a handler before reaching the root."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None and logger is not logging.getLogger():
        if logger.handlers:
            return True
        logger = logger.parent if logger.propagate else None
    return False


@contextlib.contextmanager
def _collected_logs() -> Iterator[None]:
    """While open, records reaching an unconfigured root logger are held; on exit those
    no other handler took go to ``logging.lastResort`` (warnings and errors), as they
    would have without the collector."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    collector = _Collector()
    root.addHandler(collector)
    try:
        yield
    finally:
        root.removeHandler(collector)
        for record in collector.records:
            last = logging.lastResort
            if last is not None and record.levelno >= last.level and not _handled_below_root(
                    record.name):
                last.handle(record)


class _Fd2Capture:
    """File descriptor 2 redirected to a temporary file (C++ writes included)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(mode="w+b")
        self._saved = -1

    def __enter__(self) -> "_Fd2Capture":
        sys.stderr.flush()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def text(self) -> str:
        """What was written so far."""
        sys.stderr.flush()
        self._file.seek(0)
        return self._file.read().decode("utf-8", errors="replace")

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)


def _write_fd2(text: str) -> None:
    data = text.encode("utf-8", errors="replace")
    while data:
        data = data[os.write(2, data):]


@contextlib.contextmanager
def quiet(after: Callable[[StartupNoise, _Fd2Capture], None] | None = None) -> Iterator[None]:
    """Runs the block with fd 2 captured and log records held; then writes back what
    is not :class:`StartupNoise`. ``after(noise, capture)`` runs last inside the capture."""
    noise = StartupNoise()
    try:
        capture = _Fd2Capture()
        capture.__enter__()
    except OSError:  # no usable fd 2 (a daemon): nothing to protect
        yield
        return
    try:
        with _collected_logs():
            yield
            if after is not None:
                noise.filter(capture.text())
                after(noise, capture)
    finally:
        capture.__exit__()
        _write_fd2(StartupNoise().filter(capture.text()))


def _init_devices_if_no_driver(noise: StartupNoise, _capture: _Fd2Capture) -> None:
    """TensorFlow calls cuInit when it first lists devices; on a machine without a CUDA
    driver, do that now, inside the capture, so its error line is dropped too. Listing
    physical devices does not initialise the runtime (logical devices stay configurable)."""
    if noise.no_driver:
        tf = sys.modules.get("tensorflow")
        if tf is not None and hasattr(tf, "config"):
            tf.config.list_physical_devices("GPU")


# module name -> what to run after it is imported, inside the capture
QUIET_MODULES: dict[str, Callable[[StartupNoise, _Fd2Capture], None] | None] = {
    "tensorflow": _init_devices_if_no_driver,
    "apache_beam.io.gcp.internal.clients.bigquery": None,
}


class _QuietLoader(importlib.abc.Loader):
    """Wraps a module's loader: its ``exec_module`` runs inside :func:`quiet`."""

    def __init__(self, loader: importlib.abc.Loader,
                 after: Callable[[StartupNoise, _Fd2Capture], None] | None) -> None:
        self._loader = loader
        self._after = after

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        with quiet(self._after):
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> object:  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of :data:`QUIET_MODULES` with the other finders and wraps
    their loaders in :class:`_QuietLoader`."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in QUIET_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader, QUIET_MODULES[fullname])
                return spec
        return None


_FINDER = _QuietFinder()


def install() -> None:
    """Sets the environment defaults and the import hook (once; a no-op when the user
    asked for every line, see :func:`verbose_requested`)."""
    if verbose_requested():
        os.environ.setdefault(TF_LOG_LEVEL_ENV, "0")
        return
    os.environ.setdefault(TF_LOG_LEVEL_ENV, QUIET_TF_LOG_LEVEL)
    root = logging.getLogger()
    if not any(isinstance(f, ApitoolsFilter) for f in root.filters):
        root.addFilter(ApitoolsFilter())
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
