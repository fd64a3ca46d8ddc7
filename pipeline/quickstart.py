"""The whole pipeline in one command (``make quickstart``), on the real MNIST digits in
``../shared/data`` and nothing from the network:

1. Beam preprocessing of the MNIST IDX files into TFRecords (90% train / 10% validation);
2. the project's MNIST classifier (FID/KID/IS features), the reference statistics of
   the training split with a KID reservoir and the precision/recall features
   (regenerated when they are missing, hold no precision/recall features or were made
   with another classifier, i.e. their recorded fingerprint differs) and the FID,
   precision and recall of the held-out real digits against them (Beam FID job; the
   yardstick of the samples');
3. training of the main model (``cqf``) with ``configs/quickstart.cfg``, then its prior
   refitted to the aggregate posterior (``pipeline.fit_prior``, 50 Gaussians; a deviation
   from the paper, ``--prior_components=0`` keeps N(0, I)); what follows uses the refit;
4. validation bits/dim (ELBO and importance-weighted bounds), the latent's use (KL,
   active units) and the samples' quality at temperature 0 and 1 (FID/KID/IS, precision
   and recall (Kynkaanniemi et al. 2019, k = 3), the confident-sample rate and the label
   coverage of the MNIST classifier);
5. SavedModel export (TF Serving layout, registered in MLflow);
6. scoring of held-out digits and a sample grid through the exported SavedModel.

Every stage runs the project's real command line in a subprocess, shows its progress and
is skipped when its output already exists (training resumes), so an interrupted
quickstart continues where it stopped. MLflow uses its default local store (./mlflow.db).

Flags (absl, :mod:`artifacts.cli`): ``--flagfile=F`` here names the *training* config
passed on to ``pipeline.train`` (default ``configs/quickstart.cfg``; a relative path is
from the project root), as in ``python -m pipeline.quickstart
--flagfile=experiments/quickstart_cosine.cfg``. It is an alias of ``--train_flagfile``,
rewritten before absl parses the command line, so absl's own ``--flagfile`` (a file of
the command's flags) is not available for the quickstart's few flags: give them on the
command line. A usage error is one line ``python -m pipeline.quickstart: error: ...``,
exit code 2; a failed stage exits 1 naming it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from types import SimpleNamespace
from typing import Sequence

from absl import flags

from artifacts.cli import UsageError, flag_values, parse_flags, user_errors
from pipeline.stage_output import run_filtered

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MNIST = os.path.join(os.path.dirname(PROJECT_ROOT), "shared", "data", "mnist_test")
DEFAULT_TRAIN_FLAGFILE = os.path.join(PROJECT_ROOT, "configs", "quickstart.cfg")
PROG = "python -m pipeline.quickstart"
COMMON_FLAGS = ("help", "helpshort", "helpfull", "verbosity")


def run_stage(index: int, total: int, title: str, argv: list[str], capture: bool = False) -> str:
    """Runs one stage's command, streaming its progress and messages without the start-up
    noise of a CPU-only machine (:mod:`pipeline.stage_output`); returns stdout if
    ``capture``."""
    print(f"\n=== [{index}/{total}] {title}\n    $ {' '.join(argv)}", flush=True)
    start = time.time()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    code, stdout = run_filtered(argv, cwd=PROJECT_ROOT, env=env, capture=capture)
    if code != 0:
        raise SystemExit(f"quickstart stage {index} ({title}) failed with exit code "
                         f"{code}; its outputs so far are kept, rerun to continue")
    print(f"    done in {time.time() - start:.0f} s", flush=True)
    return stdout


def preprocess_mnist(data_dir: str, mnist_dir: str, index: int = 0, total: int = 0) -> bool:
    """The quickstart's data set: the MNIST IDX files of ``mnist_dir`` as 28x28 grey
    TFRecords in ``data_dir`` (90% train / 10% validation) by the Beam job, unless
    ``data_dir`` already holds one. Returns whether it was made."""
    if os.path.isfile(os.path.join(data_dir, "dataset.json")):
        return False
    run_stage(index, total, "Beam preprocessing: MNIST IDX -> TFRecords", [
        sys.executable, "-m", "beam_jobs.preprocess", "--source=mnist_idx",
        f"--input={mnist_dir}", f"--output_dir={data_dir}", "--image_size=28", "--grayscale",
        "--validation_fraction=0.1"])
    return True


def missing_pr_features(stats_path: str) -> str:
    """Why the reference statistics cannot serve precision/recall ('' if they can): a
    file written before ``--save_pr_features`` holds no ``pr_features``."""
    import numpy as np

    try:
        with np.load(stats_path, allow_pickle=False) as data:
            return "" if "pr_features" in data.files else (
                f"{stats_path} holds no precision/recall features")
    except (OSError, ValueError) as e:
        return f"{stats_path} is unreadable: {e}"


def pr_text(result: dict) -> str:
    """'precision P, recall R' of a FID job result, or why they are missing."""
    if result.get("precision") is None:
        return "precision/recall n/a"
    return f"precision {result['precision']:.2f}, recall {result['recall']:.2f}"


def last_json(text: str) -> dict:
    """The last JSON object printed by a command (they print a JSON summary last)."""
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start + 1
    return json.loads(text[start:])


def write_results(path_stem: str, results: dict) -> tuple[str, str]:
    """The quickstart's numbers, command, flags and machine as ``<stem>.json`` and a short
    ``<stem>.md``; returns both paths. ``results['machine']`` is the machine that ran this
    quickstart, ``results['train_run_machine']`` what the training run logged to MLflow
    (another machine if the model was trained elsewhere and only resumed or reused here)."""
    from artifacts import machine_info

    with open(path_stem + ".json", "w") as f:
        json.dump(results, f, indent=2, default=str)
    here = results["machine"]
    trained_text = machine_info.describe_trained(results.get("train_run_machine") or {}, here)
    bpd, t0, t1 = (results.get(k) or {} for k in ("bpd", "samples_t0", "samples_t1"))
    numbers = []
    if "bpd_iw" in bpd:
        numbers.append(f"validation IW-{bpd['importance_samples']} bound {bpd['bpd_iw']:.3f} "
                       f"bits/dim")
    numbers += [f"FID T={t} {s['fid']:.2f}" for t, s in ((0, t0), (1, t1)) if "fid" in s]
    lines = [f"# Quickstart results ({results['finished']})", "",
             f"Command: `{results['command']}`", "",
             f"Training: `{results['train_command']}`", "",
             f"Numbers: {', '.join(numbers) or 'none'}; MLflow run "
             f"{results.get('mlflow_run_id')} (step {results.get('step')}).", "",
             f"Machine: this quickstart ran on {machine_info.describe(here)}. The model was "
             f"trained on: {trained_text}."]
    with open(path_stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    return path_stem + ".json", path_stem + ".md"


def define_flags() -> flags.FlagValues:
    """The quickstart's flags on a new private FlagValues."""
    fv = flag_values()
    flags.DEFINE_string("mnist_dir", DEFAULT_MNIST, "folder with the MNIST IDX files "
                        "(t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)", flag_values=fv)
    flags.DEFINE_string("work_dir", os.path.join(PROJECT_ROOT, "work", "quickstart"),
                        "where every stage writes (rerun to continue)", flag_values=fv)
    flags.DEFINE_string("train_flagfile", DEFAULT_TRAIN_FLAGFILE, "the training config "
                        "passed to pipeline.train (relative: from the project root); "
                        "--flagfile=F on this command line means --train_flagfile=F",
                        flag_values=fv)
    flags.DEFINE_string("variant", "cqf", "the model variant to train", flag_values=fv)
    flags.DEFINE_integer("fid_samples", 2000, "samples per FID evaluation", flag_values=fv)
    flags.DEFINE_integer("train_steps", None, "override the training config's --train_steps",
                         flag_values=fv)
    flags.DEFINE_integer("prior_components", 50, "refit the prior after training to a "
                         "mixture of this many Gaussians (pipeline.fit_prior; a deviation "
                         "from the paper); 0: keep the trained N(0, I)", flag_values=fv)
    return fv


