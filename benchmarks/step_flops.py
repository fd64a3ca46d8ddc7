"""The FLOP count of a traced step's graph, shared by ``bench_step_speed.py`` (GFLOP/s and
utilisation of the step) and ``experiments/paper_scale_flops.py`` (the paper-scale step's
cost). A helper, not a benchmark: experiments may import it; nothing here imports
``experiments``."""
from __future__ import annotations

import tensorflow as tf


def profiler_total(graph: tf.Graph) -> float:
    """Total float operations of ``graph`` by tf.compat.v1.profiler (registered op stats)."""
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)
