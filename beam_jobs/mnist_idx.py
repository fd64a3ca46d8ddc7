"""Transitional alias of :mod:`beam_jobs.sources.mnist_idx` for tests/conftest.py, which is
being edited elsewhere right now; delete this file once it imports
``beam_jobs.sources.mnist_idx`` (issue #25 item 1)."""
from beam_jobs.sources.mnist_idx import load_mnist

__all__ = ["load_mnist"]
