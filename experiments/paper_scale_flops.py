"""FLOPs, parameters and memory of one paper-scale training step, and its GPU time.

    python experiments/paper_scale_flops.py --flagfile configs/cifar10.cfg --batch_size 64 \
        [--data_dir /work/scratch/cifar10] [--xla] [--measure_batches 16,64 --measure_steps 3] \
        [--utilisation 0.3] [--out experiments/results/paper_scale_flops.txt]

The step is the one ``benchmarks/bench_train_step.py`` times as its baseline
(``minimal_step_fn``: the trainer's losses and updates, D first, then G, Adam), built the
same way: the model from the flagfile through ``pipeline.config_flags`` and
``pipeline.trainer.model_config_for_data``, the optimizers, the input spec of
``make_train_dataset`` at ``--batch_size``. Its concrete function's graph is counted

* by TF's profiler, ``tf.compat.v1.profiler.profile(graph, float_operation())``: the op
  statistics registered for the graph's ops (convolutions, their two backprops, matmuls,
  bias adds and a few element-wise ops; activations, exp, tanh, ... have none and count 0);
* op by op with the same statistics (``ops.get_stats_for_node_def``), split by network
  from the op names (Keras name scopes: ``coupling_net_*`` = flow, ``encoder`` and the IAF
  posterior's MADEs = encoder, ``decoder``, ``discriminator``), forward vs backward (ops
  under ``gradient_tape/``), and the flow into its two passes, f(x) of L_MLE and
  f^-1(mu(z)) of the fakes;
* with ``--xla``: from the XLA HLO the graph lowers to (``stage='hlo'``, before XLA's
  optimisations; TF exposes no XLA cost analysis), 2 x MACs of every ``convolution`` and
  ``dot``, split by network from each instruction's TF op name;
* by hand for the coupling nets (2 H W k^2 C_in C_out per conv per image, forward).

No step is executed for the count. ``--measure_batches`` also runs the real trainer,
``python -m pipeline.train --flagfile ... --train_steps N`` (validation off), once per batch
size, and reports its peak RSS (``wait4``), CPU seconds, seconds per step after the first
(from the progress bar's elapsed time) and the load average; the RSS difference between
two batch sizes over their difference is the memory per example. ActNorm's data init runs
on one batch (``--data_init_batch`` = the batch size; the default 256 images would set
the peak at small batches) and the final grid has 16 samples, to keep the CPU use short.

The projection divides the FLOPs by an assumed fraction (``--utilisation``) of an NVIDIA
A100's peak: 19.5 TFLOP/s fp32 (CUDA cores) and 156 TFLOP/s TF32 (tensor cores, TF's
default for float32 convolutions and matmuls on Ampere).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # its shared helpers (never the reverse)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from paper_scale_graph import (  # noqa: E402
    NETWORKS,
    build_step,
    count_params,
    coupling_flops_by_hand,
    graph_flops,
)
from paper_scale_hlo import hlo_flops  # noqa: E402
from paper_scale_trainer_run import measure_trainer  # noqa: E402
from step_flops import profiler_total  # noqa: E402

A100_PEAKS = (("fp32 (19.5 TFLOP/s)", 19.5e12), ("TF32 tensor cores (156 TFLOP/s)", 156e12))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flagfile", default=os.path.join(ROOT, "configs", "cifar10.cfg"))
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--data_dir", default="",
                   help="the preprocessed data set (default: the flagfile's --data_dir)")
    p.add_argument("--xla", action="store_true",
                   help="cross-check the count on the step's XLA HLO (stage='hlo')")
    p.add_argument("--measure_batches", default="",
                   help="comma-separated batch sizes to run the real trainer at (e.g. 16,64)")
    p.add_argument("--measure_steps", type=int, default=3)
    p.add_argument("--utilisation", type=float, default=0.3,
                   help="assumed fraction of the GPU's peak reached (an assumption)")
    p.add_argument("--out", default="")
    args = p.parse_args()

    flagfile = os.path.abspath(args.flagfile)
    data_dir = args.data_dir
    if not data_dir:
        with open(flagfile) as f:
            found = re.search(r"^--data_dir=(\S+)", f.read(), re.M)
        data_dir = os.path.join(ROOT, found.group(1))
    work = tempfile.mkdtemp(prefix="paper_scale_flops_")
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    t0 = time.time()
    model, model_config, cfg, spec, make_step = build_step(
        flagfile, data_dir, args.batch_size, os.path.join(work, "model"))
    graph = make_step(False).get_concrete_function(spec).graph
    trace_s = time.time() - t0
    by_net, by_flow_pass, by_type, unknown, calls = graph_flops(graph)
    total = sum(by_net.values())
    prof_total = profiler_total(graph)

    say(f"{model_config.variant} from {os.path.relpath(flagfile, ROOT)} on "
        f"{'x'.join(map(str, model_config.image_shape))} images, batch {args.batch_size}: "
        f"one training step (bench_train_step.minimal_step_fn: D update with R1, then G: "
        f"L_MLE + lambda_adv L_adv), graph of {len(graph.get_operations())} ops "
        f"(built and traced in {trace_s:.0f} s)")
    say(f"TF profiler (tf.compat.v1.profiler, float_operation): "
        f"{prof_total / 1e9:,.1f} GFLOP per step")
    say(f"op by op, same statistics: {total / 1e9:,.1f} GFLOP per step "
        f"({total / args.batch_size / 1e9:.2f} GFLOP per image)")
    say("  by op type: " + ", ".join(f"{t} {v / 1e9:,.1f}" for t, v in by_type.most_common(6)))
    if unknown:
        say(f"  ops left out (shapes not fully defined): {dict(unknown)}")
    if calls:
        say("  not entered (function calls / control flow, whose bodies the profiler does not "
            "count either): " + ", ".join(f"{n} {k} x{c}" for (n, k), c in sorted(calls.items()))
            + " (spectral normalisation's power iteration: matrix-vector products, "
              "< 0.1 GFLOP in all)")

    groups = model.generator_variable_groups()
    params = {"flow": count_params(groups.get("flow", [])),
              "encoder": count_params(groups.get("encoder", [])),
              "decoder": count_params(groups.get("decoder", [])),
              "discriminator": count_params(model.discriminator_variables),
              "other": count_params(groups.get("prior", []))}
    say()
    say(f"{'network':<16}{'forward':>11}{'backward':>11}{'total':>11}{'share':>8}"
        f"{'params':>14}")
    for net in NETWORKS:
        fwd, bwd = by_net[(net, "forward")], by_net[(net, "backward")]
        say(f"{net:<16}{fwd / 1e9:>11,.1f}{bwd / 1e9:>11,.1f}{(fwd + bwd) / 1e9:>11,.1f}"
            f"{100 * (fwd + bwd) / total:>7.1f}%{params[net]:>14,}")
    fwd_all = sum(v for (_, d), v in by_net.items() if d == "forward")
    say(f"{'all':<16}{fwd_all / 1e9:>11,.1f}{(total - fwd_all) / 1e9:>11,.1f}"
        f"{total / 1e9:>11,.1f}{100.0:>7.1f}%{sum(params.values()):>14,}")
    say("(GFLOP per step; 'other': losses, optimizer updates, and the trainable prior if "
        "any; backward = ops under gradient_tape/, incl. the R1 penalty's double backprop)")
    say("flow by pass: " + "; ".join(
        f"{name}: forward {by_flow_pass[(name, 'forward')] / 1e9:,.1f}, backward "
        f"{by_flow_pass[(name, 'backward')] / 1e9:,.1f}"
        for name in ("f(x) of L_MLE", "f^-1(mu(z)) of the fakes")))

    hand, hand_lines = coupling_flops_by_hand(model_config)
    graph_coupling_fwd = by_flow_pass[("f(x) of L_MLE", "forward")]
    say()
    say("coupling nets by hand (forward, per image, 2 H W k^2 C_in C_out per conv):")
    for line in hand_lines:
        say(f"  {line}")
    say(f"  total {hand / 1e9:.3f} GFLOP/image; x batch {args.batch_size} = "
        f"{hand * args.batch_size / 1e9:,.1f} GFLOP per pass; the graph's f(x) forward "
        f"(convolutions, bias adds, ActNorm, coupling arithmetic): "
        f"{graph_coupling_fwd / 1e9:,.1f} GFLOP = {graph_coupling_fwd / (hand * args.batch_size):.3f}"
        f" x the hand count")

    if args.xla:
        say()
        t0 = time.time()
        try:
            # With tensors, not TensorSpecs: from TensorSpecs, captured constants (the IAF's
            # tfb.Permute) are not compile-time constants and the lowering fails.
            zeros = {k: tf.zeros(s.shape, s.dtype) for k, s in spec.items()}
            hlo = make_step(True).experimental_get_compiler_ir(zeros)(stage="hlo")
            xla, n_instr = hlo_flops(hlo)
            xla_total = sum(xla.values())
            say(f"XLA HLO of the step traced with jit_compile=True (stage='hlo', "
                f"{len(hlo) / 1e6:.1f} MB of text, traced and lowered in {time.time() - t0:.0f} s): "
                f"{n_instr} convolutions and dots, {xla_total / 1e9:,.1f} GFLOP per step "
                f"(= {xla_total / total:.3f} x the op statistics); by network: "
                + ", ".join(f"{n} {xla[n] / 1e9:,.1f}" for n in NETWORKS))
            say("  (XLA's own cost analysis is not exposed by TensorFlow; this is 2 x the "
                "multiply-adds of each HLO convolution/dot, computed here from its shapes and "
                "window: taps on padding counted, holes of input dilation not)")
        except Exception as err:  # noqa: BLE001 - a cross-check; report and go on
            say(f"XLA HLO cross-check skipped: {type(err).__name__}: {str(err)[:300]}")

    measured = []
    if args.measure_batches:
        say()
        say(f"the real trainer (python -m pipeline.train, {args.measure_steps} steps, "
            f"validation off, jit_compile default = off on CPU; {os.cpu_count()} CPUs):")
        for b in (int(x) for x in args.measure_batches.split(",")):
            m = measure_trainer(flagfile, data_dir, b, args.measure_steps, work)
            measured.append(m)
            say(f"  batch {b:>3}: peak RSS {m['rss_mb']:,.0f} MB, {m['s_per_step']:.1f} s/step "
                f"(steps 2-{args.measure_steps}; first step incl. tracing "
                f"{m['first_step_s']:.0f} s), wall {m['wall_s']:.0f} s, CPU {m['cpu_s']:.0f} s, "
                f"1-min load average {m['load_min']:.1f}-{m['load_max']:.1f}")
        if len(measured) >= 2:
            lo, hi = min(measured, key=lambda m: m["batch"]), max(measured, key=lambda m: m["batch"])
            per_example = (hi["rss_mb"] - lo["rss_mb"]) / (hi["batch"] - lo["batch"])
            fixed = lo["rss_mb"] - per_example * lo["batch"]
            say(f"  memory per example: ({hi['rss_mb']:,.0f} - {lo['rss_mb']:,.0f}) MB / "
                f"({hi['batch']} - {lo['batch']}) = {per_example:.1f} MB; fixed part "
                f"{fixed:,.0f} MB (CPU peak RSS; a GPU's activation memory is comparable, "
                f"its fixed part differs)")
        say(f"  command: {measured[0]['cmd'] if measured else ''}")

    say()
    util = args.utilisation
    say(f"projection for one NVIDIA A100 at an ASSUMED {100 * util:.0f}% of peak (an assumption, "
        f"not a measurement; convnets of 128-512 channels on 4x4-32x32 maps), "
        f"{total / 1e9:,.0f} GFLOP per step, {cfg.train_steps:,} steps (the config's "
        f"--train_steps):")
    for name, peak in A100_PEAKS:
        step_s = total / (peak * util)
        run_h = step_s * cfg.train_steps / 3600
        say(f"  {name:<34} {step_s * 1e3:8.1f} ms/step, {run_h:7.1f} h per run "
            f"({run_h / 24:.1f} days); at 100% of peak {total / peak * 1e3:.1f} ms/step")
    if measured:
        cpu = max(measured, key=lambda m: m["batch"])
        if cpu["batch"] == args.batch_size and math.isfinite(cpu["s_per_step"]):
            say(f"  (the CPU here: {cpu['s_per_step']:.0f} s/step at batch {cpu['batch']} = "
                f"{total / cpu['s_per_step'] / 1e9:.0f} GFLOP/s achieved; "
                f"{cpu['s_per_step'] * cfg.train_steps / 86400 / 365:.1f} years per run)")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
