"""What the project keeps on disk, below every job that reads or writes it.

* :mod:`artifacts.dataset_format`: the data set format (sharded TFRecords + dataset.json,
  DatasetInfo, which raw files are images);
* :mod:`artifacts.model_io`: model directories (model_config.json + checkpoints);
* :mod:`artifacts.tracking`: the MLflow run a model directory belongs to;
* :mod:`artifacts.store_creation`: an MLflow store and experiment created safely by
  processes that start together;
* :mod:`artifacts.run_tracker`: a training run's tracking, never stopped by its store;
* :mod:`artifacts.images`: sample grids as PNG;
* :mod:`artifacts.cli`: what every command line shares (one-line user errors, logging);
* :mod:`artifacts.quiet_start`: no TensorFlow/CUDA/Beam start-up noise on stderr, installed
  here and in the ``__init__`` of every package with a command line.

Imports run downward: ``tfp_models`` <- ``artifacts`` <- ``beam_jobs``, ``pipeline`` <-
``serving`` <- ``benchmarks`` <- ``experiments``. Nothing here imports ``beam_jobs``,
``pipeline`` or ``serving``.
"""
from artifacts.quiet_start import install as _install_quiet_start

_install_quiet_start()
