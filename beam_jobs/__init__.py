"""The Beam jobs: preprocessing raw images to TFRecords, FID/KID/IS of samples.

Importing the package first makes its command lines quiet at start-up
(:mod:`artifacts.quiet_start`), before any module of it imports TensorFlow or Beam.
"""
from artifacts.quiet_start import install as _install_quiet_start

_install_quiet_start()
