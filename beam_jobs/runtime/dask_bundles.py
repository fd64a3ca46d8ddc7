"""Worker side of :mod:`beam_jobs.runtime.dask_runner`: one ParDo over one Dask partition
(:func:`run_bundle`), with each DoFn set up once per worker thread and reused across
bundles, every tagged output kept apart and the committed metrics returned with the
outputs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from typing import Any, Iterator, Optional, Sequence

from apache_beam import DoFn
from apache_beam.internal import pickler
from apache_beam.metrics.execution import MetricsContainer
from apache_beam.runners.common import (
    DoFnContext,
    DoFnInvoker,
    DoFnSignature,
    Receiver,
    _OutputHandler,
)
from apache_beam.runners.dask import transform_evaluator
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils.counters import CounterFactory

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ParDoSpec:
    """Everything a worker needs to run one ParDo over a partition."""

    run_id: str
    label: str
    do_fn: bytes  # Beam-pickled: each worker thread sets up its own copy, never this one
    args: list
    kwargs: dict
    window_fn: Any
    side_views: list  # [(view class, view options, window mapping fn)] per side input


class _PairReceiver(Receiver):
    """Collects ``(tag, value)`` for one output tag (None: the main output)."""

    def __init__(self, tag: Optional[str], out: list):
        self._tag, self._out = tag, out

    def receive(self, windowed_value) -> None:
        self._out.append((self._tag, windowed_value.value))


class _Receivers(dict):
    """A receiver per tag, created on first use, all writing into ``values``."""

    def __init__(self):
        super().__init__()
        self.values: list = []

    def __missing__(self, tag):
        self[tag] = _PairReceiver(tag, self.values)
        return self[tag]


# One set-up DoFn per (run, step, thread) in each worker process, until the end of the run
# (:func:`release_run`; several jobs may share a cluster, so never on another run's start).
_DOFNS: dict[tuple[str, str, int], DoFn] = {}
_DOFNS_LOCK = threading.Lock()


def _cached_do_fn(spec: ParDoSpec) -> tuple[DoFn, bool]:
    """(the DoFn to use, whether it still needs ``setup``)."""
    key = (spec.run_id, spec.label, threading.get_ident())
    with _DOFNS_LOCK:
        cached = _DOFNS.get(key)
    if cached is not None:
        return cached, False
    fn = pickler.loads(spec.do_fn)
    with _DOFNS_LOCK:
        _DOFNS[key] = fn
    return fn, True


def release_run(run_id: str) -> int:
    """Tears down this process's DoFns of run ``run_id``; returns how many (run on every
    worker at the end of a job, so a long-lived cluster does not keep its models)."""
    with _DOFNS_LOCK:
        fns = [_DOFNS.pop(k) for k in [k for k in _DOFNS if k[0] == run_id]]
    for fn in fns:
        try:
            fn.teardown()
        except Exception:
            log.warning("teardown of a DoFn at the end of its run failed", exc_info=True)
    return len(fns)


def _drop_do_fn(spec: ParDoSpec) -> None:
    with _DOFNS_LOCK:
        fn = _DOFNS.pop((spec.run_id, spec.label, threading.get_ident()), None)
    if fn is not None:
        try:
            fn.teardown()
        except Exception:
            log.warning("teardown of a failed DoFn failed", exc_info=True)


def _side_input_maps(spec: ParDoSpec, side_values: Sequence[list]) -> list[SideInputMap]:
    return [SideInputMap(view, options, [transform_evaluator.get_windowed_value(v, mapping)
                                         for v in values])
            for (view, options, mapping), values in zip(spec.side_views, side_values)]


@contextlib.contextmanager
def _metrics_scope(label: str, container: MetricsContainer) -> Iterator[None]:
    """Beam metrics of the code inside go to ``container`` (a fresh state sampler: one
    reuses the first container it saw for a step name)."""
    previous = statesampler.get_current_tracker()
    tracker = statesampler.StateSampler("", CounterFactory())
    statesampler.set_current_tracker(tracker)
    try:
        with tracker.scoped_state(label, "process", metrics_container=container):
            yield
    finally:
        statesampler.set_current_tracker(previous)


def run_bundle(items, spec: ParDoSpec, *side_values: list) -> list:
    """Runs ``spec``'s DoFn over one partition: ``[[(tag, value), ...], MetricUpdates]``."""
    do_fn, needs_setup = _cached_do_fn(spec)
    receivers = _Receivers()
    handler = _OutputHandler(
        window_fn=spec.window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
        per_element_output_counter=None, output_batch_converter=None,
        process_yields_batches=False, process_batch_yields_elements=False)
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(do_fn), handler, context=DoFnContext(spec.label, state=None),
        side_inputs=_side_input_maps(spec, side_values), input_args=spec.args,
        input_kwargs=spec.kwargs, user_state_context=None,
        bundle_finalizer_param=DoFn.BundleFinalizerParam())
    container = MetricsContainer(spec.label)
    try:
        with _metrics_scope(spec.label, container):
            if needs_setup:
                invoker.invoke_setup()
            invoker.invoke_start_bundle()
            for item in items:
                invoker.invoke_process(
                    transform_evaluator.get_windowed_value(item, spec.window_fn))
            invoker.invoke_finish_bundle()
    except BaseException:  # a failed DoFn is not reused (Beam discards it too)
        _drop_do_fn(spec)
        raise
    return [receivers.values, container.get_cumulative()]


def outputs_of(partition: list, tag: Optional[str]) -> list:
    return [v for t, v in partition[0] if t == tag]


def metrics_of(partition: list) -> list:
    return [partition[1]]


def as_list(values: list) -> list:
    return values


# -- translating the pipeline into Dask bags ----------------------------------------------

def main_tag(tag: Any) -> Optional[str]:
    return None if tag in (None, "None") else tag
