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
import collections
import dataclasses
import math
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # its shared helpers (never the reverse)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402
from bench_train_step import minimal_step_fn  # noqa: E402
from step_flops import profiler_total  # noqa: E402
from tensorflow.python.framework import ops as tf_ops  # noqa: E402

from pipeline import config_flags  # noqa: E402
from pipeline import data as data_lib  # noqa: E402
from pipeline.trainer import make_train_dataset, model_config_for_data  # noqa: E402
from tfp_models.hybrid import HybridModel  # noqa: E402

NETWORKS = ("flow", "encoder", "decoder", "discriminator", "other")
A100_PEAKS = (("fp32 (19.5 TFLOP/s)", 19.5e12), ("TF32 tensor cores (156 TFLOP/s)", 156e12))


def network_of(op_name: str) -> str:
    """The network an op belongs to, from its (Keras name-scoped) TF op name."""
    if "coupling_net_" in op_name or "actnorm" in op_name or "feature_flow" in op_name:
        return "flow"
    if "discriminator" in op_name or "spectral_normalization" in op_name:
        return "discriminator"
    if "decoder" in op_name:
        return "decoder"
    if ("encoder" in op_name or "made_" in op_name or "masked_autoregressive" in op_name
            or "posterior" in op_name):
        return "encoder"
    return "other"


def flow_pass_of(op_name: str) -> str:
    return "f^-1(mu(z)) of the fakes" if "inverse" in op_name else "f(x) of L_MLE"


# ---------------------------------------------------------------- the step and its graph

def build_step(flagfile: str, data_dir: str, batch_size: int, model_dir: str):
    """(model, model config, train config, the batch's TensorSpecs, make_step):
    ``make_step(jit_compile)`` is the minimal step as a tf.function (traced with
    ``jit_compile=True``, control flow such as spectral normalisation's cond gets
    XLA-compatible gradients; without it, TF's Optional ops that XLA cannot lower)."""
    info = data_lib.read_dataset_info(data_dir)
    fv = flags.FlagValues()
    config_flags.define_train_flags(fv)
    fv(["paper_scale_flops", f"--flagfile={flagfile}", f"--data_dir={data_dir}",
        f"--model_dir={model_dir}", f"--batch_size={batch_size}"])
    model_values, cfg = config_flags.train_configs_from_flags(fv)
    model_config = model_config_for_data(model_values, cfg, info)
    keras.utils.set_random_seed(cfg.seed)
    model = HybridModel(model_config)
    g_opt = keras.optimizers.Adam(cfg.learning_rate, beta_1=cfg.adam_beta1)
    d_opt = keras.optimizers.Adam(cfg.disc_learning_rate, beta_1=cfg.disc_adam_beta1,
                                  beta_2=cfg.disc_adam_beta2)
    g_opt.build(model.generator_variables)
    d_opt.build(model.discriminator_variables)
    element_spec = make_train_dataset(info, cfg, 0, model.noise_shapes()).element_spec
    spec = {k: tf.TensorSpec((batch_size,) + tuple(s.shape[1:]), s.dtype)
            for k, s in element_spec.items()}
    def make_step(jit_compile: bool):  # ActNorm's data init is not needed to count
        return minimal_step_fn(model, dataclasses.replace(cfg, jit_compile=jit_compile),
                               g_opt, d_opt)

    return model, model_config, cfg, spec, make_step


