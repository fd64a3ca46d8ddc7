"""Benchmark: steps/s of the project's trainer vs a hand-written minimal training step.

    python benchmarks/bench_train_step.py [--flagfile configs/quickstart.cfg] \
        [--block_steps 40] [--repeats 5] [--warmup 3] [--out benchmarks/results/bench_train_step.txt]

A (the trainer): ``pipeline.trainer.TrainRunner`` on the flagfile's model and training
settings (quickstart: ``cqf``, one replica, XLA as configured by ``--jit_compile``),
including everything its loop does per step (distributed input, the strategy's step with
its metrics and gradient norms, host copies of the metrics, the NaN check, the progress
bar, MLflow metrics every ``--log_every`` steps). Its schedules that are not per-step work
are moved out of the timed blocks (validation off, checkpoints and grids only at the end
of the run). The step time is the interval between successive ``on_step`` callbacks.

B (the baseline): a minimal ``tf.function`` (same ``jit_compile``) with the same model,
objective and updates (:class:`tfp_models.objective.Objective`: MLE + adversarial, D first,
then G; Adam with the same settings) and nothing else, fed by the same input pipeline;
timed per step the same way.

A and B blocks alternate inside one trainer run (the trainer's ``on_step`` runs a baseline
block after every trainer block; one compilation each); the medians of all step times and
the median of the per-pair ratios are printed, with the 1-minute load average.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from beam_jobs.preprocess import run_preprocess  # noqa: E402
from pipeline import config_flags  # noqa: E402
from pipeline import data as data_lib  # noqa: E402
from pipeline.train_step import default_jit_compile, discriminator_updates  # noqa: E402
from pipeline.trainer import TrainRunner, make_train_dataset, model_config_for_data  # noqa: E402
from tfp_models import flows  # noqa: E402
from tfp_models.hybrid import HybridModel  # noqa: E402
from tfp_models.objective import Objective  # noqa: E402

TIMED_OUT_SCHEDULES = ["--validation_every=0", "--checkpoint_every=1000000",
                       "--sample_every=1000000"]


def minimal_step_fn(model: HybridModel, cfg, g_opt, d_opt, one_pass: bool = True):
    """The minimal step: the trainer's objective and updates (the model's
    :class:`~tfp_models.objective.Objective`, D first with
    :func:`pipeline.train_step.discriminator_updates`, then G), without a strategy, gradient
    norms or metrics. Returns the generator's loss (nats per image).

    ``one_pass``: the trainer's step (one decoder call for the posterior's and the prior's
    latents, one discriminator call for real and fake); False = the step before
    2026-12-06 (the objective's separate calls), the baseline of ``bench_step_speed.py``."""
    scale = 1.0 / cfg.batch_size
    objective = Objective(model, fused=one_pass)
    update_discriminator = discriminator_updates(model, d_opt, cfg.disc_steps, scale)

    def step(batch):
        x = flows.dequantize_images(batch["images"], batch["dequant"])
        with tf.GradientTape() as tape:
            losses = objective.losses(x, batch, update_discriminator)
            loss = tf.reduce_sum(losses.generator) * scale
        g_opt.apply_gradients(zip(tape.gradient(loss, model.generator_variables),
                                  model.generator_variables))
        return loss

    jit = cfg.jit_compile
    if jit is None:  # the trainer's default for this device type
        jit = default_jit_compile(tf.distribute.get_strategy(), cfg.train_steps)
    return tf.function(step, jit_compile=jit)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flagfile", default=os.path.join(ROOT, "configs", "quickstart.cfg"))
    p.add_argument("--block_steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3, help="untimed baseline steps (compilation)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mnist_dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist_test"))
    p.add_argument("--out", default="")
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench_train_step_")
    data_dir = os.path.join(tmp, "mnist28")
    run_preprocess("mnist_idx", args.mnist_dir, data_dir, 28, grayscale=True,
                   validation_fraction=0.1)
    info = data_lib.read_dataset_info(data_dir)
    fv = flags.FlagValues()
    config_flags.define_train_flags(fv)
    fv(["bench", f"--flagfile={args.flagfile}", f"--data_dir={data_dir}",
        f"--model_dir={os.path.join(tmp, 'model')}",
        f"--mlflow_tracking_uri=sqlite:///{os.path.join(tmp, 'mlflow.db')}",
        *TIMED_OUT_SCHEDULES])
    model_values, cfg = config_flags.train_configs_from_flags(fv)
    model_config = model_config_for_data(model_values, cfg, info)

    # B: the baseline's own model, optimizers and input (same settings, its own weights).
    keras.utils.set_random_seed(cfg.seed)
    model = HybridModel(model_config)
    g_opt = keras.optimizers.Adam(cfg.learning_rate, beta_1=cfg.adam_beta1)
    d_opt = keras.optimizers.Adam(cfg.disc_learning_rate, beta_1=cfg.disc_adam_beta1,
                                  beta_2=cfg.disc_adam_beta2)
    batches = iter(make_train_dataset(info, cfg, 0, model.noise_shapes()))
    first = next(batches)
    model.data_init(flows.dequantize_images(first["images"], first["dequant"]),
                    first.get("prior"))
    minimal = minimal_step_fn(model, cfg, g_opt, d_opt)

    def block_minimal() -> list[float]:
        stamps = []
        for _ in range(args.block_steps):
            float(minimal(next(batches)))  # one host copy per step, as a loop that logs would
            stamps.append(time.perf_counter())
        return [b - a for a, b in zip(stamps, stamps[1:])]

    for _ in range(args.warmup):  # compile the baseline before timing
        float(minimal(next(batches)))

    # One trainer run of (repeats + 1) blocks; after each of its blocks, on_step runs a
    # block of the baseline. Trainer intervals that contain a baseline block are left out,
    # and so is the first block (tracing and XLA compilation of the trainer's step).
    blocks: list[tuple[list[float], list[float]]] = []
    current: list[float] = []
    last = [None]
    loads = [os.getloadavg()[0]]

    def on_step(step: int, values: dict) -> None:
        now = time.perf_counter()
        if last[0] is not None:
            current.append(now - last[0])
        last[0] = now
        if step % args.block_steps == 0:
            trainer_block = list(current)
            current.clear()
            blocks.append((trainer_block, block_minimal()))
            loads.append(os.getloadavg()[0])
            last[0] = None  # the next interval would contain the baseline block
            if len(blocks) > 1:
                a, b = blocks[-1]
                print(f"pair {len(blocks) - 1}: trainer {statistics.median(a) * 1e3:.1f} "
                      f"ms/step, minimal {statistics.median(b) * 1e3:.1f} ms/step, ratio "
                      f"{statistics.median(a) / statistics.median(b):.3f}", flush=True)

    run_cfg = dataclasses.replace(cfg, train_steps=(args.repeats + 1) * args.block_steps)
    TrainRunner(model_config, run_cfg, info, on_step=on_step).run()
    timed = blocks[1:]
    trainer_times = [t for a, _ in timed for t in a]
    minimal_times = [t for _, b in timed for t in b]
    ratios = [statistics.median(a) / statistics.median(b) for a, b in timed]

    ta, tb = statistics.median(trainer_times), statistics.median(minimal_times)
    cpus = os.cpu_count() or 1
    idle = max(loads) < 0.25 * cpus
    report = "\n".join([
        f"{model_config.variant} ({os.path.basename(args.flagfile)}), batch {cfg.batch_size}, "
        f"jit_compile={cfg.jit_compile} (None: by device type), {args.repeats} interleaved pairs of "
        f"{args.block_steps}-step blocks (a first pair left out as warm-up)",
        f"  trainer  {ta * 1e3:8.1f} ms/step  {1 / ta:6.2f} steps/s (median of {len(trainer_times)})",
        f"  minimal  {tb * 1e3:8.1f} ms/step  {1 / tb:6.2f} steps/s (median of {len(minimal_times)})",
        f"ratio trainer / minimal: {ta / tb:.3f}x (medians); median of per-pair ratios "
        f"{statistics.median(ratios):.3f}x; target <= 1.15x",
        f"1-minute load average {min(loads):.2f}-{max(loads):.2f} on {cpus} CPUs: machine "
        f"{'idle' if idle else 'NOT idle'}"])
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
