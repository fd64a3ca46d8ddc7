"""Exporting a model (TF Serving SavedModel, MLflow pyfunc) and calling it.

Importing the package first makes its command lines quiet at start-up
(:mod:`artifacts.quiet_start`), before any module of it imports TensorFlow or Beam.
"""
from artifacts.quiet_start import install as _install_quiet_start

_install_quiet_start()
