"""Profile of the minimal training step: share of op time by network and by op type.

    python benchmarks/profile_step.py [--configs quickstart,cifar10_cpu,cifar10_cpu_k3] \
        [--steps 10] [--sessions 2] [--out benchmarks/results/profile_step.txt]

Step, configurations and data are ``bench_step_speed.py``'s (``CONFIGS``, ``make_data``,
``build``); the variant is ``onednn_separate`` (today's CPU default: no XLA, oneDNN kernels,
separate decoder/discriminator calls). Per configuration: first call and 2 warm steps,
``--steps`` unprofiled steps (median: the wall time), then ``--sessions`` x ``--steps``
steps under TF's profiler (``tf.profiler.experimental.start/stop``). Each trace's
``*.xplane.pb`` (``XSpace``) is parsed: the host plane has one event per executed TF op
(``name:Type``, on the executor's ``tf_Compute`` threads) named with the graph's scopes
(``decoder/...``, ``gradient_tape/coupling_net_3/...``). Op durations are summed
- by network, from the first scope naming one: flow (``feature_flow``, ``coupling_net_*``,
  ``actnorm_*``, ``logit_preprocess``: coupling nets, actnorms, the flow's affine/logit
  ops), encoder (+ ``posterior``), decoder, discriminator; forward and backward together.
  Unscoped gradient sums (``AddN_*``) take their graph inputs' network; the rest is
  "other" (Adam's updates, losses, dequantisation);
- by op type (top ``--top``) and coarse group (with each group's split by network).
Op time is summed over the 2 inter-op threads, which run ops concurrently: it can exceed
the wall time; the share of profiled wall time with >= 1 op running is printed too. FLOPs:
TF's registered op statistics over the step's graph (as ``step_flops.py``), same classes.
XLA variants run one cluster op without network scopes: not attributable this way. Shares
depend less on machine load than absolute times (load average printed before/after), but
on a busy machine small, overhead-bound ops (many in the flow) are inflated most.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import glob
import os
import re
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from bench_step_speed import CONFIGS, build, make_data  # noqa: E402
from tensorflow.python.framework import ops as tf_ops  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

NETWORKS = ("flow", "encoder", "decoder", "discriminator", "other")
SCOPES = {"feature_flow": "flow", "feature_flow_nets": "flow", "coupling_net": "flow",
          "actnorm": "flow", "logit_preprocess": "flow", "encoder": "encoder",
          "posterior": "encoder", "decoder": "decoder", "discriminator": "discriminator"}
GROUPS = {  # op type -> coarse group (types not listed: "other")
    "conv fwd": ("Conv2D", "_FusedConv2D"), "conv bwd input": ("Conv2DBackpropInput",),
    "conv bwd filter": ("Conv2DBackpropFilter",), "gradient sums (AddN)": ("AddN",),
    "matmul": ("MatMul", "_FusedMatMul", "BatchMatMulV2"),
    "element-wise": tuple("Relu ReluGrad LeakyRelu LeakyReluGrad AddV2 Add Sub Mul RealDiv "
                          "Exp Log Log1p Sqrt Rsqrt Square Neg Tanh TanhGrad Sigmoid "
                          "SigmoidGrad Softplus SoftplusGrad Pow Maximum Minimum Cast Equal "
                          "Select SelectV2 _UnaryOpsComposition BiasAdd Fill ZerosLike "
                          "OnesLike Floor Abs Reciprocal SquaredDifference".split()),
    "reductions": ("Sum", "Mean", "Max", "Min", "Prod", "All", "Any", "BiasAddGrad"),
    "transposes/copies": tuple("Transpose ConcatV2 Split SplitV Slice StridedSlice "
                               "StridedSliceGrad Pad Reshape SpaceToDepth DepthToSpace Tile "
                               "Pack Unpack Identity GatherV2".split()),
    "variables/updates": ("ReadVariableOp", "AssignVariableOp", "AssignAddVariableOp",
                          "AssignSubVariableOp", "ResourceApplyAdam"),
}
GROUP_OF = {t: g for g, types in GROUPS.items() for t in types}


def network_of(name: str) -> str:
    """The network of an op name: its first scope component naming one, else 'other'."""
    for part in name.split("/"):
        net = SCOPES.get(re.sub(r"(_\d+)+$", "", part))
        if net:
            return net
    return "other"


def graph_networks(graph: tf.Graph) -> dict[str, str]:
    """{op name: network} for the step's graph; unscoped gradient sums (AddN) take the
    network of their inputs (followed back through unscoped ops, up to 4 levels)."""
    def resolve(op, depth):
        net = network_of(op.name)
        if net != "other" or depth == 0:
            return net
        found = {resolve(i.op, depth - 1) for i in op.inputs} - {"other"}
        return found.pop() if len(found) == 1 else "other"

    return {op.name: resolve(op, 4) if op.type == "AddN" else network_of(op.name)
            for op in graph.get_operations()}


def flops_by_network(graph: tf.Graph, nets: dict[str, str]) -> collections.Counter:
    flops = collections.Counter()
    for op in graph.get_operations():
        stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
        flops[nets[op.name]] += stats.value or 0
    return flops


def read_ops(logdir: str):
    """[(op name, op type, start ps, duration ps)] of the host plane's TF op events."""
    paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    plane, events = next(p for p in space.planes if p.name.startswith("/host:CPU")), []
    for line in plane.lines:
        for e in line.events:
            meta = plane.event_metadata[e.metadata_id]
            if meta.display_name and meta.name.endswith(":" + meta.display_name):
                events.append((meta.name[:-len(meta.display_name) - 1], meta.display_name,
                               line.timestamp_ns * 1000 + e.offset_ps, e.duration_ps))
    return events


