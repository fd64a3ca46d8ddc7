"""Beam job: raw image sources -> deterministic sharded TFRecords + dataset.json.

    python -m beam_jobs.preprocess --source=image_zip --input=cifar.zip \\
        --output_dir=data/cifar64 --image_size=64 [--resize_shorter_side=96] \\
        [--center_crop | --nocenter_crop] [--validation_fraction=0.05] [--num_shards=N] \\
        [--grayscale] [--overwrite] [Beam pipeline options, e.g. --runner=DataflowRunner ...]

    python -m beam_jobs.preprocess --source=tfds --tfds_name=cifar10 \\
        --tfds_data_dir=~/tensorflow_datasets --tfds_split=train+test \\
        --output_dir=data/cifar32 --image_size=32 --validation_fraction=0.1

    python -m beam_jobs.preprocess --source=image_zip \\
        --input=../shared/data/cifar10_train_jpg/cifar10_train_jpg.zip,../shared/data/cifar10_test_jpg/cifar10_test_jpg.zip \\
        --split_by=top_folder --output_dir=data/cifar10 --image_size=32

The flags are absl flags (``--help`` lists them): ``--flagfile=FILE`` (one ``--flag=value``
per line) works for every flag, and any flag the job does not define is a Beam pipeline
option, on the command line or in a flagfile. ``--verify --output_dir=DIR`` checks a
written data set against its dataset.json instead.

Several inputs: ``--input`` takes a comma-separated list of inputs of one kind
(``image_folder``, ``image_zip``) read as one data set: record keys must be unique across
the inputs, labels are the sorted union of the inputs' class folder names, and
dataset.json's ``source`` lists every input.

Splits (``--split_by``, :mod:`beam_jobs.preprocess.shard_plan`): ``hash`` (default) puts a record in
``validation`` when sha256 of its key falls below ``--validation_fraction``, else in
``train``; ``top_folder`` takes the first component of its key (``train/cat/0001.jpg`` ->
``train``; the names ``train``, ``validation``, ``test``). dataset.json's ``transform``
records the rule used.

Sources (``--source``): ``lsun_lmdb``, ``imagenet64_npz``, ``image_folder``, ``image_zip``,
``mnist_idx``, ``tfds`` (a TFDS data set already prepared locally; see
:mod:`beam_jobs.sources.registry`). Transform: :mod:`beam_jobs.sources.image_transform`.

The output also carries TFDS metadata (:mod:`beam_jobs.preprocess.tfds_metadata`), so
``tfds.builder_from_directory(output_dir).as_dataset(split="train")`` (or any split it
wrote) reads the shards as they are (features ``image``, ``label``, ``key``).

Pipeline: the driver lists every record's key and locator, assigns it to a split (by the
split rule) and a shard by sha256(key), sorts each shard by key, pickles the shard's
locators into the work directory and cuts it into work units of RECORDS_PER_PART records
(:mod:`beam_jobs.preprocess.shard_plan`) -> Create (reshuffled over the workers) -> one DoFn
(:mod:`beam_jobs.preprocess.fns`) reads its records by random access, decodes,
resizes/crops, encodes PNG + Example and writes a fragment file under a name unique to the
attempt (records that fail go to a ``bad`` output with the reason) -> GroupByKey of the
fragment *names* by shard -> each shard is the concatenation of its fragments in order,
written whole under its final name in the work directory. Encoded images are never
shuffled through the runner. Shards are byte-identical for the same input on any runner.

Every file goes through Beam's ``FileSystems`` (:mod:`beam_jobs.runtime.beam_fs`), so inputs
(``image_folder``, ``image_zip``, ``mnist_idx``, ``tfds``; ``lsun_lmdb`` and
``imagenet64_npz`` need local or mounted paths), the work directory and ``--output_dir``
may be local, mounted or ``gs://``/``s3://``/``hdfs://`` paths. The work directory is
``<--temp_location>/preprocess-<id>`` when ``--temp_location`` is given, else a hidden
sibling of ``--output_dir``; it is deleted at the end. Nothing relies on atomic renames:
the driver checks every shard's size in the work directory, then commits (a marker file,
the old data set's dataset.json deleted first, the shards moved in and checked again under
their final names, TFDS metadata, dataset.json last). A directory without dataset.json is
never a data set; an interrupted commit is replaced by a re-run with ``--overwrite``.

Without ``--runner`` the job runs locally on Beam's ``FnApiRunner`` (Beam 2.77's
DirectRunner first tries to download the Prism runner, which fails offline) with a running
mode chosen by input size unless ``--direct_running_mode`` is given
(:mod:`beam_jobs.runtime.beam_options`).

Modules: :mod:`~beam_jobs.preprocess.job` (:func:`run_preprocess`),
:mod:`~beam_jobs.preprocess.cli` (the command line, ``--verify``),
:mod:`~beam_jobs.preprocess.work_dir` (work directory, commit), :mod:`~beam_jobs.preprocess.shard_plan`,
:mod:`~beam_jobs.preprocess.fns` (DoFns), :mod:`~beam_jobs.preprocess.tfds_metadata`; the
raw sources and the image transform are the shared :mod:`beam_jobs.sources`. The names
below are loaded on first use, so importing one module of the package stays cheap.
"""
import importlib

_API = {"run_preprocess": "job", "code_version": "job", "dangling_links": "job",
        "main": "cli", "parse_args": "cli", "verify": "cli", "PROG": "cli",
        "COMMIT_MARKER": "work_dir", "OWNER_FILE": "work_dir", "STALE_WORK_AGE_S": "work_dir",
        "remove_stale_work_dirs": "work_dir"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
