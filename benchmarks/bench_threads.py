"""Benchmark: TensorFlow's thread-pool sizes for the training step (intra-op x inter-op).

    python benchmarks/bench_threads.py [--configs quickstart,cifar10_cpu] \
        [--settings '0,0;2,1;1,2'] [--repeats 4] [--block_steps 8] [--out FILE]

For each configuration, one worker process per setting ``intra,inter[,variant]`` (0 =
TensorFlow's default: one thread per schedulable CPU) sets
``tf.config.threading.set_{intra,inter}_op_parallelism_threads`` before any op runs, builds
the minimal step ``variant`` of ``bench_step_speed.py`` (default: today's default,
``todays_default``: XLA or not as the trainer would choose, separate calls, the
1x1-checkerboard shortcut, bfloat16 where ``auto`` picks it; ``xla_separate_whole1x1`` is
the original default) on the same pre-made batches, and waits. So
``--settings '0,0,xla_separate_whole1x1;0,0;1,2'`` times today's default step with TF's
pools and with the pools ``pipeline.train`` now sets (intra 1 / inter = CPUs) against the
step the trainer ran when the training-speed issue was filed, in one run. The parent then
asks the workers in turn for blocks of ``--block_steps`` steps, rotating the order every
repeat, so the settings are interleaved
in time while each keeps its compiled step; idle workers only wait on their stdin. The
matmul and convolution peaks (fp32, bf16: ``bench_step_speed.peaks``) are measured first in
the parent, each worker counts its step's FLOPs (TF op statistics), and each setting's
GFLOP/s is given against every peak. It
prints the median step time of each setting and its speed-up over the first setting (the
default, ``0,0``), by medians and by the median of per-repeat ratios, and the 1-minute load
average (compare ratios only from a machine with nothing else running).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))


def worker(config: str, data_dir: str, intra: int, inter: int, variant: str) -> int:
    """One setting: build the step, print 'ready <first call s> <variant> <FLOPs per step>',
    then answer each stdin line 'run K' with a JSON list of K per-step times (s) until
    'quit'."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    sys.path.insert(0, HERE)
    import bench_step_speed
    from step_flops import profiler_total
    tmp = tempfile.mkdtemp(prefix="bench_threads_worker_")
    _, _, steps, batches = bench_step_speed.build(config, data_dir, tmp, 8, only=variant)
    (variant, step), = steps.items()
    start = time.perf_counter()
    float(step(batches[0]))
    first = time.perf_counter() - start
    float(step(batches[1]))
    flops = profiler_total(step.get_concrete_function(batches[0]).graph)
    print(f"ready {first:.1f} {variant} {flops}", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        print(json.dumps(bench_step_speed.time_block(step, batches, int(cmd[1]))), flush=True)
    return 0


def parse_settings(text: str) -> list[tuple[int, int, str]]:
    """'0,0;2,1,xla_separate' -> [(0, 0, 'default'), (2, 1, 'xla_separate')]; a usage error
    names the flag and the expected form."""
    try:
        out = []
        for part in (p for p in text.split(";") if p):
            fields = part.split(",")
            if len(fields) not in (2, 3) or min(int(v) for v in fields[:2]) < 0:
                raise ValueError
            out.append((int(fields[0]), int(fields[1]),
                        fields[2] if len(fields) == 3 else "default"))
        if not out or len(set(out)) != len(out):
            raise ValueError
    except ValueError:
        raise SystemExit(f"--settings: expected distinct 'intra,inter[,variant]' separated by "
                         f"';', thread counts integers >= 0, got {text!r}") from None
    return out


def time_config(config: str, data_dir: str, settings: list[tuple[int, int, str]], repeats: int,
                block_steps: int, peak: dict[str, float]) -> list[str]:
    """The report lines of one configuration."""
    procs = {}
    ready = {}
    for s in settings:  # built one at a time: a build is not timed, but would slow the others
        procs[s] = subprocess.Popen(
            [sys.executable, __file__, "--worker", config, data_dir, str(s[0]), str(s[1]), s[2]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = procs[s].stdout.readline().split()
        if not line or line[0] != "ready":
            raise SystemExit(f"worker {s} of {config} failed to start")
        ready[s] = (float(line[1]), line[2], float(line[3]))
    times = {s: [] for s in settings}
    blocks = {s: [] for s in settings}
    for r in range(repeats):
        for s in settings[r % len(settings):] + settings[:r % len(settings)]:
            procs[s].stdin.write(f"run {block_steps}\n")
            procs[s].stdin.flush()
            block = json.loads(procs[s].stdout.readline())
            times[s].extend(block)
            blocks[s].append(statistics.median(block))
    for p in procs.values():
        p.stdin.write("quit\n")
        p.stdin.flush()
        p.wait()
    base = settings[0]
    lines = [f"{config}:"]
    for s in settings:
        med = statistics.median(times[s])
        pairs = [a / b for a, b in zip(blocks[base], blocks[s])]
        lines.append(f"  {ready[s][1]} intra {s[0]} inter {s[1]}: {med * 1e3:8.1f} ms/step; "
                     f"speed-up over {ready[base][1]} intra {base[0]} inter {base[1]}: "
                     f"{statistics.median(times[base]) / med:.3f}x (medians), "
                     f"{statistics.median(pairs):.3f}x (median of per-repeat ratios); "
                     f"first call {ready[s][0]:.1f} s")
        gflops = ready[s][2] / 1e9 / med
        lines.append(f"    {ready[s][2] / 1e9:.1f} GFLOP per step, {gflops:.1f} GFLOP/s = "
                     + ", ".join(f"{100 * gflops / v:.0f} % of the {k} peak"
                                 for k, v in peak.items()))
    lines.append(f"  ({repeats} repeats of {block_steps}-step blocks per setting)")
    return lines


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        config, data_dir, intra, inter, variant = sys.argv[2:7]
        return worker(config, data_dir, int(intra), int(inter), variant)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="quickstart,cifar10_cpu")
    p.add_argument("--settings", default="0,0;2,1;1,2",
                   help="intra,inter[,variant] per setting; the first is the baseline")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--block_steps", type=int, default=8)
    p.add_argument("--out", default="")
    args = p.parse_args()
    settings = parse_settings(args.settings)
    sys.path.insert(0, HERE)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import bench_step_speed  # after argument checks: it imports TensorFlow
    import report
    names = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(names) - set(bench_step_speed.CONFIGS))
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; expected some of "
                         f"{sorted(bench_step_speed.CONFIGS)}")
    tmp = tempfile.mkdtemp(prefix="bench_threads_")
    loads = [os.getloadavg()[0]]
    peak = bench_step_speed.peaks()  # this process, TF's default pools, before any worker
    lines = ["peaks (GFLOP/s, median of 5): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())]
    data = {}
    for name in names:
        kind = bench_step_speed.CONFIGS[name][1]
        if kind not in data:
            data[kind] = bench_step_speed.make_data(kind, tmp)
        new = time_config(name, data[kind], settings, args.repeats, args.block_steps, peak)
        loads.append(os.getloadavg()[0])
        print("\n".join(new), flush=True)
        lines += new
    cpus = len(os.sched_getaffinity(0))
    lines.append(f"1-minute load average {min(loads):.2f}-{max(loads):.2f} on {cpus} CPUs "
                 f"(the timed worker's own threads count)")
    return report.emit_report(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
