"""The evaluation CLIs' settings are dataclasses (pipeline.eval_configs; serving.export's in
serving.export_config) whose fields generate their flags through pipeline.config_flags:
every flag is a field of the same name and default, the flags kept the names, defaults,
types and required-ness of the hand-written absl definitions they replace, and the parsed
flags (also from a flagfile) arrive in the dataclass."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from absl import app, flags

from pipeline import critic_eval, eval_configs, evaluate, fit_prior, surrogate_likelihood
from serving import export
from serving.export_config import ExportConfig
from serving.signatures import DEFAULT_MAX_BATCH, DEFAULT_SCORE_SEED

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S, I, F, B = flags.ArgumentParser, flags.IntegerParser, flags.FloatParser, flags.BooleanParser
REQUIRED = "absl-required"
# Each CLI's flags as they were defined by hand before the dataclasses: name -> (default,
# parser type[, REQUIRED]). A flag renamed, dropped, added or with another default or
# type fails here.
OLD_FLAGS = {
    evaluate: {
        "model_dir": (None, S), "data_dir": (None, S), "split": ("validation", S),
        "importance_samples": (1, I), "batch_size": (100, I), "max_examples": (None, I),
        "seed": (0, I), "fid_samples": (0, I), "pr_max_samples": (10000, I),
        "extractor": ("mnist_classifier", S), "extractor_path": (None, S),
        "reference_stats": (None, S), "temperature": (1.0, F), "mlflow_tracking_uri": ("", S)},
    critic_eval: {
        "model_dir": (None, S, REQUIRED), "data_dir": (None, S, REQUIRED),
        "split": ("validation", S), "critic_steps": (2000, I), "batch_size": (64, I),
        "learning_rate": (1e-4, F), "gp_weight": (10.0, F), "critic_channels": (32, I),
        "temperature": (1.0, F), "seed": (0, I), "train_samples": (10000, I),
        "eval_every": (100, I), "max_eval_examples": (None, I), "output_json": (None, S),
        "output_png": (None, S), "mlflow_tracking_uri": ("", S), "show_progress": (True, B)},
    fit_prior: {
        "model_dir": (None, S), "output_model_dir": (None, S), "data_dir": (None, S),
        "components": (50, I), "max_examples": (None, I), "seed": (0, I)},
    surrogate_likelihood: {
        "model_dir": (None, S, REQUIRED), "data_dir": (None, S, REQUIRED),
        "split": ("validation", S), "num_generated": (2000, I), "entropic_lambda": (5.0, F),
        "batch_size": (500, I), "max_examples": (None, I), "temperature": (0.0, F),
        "seed": (0, I), "sinkhorn_iters": (1000, I), "sinkhorn_tolerance": (1e-6, F),
        "output_npz": (None, S), "mlflow_tracking_uri": ("", S), "show_progress": (True, B)},
    export: {
        "model_dir": (None, S, REQUIRED), "export_dir": (None, S, REQUIRED),
        "model_name": (None, S, REQUIRED), "version": (None, I),
        "score_importance_samples": (1, I), "importance_samples": (0, I),
        "score_seed": (DEFAULT_SCORE_SEED, I), "serving_base_path": ("", S),
        "max_batch": (DEFAULT_MAX_BATCH, I), "mlflow": (True, B),
        "mlflow_alias": ("last_export", S), "mlflow_tracking_uri": ("", S)},
}
# serving.export's integer flags with a lower bound (absl refuses smaller values).
EXPORT_LOWER_BOUNDS = {"version": 1, "score_importance_samples": 1, "importance_samples": 0,
                       "max_batch": 1}
CONFIGS = {evaluate: eval_configs.EvalConfig, critic_eval: eval_configs.CriticEvalConfig,
           fit_prior: eval_configs.FitPriorConfig,
           surrogate_likelihood: eval_configs.SurrogateConfig, export: ExportConfig}
CLIS = [pytest.param(m, id=m.__name__.split(".")[-1]) for m in OLD_FLAGS]


def _flags(cli, argv=None) -> flags.FlagValues:
    """The CLI's flags in a fresh FlagValues (not this process's global FLAGS), parsed
    from ``argv`` if given."""
    values = flags.FlagValues()
    cli.define_flags(values)
    if argv is not None:
        values(["prog", *argv])
    return values


def _required(cli) -> list[str]:
    return [f"--{name}=x" for name, spec in OLD_FLAGS[cli].items() if REQUIRED in spec]


@pytest.mark.parametrize("cli", CLIS)
def test_the_flags_are_the_dataclass_fields_with_their_defaults(cli):
    values = _flags(cli)
    fields = dataclasses.fields(CONFIGS[cli])
    assert list(values) == [f.name for f in fields]  # no flag without a field, in order
    for field in fields:
        flag = values[field.name]
        assert flag.help == field.metadata["help"], field.name
        default = None if field.default is dataclasses.MISSING else field.default
        assert flag.default == default and type(flag.default) is type(default), field.name


@pytest.mark.parametrize("cli", CLIS)
def test_the_flags_keep_the_names_defaults_types_and_requiredness_of_the_old_ones(cli):
    values = _flags(cli)
    assert sorted(values) == sorted(OLD_FLAGS[cli])
    for name, (default, parser, *required) in OLD_FLAGS[cli].items():
        assert values[name].default == default and type(values[name].default) is type(default), name
        assert type(values[name].parser) is parser, name
    required = _required(cli)
    for dropped in required:  # each absl-required flag alone missing: absl's error
        with pytest.raises(flags.IllegalFlagValueError, match="must have a value other than"):
            _flags(cli, [a for a in required if a != dropped])


def test_evaluate_and_fit_prior_refuse_a_missing_model_dir_with_their_own_messages():
    with pytest.raises(app.UsageError, match="^--model_dir is required$"):
        evaluate.config_from_flags(_flags(evaluate, []))
    for argv in ([], ["--model_dir=m"], ["--output_model_dir=o"]):
        with pytest.raises(ValueError, match="^--model_dir and --output_model_dir are required$"):
            fit_prior.config_from_flags(_flags(fit_prior, argv))


def test_export_keeps_its_lower_bounds():
    values = _flags(export)
    assert {n: values[n].parser.lower_bound for n in values
            if getattr(values[n].parser, "lower_bound", None) is not None} == EXPORT_LOWER_BOUNDS
    required = _required(export)
    for name, bound in EXPORT_LOWER_BOUNDS.items():
        with pytest.raises(flags.IllegalFlagValueError, match=f"--{name}={bound - 1}"):
            _flags(export, required + [f"--{name}={bound - 1}"])
        assert getattr(export.config_from_flags(_flags(export, required + [
            f"--{name}={bound}"])), name) == bound


def _other_value(default, parser):
    if parser is B:
        return not default
    if parser in (I, F):
        return (7 if parser is I else 0.25) if default is None else default + 3
    return "given"


@pytest.mark.parametrize("cli", CLIS)
def test_every_flag_value_arrives_in_the_dataclass(cli):
    wanted = {name: _other_value(default, parser)
              for name, (default, parser, *_) in OLD_FLAGS[cli].items()}
    argv = [f"--{'' if v else 'no'}{k}" if isinstance(v, bool) else f"--{k}={v}"
            for k, v in wanted.items()]
    assert cli.config_from_flags(_flags(cli, argv)) == CONFIGS[cli](**wanted)


def test_evaluate_reads_a_flagfile_and_the_command_line_overrides_it(tmp_path):
    flagfile = tmp_path / "eval.cfg"
    flagfile.write_text("# evaluation of a run\n--model_dir=runs/x\n--data_dir=data/mnist\n"
                        "--split=test\n--importance_samples=8\n--max_examples=300\n"
                        "--temperature=0.7\n--fid_samples=100\n")
    cfg = evaluate.config_from_flags(_flags(evaluate, [f"--flagfile={flagfile}",
                                                       "--split=validation"]))
    assert cfg == eval_configs.EvalConfig(
        model_dir="runs/x", data_dir="data/mnist", split="validation", importance_samples=8,
        max_examples=300, temperature=0.7, fid_samples=100)


@pytest.mark.slow
def test_python_m_pipeline_evaluate_takes_its_model_dir_from_a_flagfile(tmp_path):
    missing = tmp_path / "no_model"
    flagfile = tmp_path / "eval.cfg"
    flagfile.write_text(f"--model_dir={missing}\n")
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("AD_TRACEBACK", None)
    result = subprocess.run([sys.executable, "-m", "pipeline.evaluate", f"--flagfile={flagfile}"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr
    assert last.startswith("python -m pipeline.evaluate: error: ") and str(missing) in last
    assert "not a model directory" in last
