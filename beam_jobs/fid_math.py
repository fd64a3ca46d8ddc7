"""Transitional alias of :class:`beam_jobs.fid.fid_math.StatisticsError` for
pipeline/evaluate.py, which is being edited elsewhere right now; delete this file once it
imports ``beam_jobs.fid.fid_math`` (issue #25 item 1)."""
from beam_jobs.fid.fid_math import StatisticsError

__all__ = ["StatisticsError"]
