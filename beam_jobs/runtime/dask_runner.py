"""Beam's Dask runner (``apache_beam.runners.dask``) completed for the beam_jobs pipelines.

Select it with ``--runner=DaskRunner`` (:mod:`beam_jobs.runtime.beam_options` maps the name here).
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

import logging
import math
import os
import uuid
from typing import Any, Optional

from apache_beam import ParDo, pvalue
from apache_beam.internal import pickler
from apache_beam.metrics.execution import MetricUpdates
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import overrides, transform_evaluator
from apache_beam.runners.direct.direct_metrics import DirectMetrics
from apache_beam.runners.runner import PipelineResult, PipelineState

from beam_jobs.runtime.dask_bundles import (
    ParDoSpec,
    as_list,
    main_tag,
    metrics_of,
    outputs_of,
    release_run,
    run_bundle,
)

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
        spec = ParDoSpec(
            run_id=self.run_id, label=node.full_label, do_fn=pickler.dumps(transform.fn),
            args=list(args),
            kwargs=dict(kwargs), window_fn=main_input.windowing.windowfn,
            side_views=[(type(si), si._view_options(), si._window_mapping_fn) for si in sides])
        side_values = [dask.delayed(as_list, pure=True)(self.bags[si.pvalue]) for si in sides]
        # one graph key for the spec: shipped to each worker once, not with every task
        shared_spec = dask.delayed(spec, pure=True)
        raw = input_bag.map_partitions(run_bundle, shared_spec, *side_values)
        for tag, out in node.outputs.items():
            self.bags[out] = raw.map_partitions(outputs_of, main_tag(tag))
        self.metrics_bags.append(raw.map_partitions(metrics_of))


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
