"""Beam's Dask runner (``apache_beam.runners.dask``) completed for the beam_jobs pipelines.

Select it with ``--runner=DaskRunner`` (:mod:`beam_jobs.beam_options` maps the name here).
With ``--dask_client_address=tcp://HOST:8786`` (or ``--dask_scheduler_file``) the job runs
on that ``dask.distributed`` cluster; without, on a ``LocalCluster`` of
``--dask_num_workers`` worker processes (default: the CPU count) of
``--dask_threads_per_worker`` threads (default 1) on 127.0.0.1, shut down after the job.

What Beam 2.78's ``DaskRunner`` lacks and this subclass adds (same Beam/Dask translation
of Create, GroupByKey and Flatten otherwise):

* every branch runs: Beam's computes only the last transform's Dask bag, so a pipeline
  with several sinks (both jobs have several) silently skips all but one;
* multi-output ParDos: Beam's merges all tagged outputs into the main output, so the
  preprocess job's ``bad`` records would flow into its shard grouping; here each output
  PCollection gets its own elements;
* side inputs (``CombineGlobally``'s default injection uses ``AsList``) are graph
  dependencies computed once, not a nested computation of the whole upstream graph inside
  a worker task;
* DoFns are set up once per worker thread and reused across bundles (Beam's sets up and
  tears down a DoFn for every partition: a RunInference model reload per partition);
* ``PipelineResult.metrics()`` returns the committed counters of every step (Beam's
  raises ``NotImplementedError``);
* a ``beam.io.Read`` of a ``BoundedSource`` is refused with an error (Beam's turns it
  into an empty no-op); the beam_jobs pipelines read through ``Create`` + ``ParDo``.

Windowing is global only (as in Beam's Dask runner): no triggers, timers or state.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import threading
import uuid
from typing import Any, Iterator, Optional, Sequence

from apache_beam import DoFn, ParDo, pvalue
from apache_beam.internal import pickler
from apache_beam.metrics.execution import MetricsContainer, MetricUpdates
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import (
    DoFnContext,
    DoFnInvoker,
    DoFnSignature,
    Receiver,
    _OutputHandler,
)
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import overrides, transform_evaluator
from apache_beam.runners.direct.direct_metrics import DirectMetrics
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils.counters import CounterFactory

log = logging.getLogger(__name__)

#: Elements per partition of a ``Create`` when neither --dask_npartitions nor
#: --dask_partition_size is given (Beam's default), with at least PARTITIONS_PER_THREAD
#: partitions per worker thread (each element its own when fewer): a handful of heavy work
#: units (the preprocess job's) would otherwise all land in one partition on one worker.
CREATE_PARTITION_SIZE = 128
PARTITIONS_PER_THREAD = 4


class DaskClusterOptions(PipelineOptions):
    """The local cluster started when no scheduler address is given."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--dask_num_workers", type=int, default=None,
            help="worker processes of the LocalCluster started when no "
                 "--dask_client_address / --dask_scheduler_file is given (default: CPU count)")
        parser.add_argument(
            "--dask_threads_per_worker", type=int, default=1,
            help="threads per worker process of that LocalCluster (default 1)")


# -- running one ParDo bundle on a worker -------------------------------------------------

@dataclasses.dataclass
class _ParDoSpec:
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


def _cached_do_fn(spec: _ParDoSpec) -> tuple[DoFn, bool]:
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


def _drop_do_fn(spec: _ParDoSpec) -> None:
    with _DOFNS_LOCK:
        fn = _DOFNS.pop((spec.run_id, spec.label, threading.get_ident()), None)
    if fn is not None:
        try:
            fn.teardown()
        except Exception:
            log.warning("teardown of a failed DoFn failed", exc_info=True)


def _side_input_maps(spec: _ParDoSpec, side_values: Sequence[list]) -> list[SideInputMap]:
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


def run_bundle(items, spec: _ParDoSpec, *side_values: list) -> list:
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


def _outputs_of(partition: list, tag: Optional[str]) -> list:
    return [v for t, v in partition[0] if t == tag]


def _metrics_of(partition: list) -> list:
    return [partition[1]]


def _as_list(values: list) -> list:
    return values


# -- translating the pipeline into Dask bags ----------------------------------------------

def _main_tag(tag: Any) -> Optional[str]:
    return None if tag in (None, "None") else tag


