"""Runner choice shared by the Beam jobs (preprocess, FID): one function builds their
PipelineOptions.

Without ``--runner`` (or with ``--runner=FnApiRunner``) a job runs locally on Beam's
``FnApiRunner``: Beam 2.77's DirectRunner first tries to download the Prism runner, which
fails offline. ``--runner=DaskRunner`` selects :class:`beam_jobs.runtime.dask_runner.DaskRunner`
(Beam's Dask runner completed for these jobs) on the ``dask.distributed`` cluster of
``--dask_client_address``, else on a local cluster of ``--dask_num_workers`` processes.
Any other runner (Dataflow, Flink, Spark, DirectRunner) gets the options as the user gave
them.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

IN_MEMORY_MAX_RECORDS = 2_000  # below: one thread, no worker start-up at all
# below: threads; above: processes. Threads start in ~0 s (processes ~3 s) and, as PIL
# releases the GIL while decoding/resizing/encoding, process CIFAR JPEGs -> 64x64 PNG only
# ~2% slower per image (benchmarks/bench_preprocess.py): break-even near 150k images.
THREADS_MAX_RECORDS = 100_000
LOCAL_RUNNER = "FnApiRunner"
QUIET_WORKERS_RUNNER = "beam_jobs.runtime.quiet_workers.QuietWorkersRunner"  # multi_processing
_LOCAL_RUNNERS = ("fnapirunner", "fnapi", QUIET_WORKERS_RUNNER.lower())
DASK_RUNNER = "beam_jobs.runtime.dask_runner.DaskRunner"
_DASK_RUNNERS = ("dask", "daskrunner", DASK_RUNNER.lower(),
                 "apache_beam.runners.dask.dask_runner.daskrunner")

log = logging.getLogger(__name__)


def _has_flag(args: Sequence[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def auto_running_mode(num_records: int) -> str:
    """FnApiRunner mode for an input of this many records (see module constants)."""
    if num_records <= IN_MEMORY_MAX_RECORDS:
        return "in_memory"
    if num_records <= THREADS_MAX_RECORDS:
        return "multi_threading"
    return "multi_processing"


def is_local(options: PipelineOptions) -> bool:
    """Whether ``options`` run on the local FnApiRunner."""
    runner = options.view_as(StandardOptions).runner
    return runner is None or runner.lower() in _LOCAL_RUNNERS


def is_dask(options: PipelineOptions) -> bool:
    """Whether ``options`` select the Dask runner (by any of its names)."""
    runner = options.view_as(StandardOptions).runner
    return isinstance(runner, str) and runner.lower() in _DASK_RUNNERS


def workers_share_driver_files(options: PipelineOptions) -> bool:
    """Whether every worker sees the driver's local files: the local runner, and the Dask
    runner on the local cluster it starts (no scheduler address or file given)."""
    if is_local(options):
        return True
    if not is_dask(options):
        return False
    from apache_beam.runners.dask.dask_runner import DaskOptions

    dask = options.view_as(DaskOptions)
    return not (dask.address or dask.scheduler_file)


def pipeline_options(pipeline_args: Optional[Sequence[str]], size_hint: int = 0, *,
                     running_mode: str = "in_memory") -> PipelineOptions:
    """Beam options for a job over ~``size_hint`` records (the number is only logged).

    Locally (no ``--runner``, or FnApiRunner): ``--runner=FnApiRunner``,
    ``--direct_running_mode=running_mode`` unless given, and ``--direct_num_workers`` 1
    in_memory, else the CPU count, unless given. The FID job keeps the default
    ``in_memory``: with its former KID reservoir (``Sample.FixedSizeGlobally``)
    ``multi_threading`` grew past 20 GB on 5,000 MNIST images here, in_memory stayed
    under 1 GB (not re-measured with today's key-hash subset). ``--runner=DaskRunner``: :data:`DASK_RUNNER`. Other runners: the arguments
    as given.
    """
    args = list(pipeline_args or [])
    options = PipelineOptions(args)
    if is_dask(options):
        options.view_as(StandardOptions).runner = DASK_RUNNER
        log.info("Beam options for ~%d records: %s (runner %s)", size_hint, " ".join(args),
                 DASK_RUNNER)
        return options
    if not is_local(options):
        log.info("Beam options for ~%d records: %s", size_hint, " ".join(args))
        return options  # Dataflow / Flink / Spark / DirectRunner: as the user asked
    options.view_as(StandardOptions).runner = LOCAL_RUNNER
    direct = options.view_as(DirectOptions)
    if not _has_flag(args, "direct_running_mode"):
        direct.direct_running_mode = running_mode
    if not _has_flag(args, "direct_num_workers"):
        direct.direct_num_workers = (1 if direct.direct_running_mode == "in_memory"
                                     else os.cpu_count() or 1)
    if direct.direct_running_mode == "multi_processing":
        _export_import_path()
        # FnApiRunner whose worker processes print no tracebacks of failed bundles
        options.view_as(StandardOptions).runner = QUIET_WORKERS_RUNNER
    log.info("Beam options for ~%d records: %s (runner %s, mode %s, %d worker(s))", size_hint,
             " ".join(args), options.view_as(StandardOptions).runner,
             direct.direct_running_mode, direct.direct_num_workers)
    return options


def _export_import_path() -> None:
    """Lets FnApiRunner's worker subprocesses import beam_jobs from any working dir."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p])
