"""What a model directory holds and how to get a trained model back from it.

``<model_dir>/model_config.json`` stores the :class:`HybridConfig` (architecture, variant,
image shape) and the data set it was trained on; ``ckpt-<step>`` files hold weights,
optimizer state and the step (tf.train.CheckpointManager). Evaluation and export rebuild
the model from these two alone.

Restoring never gives up on a model directory because its newest checkpoint is damaged:
:func:`restore_newest` tries the checkpoints newest first (those the ``checkpoint`` state
file lists and every ``ckpt-<step>.index`` on disk) and keeps the first that loads; a
checkpoint whose files are missing, truncated or corrupt is skipped, and one log line says
which checkpoint was used instead. Training, evaluation and export all restore this way.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from typing import Any, Callable

import tensorflow as tf

from tfp_models.hybrid import HybridConfig, HybridModel

CONFIG_FILE = "model_config.json"
CHECKPOINT_STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's list of checkpoints
_STEP_RE = re.compile(r"-(\d+)$")
log = logging.getLogger(__name__)


def save_model_config(model_dir: str, config: HybridConfig, extra: dict[str, Any]) -> None:
    """Writes model_config.json atomically (temp file + rename)."""
    os.makedirs(model_dir, exist_ok=True)
    payload = {"model": json.loads(config.to_json()), **extra}
    path = os.path.join(model_dir, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def load_model_config(model_dir: str) -> tuple[HybridConfig, dict[str, Any]]:
    """(HybridConfig, the whole model_config.json) of a model directory."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path!r} not found: {model_dir!r} is not a model directory written by "
            "`python -m pipeline.train`")
    with open(path) as f:
        payload = json.load(f)
    return HybridConfig.from_dict(payload["model"]), payload


def make_checkpoint(model: HybridModel, step: tf.Variable, **optimizers) -> tf.train.Checkpoint:
    """The checkpoint object: model weights, step and any optimizers given by name."""
    return tf.train.Checkpoint(model=model, step=step, **optimizers)


class CheckpointUnreadable(ValueError):
    """Checkpoints exist in a model directory but none of them loads."""


class CheckpointMismatch(ValueError):
    """A checkpoint holds another model's variables (another variant or other settings than
    the model directory's model_config.json): a user error, one line."""


def _mismatch(model_dir: str, path: str, err: AssertionError) -> CheckpointMismatch:
    """The one-line error for checkpoint ``path`` not matching ``model_dir``'s model
    (TensorFlow's AssertionError lists every unmatched variable: kilobytes)."""
    try:
        config, _ = load_model_config(model_dir)
        model = f"the {config.variant!r} model of its {CONFIG_FILE} (image_shape " \
                f"{list(config.image_shape)})"
    except Exception:  # noqa: BLE001 -- no readable config: name the directory's model only
        model = "the model of its " + CONFIG_FILE
    return CheckpointMismatch(
        f"checkpoint {os.path.basename(path)} in {model_dir!r} does not fit {model}: its "
        f"variables are another model's (another variant or other settings; "
        f"{len(str(err))} characters of TensorFlow's list not shown); use the model "
        f"directory it was trained in, or its {CONFIG_FILE}")


@dataclasses.dataclass
class Restored:
    """What :func:`restore_newest` did: ``path`` (the checkpoint restored, None if there
    was none to restore) and ``skipped``, the newer candidates that did not load, as
    (path, why) pairs."""
    path: str | None
    skipped: list[tuple[str, str]]

    def describe_skipped(self) -> str:
        """'ckpt-20 (its files are missing), ckpt-30 (DataLossError: ...)'."""
        return ", ".join(f"{os.path.basename(p)} ({why})" for p, why in self.skipped)


def _step_of(path: str) -> int:
    match = _STEP_RE.search(os.path.basename(path))
    return int(match.group(1)) if match else -1


def _read_state(model_dir: str):
    """The CheckpointState proto of ``model_dir`` (None if there is no state file), or the
    string why it cannot be read."""
    try:
        return tf.train.get_checkpoint_state(model_dir)
    except Exception as err:  # noqa: BLE001 -- a truncated or garbled text proto
        return f"{type(err).__name__}: {_first_line(err)}"


def _first_line(err: BaseException, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]


def checkpoint_candidates(model_dir: str) -> list[str]:
    """Checkpoint prefixes of ``model_dir``, newest (highest step) first: those the
    ``checkpoint`` state file lists (whether or not their files exist) and every
    ``ckpt-<step>.index`` on disk (a checkpoint whose save finished but whose listing did
    not, or a directory whose state file was lost)."""
    paths: dict[str, None] = {}
    state = _read_state(model_dir)
    if state is not None and not isinstance(state, str):
        listed = list(state.all_model_checkpoint_paths)
        if state.model_checkpoint_path:
            listed.append(state.model_checkpoint_path)
        for path in listed:
            if not os.path.isabs(path) and "://" not in path:
                path = os.path.join(model_dir, path)
            paths[path] = None
    elif isinstance(state, str):
        log.warning("the checkpoint state file %s cannot be read (%s); looking for "
                    "ckpt-<step> files instead", os.path.join(model_dir, CHECKPOINT_STATE_FILE),
                    state)
    for index in tf.io.gfile.glob(os.path.join(model_dir, "ckpt-*.index")):
        path = index[:-len(".index")]
        if _step_of(path) >= 0:
            paths[path] = None
    unique: dict[str, str] = {}  # by normalized name, first spelling kept
    for path in paths:
        unique.setdefault(os.path.normpath(path) if "://" not in path else path, path)
    return sorted(unique.values(), key=_step_of, reverse=True)