def graph_flops(graph: tf.Graph):
    """Per (network, 'forward'/'backward') FLOPs of ``graph``'s ops from the registered op
    statistics; flow FLOPs by pass; FLOPs by op type; ops with unknown shapes; the
    function-call and control-flow ops whose bodies the count does not enter."""
    by_net = collections.Counter()
    by_flow_pass = collections.Counter()
    by_type = collections.Counter()
    unknown, calls = collections.Counter(), collections.Counter()
    for op in graph.get_operations():
        if op.type in ("PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf",
                       "While", "StatelessWhile", "Case"):
            calls[(network_of(op.name), op.type)] += 1
        try:
            flops = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        except ValueError:  # a shape the statistic needs is not fully defined
            unknown[op.type] += 1
            continue
        if not flops:
            continue
        net = network_of(op.name)
        direction = "backward" if op.name.startswith("gradient_tape/") else "forward"
        by_net[(net, direction)] += flops
        by_type[op.type] += flops
        if net == "flow":
            by_flow_pass[(flow_pass_of(op.name), direction)] += flops
    return by_net, by_flow_pass, by_type, unknown, calls


# ---------------------------------------------------------------- XLA cross-check

_SHAPE = re.compile(r"\w+\[([\d,]*)\]")
_DEF = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d]


def _convolution_macs(line: str, rhs: list[int], out: list[int]) -> int:
    """Multiply-adds of one HLO convolution: per output element, the window taps that do
    not fall into holes of an input dilation (``lhs_dilate``, how XLA writes the input
    gradient of a strided convolution and a transposed convolution); taps on padding count,
    as in TF's op statistics."""
    rhs_labels, out_labels = re.search(r"dim_labels=\w+_(\w+)->(\w+)", line).groups()
    window = dict(f.split("=") for f in re.search(r"window=\{([^}]*)\}", line).group(1).split())
    size = _xdims(window["size"])
    ndim = len(size)
    stride = _xdims(window.get("stride", "x".join(["1"] * ndim)))
    lhs_dilate = _xdims(window.get("lhs_dilate", "x".join(["1"] * ndim)))
    rhs_dilate = _xdims(window.get("rhs_dilate", "x".join(["1"] * ndim)))
    pad_low = [int(p.split("_")[0]) for p in window.get("pad", "x".join(["0_0"] * ndim)).split("x")]
    taps = 1
    for d in range(ndim):
        o = out[out_labels.index(str(d))]
        taps *= sum((i * stride[d] + j * rhs_dilate[d] - pad_low[d]) % lhs_dilate[d] == 0
                    for i in range(o) for j in range(size[d]))
    return (out[out_labels.index("b")] * out[out_labels.index("f")]
            * rhs[rhs_labels.index("i")] * taps)


def _xdims(text: str) -> list[int]:
    return [int(d) for d in text.split("x")]


def hlo_flops(hlo: str) -> tuple[collections.Counter, int]:
    """2 x multiply-adds of every convolution and dot of an HLO module's text, by network
    (from the TF op name in each instruction's metadata); and the instruction count."""
    shapes: dict[str, list[int]] = {}
    counted, count = collections.Counter(), 0
    for line in hlo.splitlines():
        m = _DEF.match(line)
        if not m:
            continue
        shapes[m.group(1)] = _dims(m.group(2))
        opcode = re.search(r"\]\S*\s+(convolution|dot)\(", line)
        if not opcode:
            continue
        out = _dims(m.group(2))
        start = opcode.end()
        args = line[start:line.index(")", start)]
        operand_shapes = [_dims(s) for s in _SHAPE.findall(args)]
        if len(operand_shapes) < 2:  # operands printed without shapes: look them up
            names = [a.strip().split()[-1].lstrip("%") for a in args.split(",")]
            operand_shapes = [shapes[n] for n in names]
        lhs, rhs = operand_shapes[0], operand_shapes[1]
        if opcode.group(1) == "convolution":
            macs = _convolution_macs(line, rhs, out)
        else:
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1)
            macs = math.prod(out) * math.prod(lhs[i] for i in _dims(contracting))
        name = _OP_NAME.search(line)
        counted[network_of(name.group(1) if name else "")] += 2 * macs
        count += 1
    return counted, count


# ---------------------------------------------------------------- by hand

