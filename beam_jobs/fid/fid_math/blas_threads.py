"""BLAS threads for the O(d^3) steps of FID, fitted to the machine's load.

On a machine whose cores are busy with other work, OpenBLAS threads spin at barriers;
the measurements are in :func:`blas_threads_for_load`.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from threadpoolctl import threadpool_limits


def blas_threads_for_load() -> int | None:
    """BLAS threads for the O(d^3) steps here: None (the library default) on a machine
    with idle cores, else the cores left free by other work (at least 1).

    Measured on the 2-core development machine with two training jobs running (load
    average ~6): a 2048 x 2048 ``eigh`` took 7-8 s with OpenBLAS's 2 threads and 1.1-1.8 s
    with 1 (threads spinning at barriers on cores other processes hold), ``eigvalsh``
    1.1-4.1 s vs 0.4-0.5 s, the 10k-row ``syrk`` 1.4-1.7 s vs 1.2 s. The 1-minute load
    average (which counts this process's running thread) is the measure of other work.
    """
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return None
    free = cpus - max(load - 1.0, 0.0)
    if free >= cpus - 0.5:
        return None
    return max(1, int(free))


@contextlib.contextmanager
def limited_blas_threads() -> Iterator[None]:
    """Limits BLAS threads to :func:`blas_threads_for_load` for the enclosed block."""
    threads = blas_threads_for_load()
    if threads is None:
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield
