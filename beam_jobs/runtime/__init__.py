"""What both Beam jobs run on: :mod:`~beam_jobs.runtime.beam_fs` (files on any Beam
filesystem), :mod:`~beam_jobs.runtime.beam_options` (the runner choice) and Beam's Dask
runner made usable (:mod:`~beam_jobs.runtime.dask_runner`,
:mod:`~beam_jobs.runtime.dask_bundles`)."""