def train_flagfile_alias(argv: Sequence[str]) -> list[str]:
    """``--flagfile=F`` / ``--flagfile F`` (also with one dash) -> ``--train_flagfile=F``:
    the quickstart's ``--flagfile`` is the training config, not absl's flagfile."""
    out, args = [], list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--flagfile", "-flagfile"):
            if not eq:
                if not args:
                    raise UsageError(f"{arg}: expected --flagfile=TRAINING_CONFIG")
                value = args.pop(0)
            arg = f"--train_flagfile={value}"
        elif arg == "--":
            out += [arg, *args]
            break
        out.append(arg)
    return out


@user_errors(PROG)
def parse_args(argv: Sequence[str]) -> SimpleNamespace:
    """The command line -> the flags' values by name; a usage error (unknown flag, bad
    value, missing --mnist_dir or training config) is one line and SystemExit(2)."""
    args, rest = parse_flags(define_flags(), train_flagfile_alias(argv), PROG,
                             __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[-1])
    if rest:
        raise UsageError(f"unrecognized arguments: {' '.join(rest)}")
    if not os.path.isdir(args.mnist_dir):
        raise FileNotFoundError(f"--mnist_dir={args.mnist_dir!r} does not exist; expected the "
                                "folder with t10k-images-idx3-ubyte.gz and "
                                "t10k-labels-idx1-ubyte.gz")
    if not os.path.isfile(os.path.join(PROJECT_ROOT, args.train_flagfile)):
        raise FileNotFoundError(f"--flagfile={args.train_flagfile!r}: no such training config "
                                f"(a relative path is from {PROJECT_ROOT})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    py = sys.executable
    work = os.path.abspath(args.work_dir)
    data_dir = os.path.join(work, "data", "mnist28")
    classifier = os.path.join(work, "mnist_classifier")
    ref_stats = os.path.join(work, "reference_train_stats.npz")
    model_dir = os.path.join(work, "runs", args.variant)
    export_dir = os.path.join(work, "export")
    grid = os.path.join(work, f"samples_{args.variant}.png")
    os.makedirs(work, exist_ok=True)
    real_fid_file = os.path.join(work, "heldout_real_fid.json")
    total, started = 9, time.time()

    if not preprocess_mnist(data_dir, args.mnist_dir, 1, total):
        print(f"\n=== [1/{total}] data set exists: {data_dir}")
    if not os.path.isdir(classifier):
        run_stage(2, total, "MNIST classifier for FID/KID/IS features", [
            py, "-m", "pipeline.train_mnist_classifier", f"--mnist_dir={args.mnist_dir}",
            f"--output={classifier}"])
    else:
        print(f"\n=== [2/{total}] classifier exists: {classifier}")
    from beam_jobs.fid.identity import stale_statistics_reason

    stale = (stale_statistics_reason(ref_stats, "mnist_classifier", classifier)
             or missing_pr_features(ref_stats))
    if stale:  # missing, made with another classifier (fingerprint) or without P&R features
        print(f"\n    reference statistics needed: {stale}")
        if os.path.isfile(real_fid_file):  # the yardstick was against the old statistics
            os.remove(real_fid_file)
        run_stage(3, total, "reference statistics of the training split (Beam FID job)", [
            py, "-m", "beam_jobs.fid", f"--data_dir={data_dir}", "--split=train",
            "--extractor=mnist_classifier", f"--extractor_path={classifier}",
            f"--output_stats={ref_stats}", "--save_kid_features", "--save_pr_features"],
            capture=True)
    else:
        print(f"\n=== [3/{total}] reference statistics exist and match the classifier: "
              f"{ref_stats}")
    if os.path.isfile(real_fid_file):
        with open(real_fid_file) as f:
            if "precision" not in json.load(f):  # written before precision/recall
                os.remove(real_fid_file)
    if not os.path.isfile(real_fid_file):
        real = last_json(run_stage(3, total, "FID of the held-out real digits (the yardstick)", [
            py, "-m", "beam_jobs.fid", f"--data_dir={data_dir}", "--split=validation",
            "--extractor=mnist_classifier", f"--extractor_path={classifier}",
            f"--reference_stats={ref_stats}"], capture=True))
        with open(real_fid_file, "w") as f:
            json.dump(real, f)
    with open(real_fid_file) as f:
        real_fid = json.load(f)
    train_cmd = [py, "-m", "pipeline.train", f"--flagfile={args.train_flagfile}",
                 f"--data_dir={data_dir}", f"--model_dir={model_dir}", f"--variant={args.variant}"]
    if args.train_steps:
        train_cmd.append(f"--train_steps={args.train_steps}")
    summary = last_json(run_stage(4, total, f"training {args.variant} ({args.train_flagfile})",
                                  train_cmd, capture=True))
    trained_dir = model_dir
    if args.prior_components > 0:  # derived from the trained model: made anew every run
        model_dir = f"{trained_dir}_prior{args.prior_components}"
        shutil.rmtree(model_dir, ignore_errors=True)
        run_stage(5, total, f"prior refitted to the aggregate posterior "
                            f"({args.prior_components} Gaussians, pipeline.fit_prior)", [
            py, "-m", "pipeline.fit_prior", f"--model_dir={trained_dir}",
            f"--output_model_dir={model_dir}", f"--components={args.prior_components}"],
            capture=True)
    else:
        print(f"\n=== [5/{total}] prior kept: N(0, I)")
    evaluation = last_json(run_stage(6, total, "validation bits/dim, latent use, samples at T=0", [
        py, "-m", "pipeline.evaluate", f"--model_dir={model_dir}", f"--data_dir={data_dir}",
        "--split=validation", "--importance_samples=8", f"--fid_samples={args.fid_samples}",
        "--temperature=0", "--extractor=mnist_classifier", f"--extractor_path={classifier}",
        f"--reference_stats={ref_stats}"], capture=True))
    samples_t1 = last_json(run_stage(7, total, "samples at T=1", [
        py, "-m", "pipeline.evaluate", f"--model_dir={model_dir}",
        f"--fid_samples={args.fid_samples}", "--temperature=1", "--extractor=mnist_classifier",
        f"--extractor_path={classifier}", f"--reference_stats={ref_stats}"],
        capture=True)).get("samples", {})
    export_out = run_stage(8, total, "SavedModel export (TF Serving layout, MLflow registry)", [
        py, "-m", "serving.export", f"--model_dir={model_dir}", f"--export_dir={export_dir}",
        f"--model_name=mnist_{args.variant}"], capture=True)
    version_dir = last_json(export_out)["version_dir"]
    scored = last_json(run_stage(9, total, "score held-out digits and sample a grid via the export", [
        py, "-m", "pipeline.quickstart_check", f"--saved_model={version_dir}",
        f"--data_dir={data_dir}", f"--grid={grid}"], capture=True))

    bpd = evaluation.get("bpd", {})
    latent = evaluation.get("latent", {})
    from artifacts import machine_info, tracking

    results_files = write_results(os.path.join(work, "quickstart_results"), {
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "minutes": round((time.time() - started) / 60, 1),
        "command": " ".join(["python -m pipeline.quickstart", *(
            sys.argv[1:] if argv is None else argv)]),
        "train_command": " ".join(["python", *train_cmd[1:]]),
        "args": {k: v for k, v in vars(args).items() if k not in COMMON_FLAGS},
        "machine": machine_info.machine_info(),
        "train_run_machine": machine_info.of_mlflow_run(
            summary.get("mlflow_run_id"), tracking.tracking_uri_of(trained_dir)),
        "mlflow_run_id": summary.get("mlflow_run_id"), "step": summary.get("step"),
        "model_dir": trained_dir, "evaluated_model_dir": model_dir, "bpd": bpd,
        "latent": latent, "heldout_real": real_fid, "samples_t0": evaluation.get("samples", {}),
        "samples_t1": samples_t1, "export": version_dir,
        "heldout_scores_bits_per_dim": scored.get("bits_per_dim")})
    print("\n" + "=" * 72)
    print(f"quickstart finished in {(time.time() - started) / 60:.1f} min")
    print(f"  data set          {data_dir}")
    print(f"  model dir         {trained_dir}  (step {summary.get('step')})")
    if model_dir != trained_dir:
        print(f"  refitted prior    {model_dir}  ({args.prior_components} Gaussians)")
    print(f"  MLflow run id     {summary.get('mlflow_run_id')}  (mlflow ui --backend-store-uri "
          f"sqlite:///{os.path.join(PROJECT_ROOT, 'mlflow.db')})")
    from pipeline.eval_harness import summary_lines  # every registered metric's summary line

    for line in summary_lines(evaluation):
        print(line)
    print(f"  held-out digits   FID {real_fid['fid']:.2f}, {pr_text(real_fid)}, confident "
          f"{real_fid['confident_rate']:.2f}, label coverage {real_fid['label_coverage']:.2f}  "
          f"({real_fid['num_samples']} real validation digits, same reference statistics)")
    for t, samples in ((0, evaluation.get("samples", {})), (1, samples_t1)):
        if samples:
            print(f"  samples T={t}       FID {samples['fid']:.2f} "
                  f"({samples['fid'] / real_fid['fid']:.1f}x the held-out digits'), KID "
                  f"{samples['kid_mean']:.4f}, IS {samples['is_mean']:.2f}, "
                  f"{pr_text(samples)}, confident "
                  f"{samples['confident_rate']:.2f}, label coverage "
                  f"{samples['label_coverage']:.2f}  ({samples['num_samples']} samples, MNIST "
                  "classifier)")
    print(f"  export            {version_dir}")
    print(f"  held-out scores   {', '.join(f'{v:.3f}' for v in scored['bits_per_dim'])} bits/dim")
    for t, path in scored["grids"].items():
        print(f"  sample grid T={t}   {path}")
    print(f"  results, machine  {results_files[0]}, {results_files[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