def restore_newest(model_dir: str, load: Callable[[str], Any]) -> Restored:
    """Calls ``load(path)`` on the checkpoints of :func:`checkpoint_candidates`, newest
    first, until one succeeds. A candidate whose ``.index`` file is missing is skipped
    without trying; one whose ``load`` raises (a truncated or corrupt file: DataLossError,
    IndexError, OpError, ...) is skipped with its error. ``load`` must restore everything
    it restores again on the next candidate, so a failed partial restore leaves nothing
    behind. An AssertionError (a checkpoint of another model) is not damage: it is raised
    as :class:`CheckpointMismatch`, one line. Returns the restored path (None when no candidate exists or every
    candidate's files are missing) and what was skipped; raises
    :class:`CheckpointUnreadable` when checkpoint files exist but none loads."""
    skipped: list[tuple[str, str]] = []
    tried = False
    for path in checkpoint_candidates(model_dir):
        if not tf.io.gfile.exists(path + ".index"):
            skipped.append((path, "its files are missing"))
            continue
        tried = True
        try:
            load(path)
        except AssertionError as err:  # another model's checkpoint: not damage, no fallback
            raise _mismatch(model_dir, path, err) from None
        except Exception as err:  # noqa: BLE001 -- any damage to the files: try the next one
            skipped.append((path, f"{type(err).__name__}: {_first_line(err)}"))
            continue
        return Restored(path, skipped)
    restored = Restored(None, skipped)
    if tried:
        raise CheckpointUnreadable(
            f"no checkpoint in {model_dir!r} loads: {restored.describe_skipped()}; restore a "
            "good copy, or move the ckpt-* files away to start the model anew")
    return restored


def forget_unloadable(model_dir: str, restored: Restored) -> None:
    """Rewrites ``model_dir``'s checkpoint state file (atomically) to list only the
    restored checkpoint and the older ones it listed, with the restored one as the latest,
    so that checkpoint managers, ``tf.train.latest_checkpoint`` and the next save see the
    checkpoint actually resumed from. The skipped files themselves are left as they are
    (a training run replaces them when it reaches their steps). Nothing is written if
    the state file already says so. With nothing restored, a state file that lists only
    missing checkpoints or cannot be read is removed (there is no checkpoint to list)."""
    from google.protobuf import text_format
    from tensorflow.python.training import checkpoint_state_pb2  # the state file's proto

    state = _read_state(model_dir)
    path = os.path.join(model_dir, CHECKPOINT_STATE_FILE)
    if restored.path is None:
        if state is not None and (restored.skipped or isinstance(state, str)):
            tf.io.gfile.remove(path)
        return
    if state is None or isinstance(state, str):
        state = checkpoint_state_pb2.CheckpointState()
    newest = _step_of(restored.path)

    def same(a: str, b: str) -> bool:
        return os.path.basename(a) == os.path.basename(b)

    listed = list(state.all_model_checkpoint_paths)
    stamps = list(state.all_model_checkpoint_timestamps)
    if len(stamps) != len(listed):  # none recorded: as old as the last preserved one
        stamps = [state.last_preserved_timestamp] * len(listed)
    keep = [(p, t) for p, t in zip(listed, stamps)
            if _step_of(p) < newest and not same(p, restored.path)
            and tf.io.gfile.exists((p if os.path.isabs(p) or "://" in p
                                    else os.path.join(model_dir, p)) + ".index")]
    name = os.path.basename(restored.path)
    stamp = dict(zip((os.path.basename(p) for p in listed), stamps)).get(name, time.time())
    keep.append((name, stamp))
    if (state.model_checkpoint_path and same(state.model_checkpoint_path, name)
            and [os.path.basename(p) for p in listed] == [os.path.basename(p) for p, _ in keep]):
        return
    fresh = checkpoint_state_pb2.CheckpointState(
        model_checkpoint_path=name,
        all_model_checkpoint_paths=[os.path.basename(p) for p, _ in keep],
        all_model_checkpoint_timestamps=[t for _, t in keep],
        last_preserved_timestamp=state.last_preserved_timestamp)
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text_format.MessageToString(fresh))
    tf.io.gfile.rename(tmp, path, overwrite=True)


def load_trained_model(model_dir: str, checkpoint_path: str | None = None
                       ) -> tuple[HybridModel, int]:
    """Rebuilds the model of ``model_dir`` and restores the given checkpoint, or else the
    newest checkpoint that loads (:func:`restore_newest`: a damaged newest checkpoint is
    skipped with one warning naming the one used); returns (model, step). Optimizer state
    is not loaded. Raises FileNotFoundError without a checkpoint and
    :class:`CheckpointUnreadable` when none loads."""
    config, _ = load_model_config(model_dir)
    model = HybridModel(config)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = make_checkpoint(model, step)

    def load(path: str) -> None:
        checkpoint.read(path).expect_partial().assert_existing_objects_matched()

    if checkpoint_path:
        try:
            load(checkpoint_path)
        except AssertionError as err:
            raise _mismatch(model_dir, checkpoint_path, err) from None
        return model, int(step.numpy())
    restored = restore_newest(model_dir, load)
    if restored.path is None:
        missing = f" (listed but missing: {restored.describe_skipped()})" if restored.skipped else ""
        raise FileNotFoundError(
            f"no checkpoint in {model_dir!r} (expected ckpt-<step> files){missing}")
    if restored.skipped:
        log.warning("loaded %s at step %d instead of the newer checkpoint(s) that do not load: "
                    "%s", restored.path, int(step.numpy()), restored.describe_skipped())
    return model, int(step.numpy())
