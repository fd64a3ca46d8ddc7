"""The Beam jobs, a package each: :mod:`beam_jobs.preprocess` (raw images -> TFRecords) and
:mod:`beam_jobs.fid` (FID/KID/IS/precision/recall), over the image sources and transform
they share (:mod:`beam_jobs.sources`) and the Beam runtime (:mod:`beam_jobs.runtime`).

Importing the package first makes its command lines quiet at start-up
(:mod:`artifacts.quiet_start`), before any module of it imports TensorFlow or Beam.
"""
from artifacts.quiet_start import install as _install_quiet_start

_install_quiet_start()
