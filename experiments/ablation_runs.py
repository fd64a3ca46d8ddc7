"""The runs of an ablation (experiments/ablation.py, experiments/cifar10_ablation.py): the
flags they share, which (variant, seed) pairs run, and one run trained and evaluated by the
project's real CLIs in subprocesses (skipped when its stored result exists).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from ablation_protocol import Protocol

from pipeline.quickstart import PROJECT_ROOT, last_json, run_stage

ALL_VARIANTS = "vae,vae_f,cq,cqf,gan,flow,flow_wgan,flowgan"
# The Real NVP baselines have no latent: they keep 3x3 coupling nets (a full Real NVP)
# whatever --flow_kernel_size the flagfile gives the latent variants (a local flow alone
# would only be a model of 2x2 pixel blocks).
VARIANT_FLAGS = {"flow": "--flow_kernel_size=3", "flow_wgan": "--flow_kernel_size=3",
                 "flowgan": "--flow_kernel_size=3"}
TEMPERATURES = (0.0, 1.0)


def add_run_arguments(parser: argparse.ArgumentParser, *, train_steps: int,
                      validation_every: int, fid_samples: int, flagfile: str) -> None:
    """The flags every ablation script shares: which runs, their budget and evaluation."""
    parser.add_argument("--variants", default=ALL_VARIANTS)
    parser.add_argument("--seeds", default="0", help="seeds of every variant")
    parser.add_argument("--more_seeds", default="", help="further seeds of --more_seeds_variants")
    parser.add_argument("--extra_seeds", default="",
                        help="further seeds of single variants, e.g. 'vae=1;cq=1,2'")
    parser.add_argument("--train_steps", type=int, default=train_steps)
    parser.add_argument("--validation_every", type=int, default=validation_every)
    parser.add_argument("--fid_samples", type=int, default=fid_samples)
    parser.add_argument("--importance_samples", type=int, default=8)
    parser.add_argument("--flagfile", default=flagfile)
    parser.add_argument("--extra_flags", default="", help="more pipeline.train flags, e.g. "
                        "'--free_bits=1.0' (applied to every run and named in the table)")
    parser.add_argument("--tag", default="main", help="names the runs directory and MLflow experiment")
    parser.add_argument("--runs_dir", default=None)
    parser.add_argument("--mlflow_tracking_uri",
                        default=f"sqlite:///{os.path.join(PROJECT_ROOT, 'mlflow.db')}")
    parser.add_argument("--no_grids", action="store_true", help="skip the sample grid PNGs")


def jobs_of(args) -> list[tuple[str, int]]:
    """(variant, seed) of every run: --seeds for each variant, --more_seeds for
    --more_seeds_variants, then --extra_seeds ('variant=s1,s2;...') for single variants."""
    seeds = [int(s) for s in args.seeds.split(",") if s]
    more = [int(s) for s in args.more_seeds.split(",") if s]
    more_variants = set(args.more_seeds_variants.split(","))
    extra: dict[str, list[int]] = {}
    for item in filter(None, getattr(args, "extra_seeds", "").split(";")):
        variant, _, listed = item.partition("=")
        try:
            extra[variant.strip()] = [int(s) for s in listed.split(",") if s.strip()]
        except ValueError:
            raise SystemExit(f"--extra_seeds={args.extra_seeds!r}: expected "
                             "'variant=seed,seed;...'") from None
    jobs = []
    for v in filter(None, args.variants.split(",")):
        for s in seeds + (more if v in more_variants else []) + extra.get(v, []):
            if (v, s) not in jobs:
                jobs.append((v, s))
    return jobs


def row_machine(model_dir: str, tracking_uri: str) -> dict[str, str]:
    """The machine that trained a row: the ``machine.*`` params its MLflow run logged
    (:func:`artifacts.machine_info.of_mlflow_run`; {} for runs from before they were
    logged, or without a run)."""
    from artifacts import machine_info, tracking

    return machine_info.of_mlflow_run(tracking.run_id_of(model_dir), tracking_uri)


def tracked_train_seconds(model_dir: str, tracking_uri: str) -> float | None:
    """Wall time of a run's training as MLflow recorded it: from the run's start to its
    last ``train/`` metric (so a run that was stopped and resumed later, or whose last
    command only finalized it, still reports its training time); None without a run."""
    from mlflow.tracking import MlflowClient

    from artifacts import tracking

    run_id = tracking.run_id_of(model_dir)
    if not run_id:
        return None
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    last = max((m.timestamp for m in client.get_metric_history(run_id, "train/loss")),
               default=None)
    return None if last is None else (last - run.info.start_time) / 1000.0


def run_one(variant: str, seed: int, args, protocol: Protocol, index: int, total: int,
            variant_flags: dict[str, str] | None = None, experiment: str = "ablation") -> dict:
    """Trains and evaluates one (variant, seed) (``variant_flags``: extra training flags by
    variant, default :data:`VARIANT_FLAGS`); returns its stored result row."""
    variant_flags = VARIANT_FLAGS if variant_flags is None else variant_flags
    py = sys.executable
    model_dir = os.path.join(args.runs_dir, f"{variant}_seed{seed}")
    result_file = os.path.join(model_dir, "ablation_result.json")
    if os.path.isfile(result_file):
        with open(result_file) as f:
            return json.load(f)
    start = time.time()
    run_stage(index, total, f"train {variant} seed {seed}", [
        py, "-m", "pipeline.train", f"--flagfile={args.flagfile}",
        f"--data_dir={protocol.data_dir}",
        f"--model_dir={model_dir}", f"--variant={variant}", f"--seed={seed}",
        f"--train_steps={args.train_steps}", f"--validation_every={args.validation_every}",
        f"--run_name={experiment}-{args.tag}-{variant}-{seed}",
        f"--experiment={experiment}-{args.tag}",
        f"--mlflow_tracking_uri={args.mlflow_tracking_uri}", "--show_progress=false",
        *shlex.split(variant_flags.get(variant, "")), *shlex.split(args.extra_flags)],
        capture=True)
    command_seconds = time.time() - start
    row = {"variant": variant, "seed": seed,
           "train_seconds": round(tracked_train_seconds(model_dir, args.mlflow_tracking_uri)
                                  or command_seconds, 1),
           "command_seconds": round(command_seconds, 1),
           "extra_flags": " ".join(filter(None, [variant_flags.get(variant, ""),
                                                  args.extra_flags])),
           "train_steps": args.train_steps, "load_average_end": os.getloadavg()[0],
           "machine": row_machine(model_dir, args.mlflow_tracking_uri)}
    for t in TEMPERATURES:
        cmd = [py, "-m", "pipeline.evaluate", f"--model_dir={model_dir}",
               f"--fid_samples={args.fid_samples}", f"--temperature={t}",
               *protocol.extractor_flags(), f"--seed={seed}",
               f"--mlflow_tracking_uri={args.mlflow_tracking_uri}"]
        if t == TEMPERATURES[0]:  # BPD and latent once
            cmd += [f"--data_dir={protocol.data_dir}", f"--split={protocol.eval_split}",
                    f"--importance_samples={args.importance_samples}"]
            if protocol.max_examples:
                cmd.append(f"--max_examples={protocol.max_examples}")
        evaluation = last_json(run_stage(index, total, f"evaluate {variant} seed {seed} T={t:g}",
                                         cmd, capture=True))
        row.setdefault("bpd", evaluation.get("bpd", {}))
        row.setdefault("latent", evaluation.get("latent", {}))
        row[f"samples_t{t:g}"] = evaluation.get("samples", {})
    with open(result_file, "w") as f:
        json.dump(row, f, indent=2)
    return row