def busy_ps(events) -> int:
    """Length of the union of the events' intervals (time with at least one op running)."""
    total, end = 0, -1
    for _, _, start, dur in sorted(events, key=lambda e: e[2]):
        if start + dur > end:
            total += start + dur - max(start, end)
            end = start + dur
    return total


def tally(events, nets):
    """Op time by network, type, group, (network, group); op counts; unmatched op time."""
    by_net, by_type, by_group, matrix, count = (collections.Counter() for _ in range(5))
    unknown = 0
    for op_name, op_type, _, dur in events:
        net = nets.get(op_name)
        if net is None:  # classified by its own name
            net, unknown = network_of(op_name), unknown + dur
        group = GROUP_OF.get(op_type, "other")
        by_net[net] += dur
        by_type[op_type] += dur
        by_group[group] += dur
        matrix[net, group] += dur
        count[net] += 1
    assert sum(by_net.values()) == sum(by_type.values()) == sum(by_group.values()) > 0
    return by_net, by_type, by_group, matrix, count, unknown


def profile_config(name: str, data_dir: str, tmp: str, args) -> list[str]:
    model_config, cfg, steps, batches = build(name, data_dir, tmp, 4)
    step = steps[args.variant]
    start = time.perf_counter()
    float(step(batches[0]))
    first = time.perf_counter() - start
    plain = []
    for i in range(args.steps + 2):  # 2 warm steps, then the timed ones
        start = time.perf_counter()
        float(step(batches[i % len(batches)]))
        plain.append(time.perf_counter() - start)
    plain = plain[2:]
    events, session_nets, profiled, busy = [], [], 0.0, 0  # busy: per session (own clock)
    nets = graph_networks(graph := step.get_concrete_function(batches[0]).graph)
    for s in range(args.sessions):
        logdir = os.path.join(tmp, f"profile_{name}_{s}")
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for i in range(args.steps):
            float(step(batches[i % len(batches)]))
        profiled += time.perf_counter() - start
        tf.profiler.experimental.stop()
        session = read_ops(logdir)
        events, busy = events + session, busy + busy_ps(session)
        by = tally(session, nets)[0]
        session_nets.append({k: v / sum(by.values()) for k, v in by.items()})
    by_net, by_type, by_group, matrix, count, unknown = tally(events, nets)
    op_total = sum(by_net.values())
    flops = flops_by_network(graph, nets)
    total_flops = sum(flops.values())
    n = args.steps * args.sessions
    lines = [
        f"{name} ({CONFIGS[name][0]} {' '.join(CONFIGS[name][2])}; {model_config.variant}, "
        f"batch {cfg.batch_size}), variant {args.variant}:",
        f"  wall: {1e3 * statistics.median(plain):.0f} ms/step unprofiled (median of "
        f"{args.steps}), {1e3 * profiled / n:.0f} ms/step profiled ({args.sessions} sessions "
        f"of {args.steps} steps); first call {first:.1f} s",
        f"  counted op time: {op_total / 1e9 / n:.0f} ms/step over {len(events) // n} op "
        f"events/step = {100 * op_total / 1e12 / profiled:.0f} % of the profiled wall time "
        f"(2 inter-op threads: can exceed 100 %); at least one op running "
        f"{100 * busy / 1e12 / profiled:.0f} % of it; ops not in the step's graph "
        f"(classified by name alone) {100 * unknown / op_total:.1f} % of op time",
        "  share of op time by network, forward + backward [range over sessions]; "
        "op events/step; GFLOP/step (TF op statistics):"]
    for net in NETWORKS:
        low, high = (f(x.get(net, 0.0) for x in session_nets) for f in (min, max))
        lines.append(f"    {net:14s}{100 * by_net[net] / op_total:6.1f} % [{100 * low:4.1f}-"
                     f"{100 * high:4.1f}]{count[net] // n:7d} ops{flops[net] / 1e9:8.2f} GFLOP "
                     f"({100 * flops[net] / total_flops:3.0f} %)")
    lines += [
        f"    {'sum':14s}{100 * sum(by_net.values()) / op_total:6.1f} %"
        f"{sum(count.values()) // n:16d} ops{total_flops / 1e9:8.2f} GFLOP",
        f"  share of op time by op type (top {args.top}):",
        *[f"    {k:26s}{100 * v / op_total:6.1f} %" for k, v in by_type.most_common(args.top)],
        f"    {'(all other types)':26s}"
        f"{100 * sum(v for _, v in by_type.most_common()[args.top:]) / op_total:6.1f} %",
        "  share of op time by op group; (network shares of the group's time: "
        + " / ".join(NETWORKS) + "):"]
    for group, dur in by_group.most_common():
        cols = " / ".join(f"{100 * matrix[net, group] / dur:3.0f}" for net in NETWORKS)
        lines.append(f"    {group:22s}{100 * dur / op_total:6.1f} %   ({cols})")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--steps", type=int, default=10, help="timed and profiled steps each")
    p.add_argument("--sessions", type=int, default=2, help="profiler sessions")
    p.add_argument("--variant", default="onednn_separate")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out", default="")
    args = p.parse_args()
    names = [c for c in args.configs.split(",") if c]
    if set(names) - set(CONFIGS):
        raise SystemExit(f"--configs: expected some of {sorted(CONFIGS)}")
    tmp = tempfile.mkdtemp(prefix="profile_step_")
    load_before = os.getloadavg()
    lines = [f"command: python benchmarks/profile_step.py {' '.join(sys.argv[1:])}",
             f"date: {datetime.datetime.now().isoformat(timespec='seconds')}; TF {tf.__version__}",
             f"load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}"]
    print("\n".join(lines), flush=True)
    data = {kind: make_data(kind, tmp) for kind in {CONFIGS[name][1] for name in names}}
    for name in names:
        block = profile_config(name, data[CONFIGS[name][1]], tmp, args)
        print("\n".join(block), flush=True)
        lines += block
    load_after = os.getloadavg()
    cpus = os.cpu_count() or 1
    idle = max(load_before[0], load_after[0]) < 0.5 * cpus
    lines += [f"load average (1/5/15 min) after: {' '.join(f'{x:.2f}' for x in load_after)} "
              f"on {cpus} CPUs: machine {'idle' if idle else 'NOT idle'}",
              "Shares of op time are less sensitive to machine load than absolute times; "
              "absolute ms above are not comparable across runs on a busy machine."]
    print("\n".join(lines[-2:]))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
