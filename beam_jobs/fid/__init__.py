"""FID / KID / IS / precision and recall as an Apache Beam job: images -> extractor
features -> statistics.

One image source per run:

* ``--data_dir=DIR --split=S``: the TFRecords written by ``beam_jobs.preprocess``;
* ``--saved_model=PATH --num_samples=N [--temperature=1.0] [--seed=0]``: a generator
  SavedModel with signature ``sample(seed int64 [B], temperature float32 [B]) ->
  {"images": uint8 [B, H, W, C]}``; sample i uses row seed ``seed * 2^31 + i``
  (:func:`tfp_models.row_seeds.sample_row_seeds`, as ``pipeline.evaluate`` draws them);
* ``--model_dir=DIR --num_samples=N [...]``: a trained model directory (pipeline.train),
  sampled without an export (the same rows as its export's ``sample`` signature);
* ``--image_folder=DIR``: image files under DIR (the extensions of
  :data:`artifacts.dataset_format.IMAGE_EXTENSIONS`; dotfiles and ``__MACOSX`` skipped);
* ``--source=KIND --input=PATH`` (and ``--tfds_*``): any raw input of
  ``beam_jobs.preprocess`` (image folders and zips, LSUN LMDB, ImageNet-64 npz, MNIST
  IDX, prepared TFDS data sets), read by the same readers and decoded to the same pixels
  (:mod:`beam_jobs.sources`), each image at its own size.

Features come from Beam RunInference over an extractor SavedModel (see
:mod:`beam_jobs.fid.extractors`); FID statistics are float64 sufficient statistics merged
by a CombineFn (O(d^2) memory whatever N is), IS per-split softmax statistics, KID a
bounded reservoir of features per side, precision and recall (Kynkaanniemi et al. 2019,
k = 3) the features of at most ``--pr_max_samples`` images per side (a deterministic
subset if there are more: the records whose keys hash smallest), computed on the driver
after the features in row blocks of distances. Their reference side is the features of
``--reference_data_dir``, or those stored in the ``--reference_stats`` file (written by
``--output_stats ... --save_pr_features``); without either they are reported as null
with a note (``pr_note``).

Modules: :mod:`~beam_jobs.fid.cli` (the command line), :mod:`~beam_jobs.fid.api`
(:func:`evaluate`, :func:`compute_statistics`, ...), :mod:`~beam_jobs.fid.sources`,
:mod:`~beam_jobs.fid.generators` and :mod:`~beam_jobs.fid.source_registry` (the sources
by flag), :mod:`~beam_jobs.fid.batch_inference`, :mod:`~beam_jobs.fid.pipeline`,
:mod:`~beam_jobs.fid.results`, :mod:`~beam_jobs.fid.report`, the math in
:mod:`beam_jobs.fid.fid_math`; the extractors (:mod:`~beam_jobs.fid.extractors` with
``extractor_contract``, ``extractor_builders``, ``inception_builders``,
``inference_handlers``, ``identity``) and the classifier trainer that makes one
(``python -m beam_jobs.fid.train_classifier``). The names below are loaded on first use,
so importing one module of the package stays cheap.

Examples::

    # reference statistics of a data set, once
    python -m beam_jobs.fid --data_dir=data/mnist --split=train \\
        --extractor=mnist_classifier --extractor_path=work/mnist_classifier \\
        --output_stats=ref.npz --save_kid_features --save_pr_features
    # FID/KID/IS/precision/recall of 10,000 model samples
    python -m beam_jobs.fid --saved_model=export/model/1 --num_samples=10000 \\
        --reference_stats=ref.npz --extractor=mnist_classifier \\
        --extractor_path=work/mnist_classifier
    # FID of two statistics files (and precision/recall if both hold P&R features)
    python -m beam_jobs.fid --compare_stats=a.npz,b.npz

Statistics files record the extractor's identity (name, content fingerprint, resize
protocol), the image shape and the sample count; statistics that differ in any of them,
or that record no fingerprint (files of older versions, plain TTUR mu/sigma files), are
refused with a one-line error. Regenerate old files; ``--allow_unverified_stats`` uses a
file without a fingerprint anyway (what both sides record is still checked).

The flags are absl flags (``--help`` lists them; ``--flagfile=FILE`` works for every
flag). Unknown flags are passed to Beam (``--runner``, ``--direct_running_mode``, ...),
also from a flagfile; the default is ``--runner=FnApiRunner`` (DirectRunner's Prism path
needs the network).
Data sets, image folders and statistics files are read and written through Beam's
FileSystems (local, mounted, ``gs://``, ...); the pipeline's combined results go under
``--temp_location`` (required on a distributed runner; a local temporary directory
otherwise). Extractor and generator SavedModels are read by TensorFlow from a path that
must exist on the driver and on every worker.
"""
import importlib

_API = {
    "api": ("compute_statistics", "compare_stats", "check_reference_stats", "evaluate",
            "evaluate_samples", "OutputNotWritten"),
    "cli": ("main", "cli", "PROG"),
    "sources": ("ImageSource", "TFRecordSource", "RawImageSource", "ImageFolderSource",
                "ReadImages", "DEFAULT_BATCH_SIZE"),
    "generators": ("SampleSource", "ModelDirSampleSource"),
    "source_registry": ("FID_SOURCES",),
    "pipeline": ("FeatureResult", "DistinctShapesCombineFn", "run_features",
                 "DEFAULT_KID_SAMPLES", "DEFAULT_PR_SAMPLES", "NUM_IS_SPLITS"),
    "report": ("precision_recall_report",),
}
_WHERE = {name: f"beam_jobs.fid.{module}" for module, names in _API.items() for name in names}
_WHERE["pipeline_options"] = "beam_jobs.runtime.beam_options"
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