class _BagVisitor(PipelineVisitor):
    """Translates every primitive transform into Dask bags, one bag per PCollection."""

    def __init__(self, run_id: str, bag_kwargs: dict, threads: int):
        self.run_id = run_id
        self.bag_kwargs = bag_kwargs
        self.threads = threads
        self.bags: dict[pvalue.PCollection, Any] = {}
        self.metrics_bags: list = []  # one per ParDo: computing them runs every ParDo

    def visit_transform(self, node: AppliedPTransform) -> None:
        cls = node.transform.__class__
        if cls is overrides._Read:
            raise NotImplementedError(
                f"step {node.full_label!r}: Beam's Dask runner cannot read a BoundedSource "
                "(beam.io.Read); read with Create + ParDo instead")
        inputs = [self.bags[pc] for pc in node.inputs if isinstance(pc, pvalue.PCollection)]
        if cls is ParDo:
            self._par_do(node, inputs[0])
            return
        if cls is overrides._Create:
            bag = self._create(node)
        elif cls is overrides._GroupByKeyOnly:
            bag = transform_evaluator.GroupByKey(node).apply(inputs[0])
        elif cls is overrides._Flatten:
            bag = transform_evaluator.Flatten(node).apply(inputs)
        elif len(inputs) == 1:  # _Reshuffle, _GroupAlsoByWindow, WindowInto: pass-through
            bag = inputs[0]
        else:
            raise NotImplementedError(f"step {node.full_label!r}: {cls.__name__} with "
                                      f"{len(inputs)} inputs is not supported on Dask")
        for out in node.outputs.values():
            self.bags[out] = bag

    def _create(self, node: AppliedPTransform):
        from dask import bag as db

        values = list(node.transform.values)
        kwargs = dict(self.bag_kwargs)
        if not kwargs:
            n = len(values)
            kwargs["npartitions"] = max(1, min(n, max(math.ceil(n / CREATE_PARTITION_SIZE),
                                                      PARTITIONS_PER_THREAD * self.threads)))
        return db.from_sequence(values, **kwargs)

    def _par_do(self, node: AppliedPTransform, input_bag) -> None:
        import dask

        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(node.main_inputs.values()))
        sides = list(node.side_inputs)
        spec = _ParDoSpec(
            run_id=self.run_id, label=node.full_label, do_fn=pickler.dumps(transform.fn),
            args=list(args),
            kwargs=dict(kwargs), window_fn=main_input.windowing.windowfn,
            side_views=[(type(si), si._view_options(), si._window_mapping_fn) for si in sides])
        side_values = [dask.delayed(_as_list, pure=True)(self.bags[si.pvalue]) for si in sides]
        # one graph key for the spec: shipped to each worker once, not with every task
        shared_spec = dask.delayed(spec, pure=True)
        raw = input_bag.map_partitions(run_bundle, shared_spec, *side_values)
        for tag, out in node.outputs.items():
            self.bags[out] = raw.map_partitions(_outputs_of, _main_tag(tag))
        self.metrics_bags.append(raw.map_partitions(_metrics_of))


# -- running a pipeline -------------------------------------------------------------------

def _connect(options: PipelineOptions):
    """(Client, LocalCluster or None): to the given scheduler, else a new local cluster."""
    from dask import distributed

    dask_opts = options.view_as(beam_dask.DaskOptions).get_all_options(
        drop_default=True, current_only=True)
    for k in ("npartitions", "partition_size", "lazy_side_inputs"):
        dask_opts.pop(k, None)
    if dask_opts.get("address") or dask_opts.get("scheduler_file"):
        return distributed.Client(**dask_opts), None
    local = options.view_as(DaskClusterOptions)
    workers = local.dask_num_workers or os.cpu_count() or 1
    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=local.dask_threads_per_worker, processes=True,
        host="127.0.0.1", dashboard_address=":0")
    try:
        return distributed.Client(cluster, **dask_opts), cluster
    except BaseException:
        cluster.close()
        raise


class DaskJobResult(PipelineResult):
    """The running job; ``wait_until_finish`` gathers its metrics and closes the client
    (and the local cluster it started)."""

    def __init__(self, client, cluster, futures: list, run_id: str):
        super().__init__(PipelineState.RUNNING)
        self._client, self._cluster, self._futures = client, cluster, futures
        self._run_id = run_id
        self._metrics = DirectMetrics()

    def wait_until_finish(self, duration: Optional[int] = None) -> str:
        """Blocks until every branch finished (``duration`` ms: at most that long)."""
        if self._state in (PipelineState.DONE, PipelineState.FAILED,
                           PipelineState.CANCELLED):
            return self._state
        from dask import distributed

        try:
            timeout = None if duration is None else duration / 1000
            for _, updates in distributed.as_completed(self._futures, timeout=timeout,
                                                       with_results=True):
                for update in updates:
                    self._add_metrics(update)
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            if self._state != PipelineState.RUNNING:
                self._close()
        return self._state

    def _add_metrics(self, update: MetricUpdates) -> None:
        self._metrics.update_physical(None, update)
        self._metrics.commit_logical(None, update)

    def cancel(self) -> str:
        self._client.cancel(self._futures)
        self._state = PipelineState.CANCELLED
        self._close()
        return self._state

    def metrics(self) -> DirectMetrics:
        return self._metrics

    def _close(self) -> None:
        try:
            self._client.cancel(self._futures)  # after a failure: the other branches
            self._client.run(release_run, self._run_id, on_error="ignore")
        except Exception:  # a dead cluster: nothing left to release
            log.debug("could not release the run's DoFns on the workers", exc_info=True)
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


class DaskRunner(beam_dask.DaskRunner):
    """Beam's DaskRunner with every branch, tagged outputs, side inputs as dependencies,
    reused DoFns, metrics and a LocalCluster of worker processes (see the module doc)."""

    def run_pipeline(self, pipeline, options: PipelineOptions) -> DaskJobResult:
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(
            options.view_as(beam_dask.DaskOptions).get_all_options(
                drop_default=True, current_only=True))
        if "npartitions" in bag_kwargs and "partition_size" in bag_kwargs:
            raise ValueError("give --dask_npartitions or --dask_partition_size, not both")
        pipeline.replace_all(overrides.dask_overrides())
        client, cluster = _connect(options)
        try:
            threads = sum(client.nthreads().values()) or 1
            run_id = uuid.uuid4().hex
            visitor = _BagVisitor(run_id, bag_kwargs, threads)
            pipeline.visit(visitor)
            log.info("Dask runner: %d ParDo steps on %s", len(visitor.metrics_bags),
                     client.scheduler.address)
            futures = client.compute(visitor.metrics_bags)
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise
        return DaskJobResult(client, cluster, list(futures), run_id)