def coupling_flops_by_hand(model_config) -> tuple[float, list[str]]:
    """Forward FLOPs per image of every coupling net of the multi-scale Real NVP
    (tfp_models.flows.feature_flow.build_feature_flow: per scale 3 checkerboard couplings,
    squeeze, 3 channel couplings, factor out half; 4 checkerboard couplings at the last
    scale), counting 2 H W k^2 C_in C_out per convolution (no biases); and the lines."""
    h, w, c = model_config.image_shape
    hid, blocks, k = (model_config.flow_hidden, model_config.flow_res_blocks,
                      model_config.flow_kernel_size)

    def net(hh, ww, c_in, c_out):  # in_conv, 2 convs per residual block, out_conv (s and t)
        return 2 * hh * ww * k * k * (c_in * hid + 2 * blocks * hid * hid + hid * 2 * c_out)

    total, lines = 0.0, []
    for level in range(model_config.flow_scales):
        last = level == model_config.flow_scales - 1
        n_check = 4 if last else 3
        f = n_check * net(h, w, c + 1, c)  # checkerboard: x * mask and the mask in
        lines.append(f"scale {level}: {n_check} checkerboard couplings at {h}x{w}, net "
                     f"{c + 1}->{hid}x{2 * blocks + 1}->{2 * c}: {f / 1e9:.3f} GFLOP/image")
        total += f
        if last:
            break
        h, w, c4 = h // 2, w // 2, 4 * c
        f = 3 * net(h, w, c4 // 2, c4 - c4 // 2)  # channel couplings on half the channels
        lines.append(f"scale {level}: 3 channel couplings at {h}x{w}, net {c4 // 2}->"
                     f"{hid}x{2 * blocks + 1}->{2 * (c4 - c4 // 2)}: {f / 1e9:.3f} GFLOP/image")
        total += f
        c = c4 - c4 // 2
    return total, lines


def count_params(variables) -> int:
    return int(sum(math.prod(v.shape) for v in variables))


# ---------------------------------------------------------------- the real trainer

_ELAPSED = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<")


def measure_trainer(flagfile: str, data_dir: str, batch_size: int, steps: int,
                    work: str) -> dict:
    """Runs ``python -m pipeline.train`` for ``steps`` steps at ``batch_size``; returns its
    peak RSS (MB), CPU seconds, wall seconds, seconds per step after the first (progress
    bar elapsed times, 1 s resolution) and the 1-minute load averages seen."""
    model_dir = os.path.join(work, f"batch{batch_size}")
    cmd = [sys.executable, "-m", "pipeline.train", f"--flagfile={flagfile}",
           f"--data_dir={data_dir}", f"--model_dir={model_dir}", f"--train_steps={steps}",
           f"--checkpoint_every={steps}", "--validation_every=0", "--sample_every=1000",
           f"--mlflow_tracking_uri=sqlite:///{os.path.join(work, 'mlflow.db')}",
           f"--batch_size={batch_size}", f"--data_init_batch={batch_size}",
           "--num_grid_samples=16"]
    log_path = os.path.join(work, f"batch{batch_size}.log")
    loads, start = [os.getloadavg()[0]], time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(5)
            loads.append(os.getloadavg()[0])
    wall = time.time() - start
    with open(log_path) as f:
        text = f.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log_path}:\n{text[-3000:]}")
    elapsed = {}
    for m in _ELAPSED.finditer(text):
        elapsed[int(m.group(1))] = (int(m.group(3) or 0) * 3600 + int(m.group(4)) * 60
                                    + int(m.group(5)))
    per_step = ((elapsed[steps] - elapsed[1]) / (steps - 1)
                if steps > 1 and 1 in elapsed and steps in elapsed else float("nan"))
    return {"batch": batch_size, "rss_mb": usage.ru_maxrss / 1024.0,
            "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
            "first_step_s": elapsed.get(1, float("nan")), "s_per_step": per_step,
            "load_min": min(loads), "load_max": max(loads), "cmd": " ".join(cmd)}


# ---------------------------------------------------------------- report

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
