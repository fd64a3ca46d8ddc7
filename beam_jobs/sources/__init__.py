"""Raw image sources and the image transform, shared by both jobs.

:mod:`~beam_jobs.sources.registry` names the kinds (``--source``: ``lsun_lmdb``,
``imagenet64_npz``, ``image_folder``, ``image_zip``, ``mnist_idx``, ``tfds``), plans an
input on the driver and opens its reader on a worker (:mod:`~beam_jobs.sources.raw_source`:
what every kind provides; the kinds in ``file_sources``, ``array_sources``,
``lmdb_source``, ``tfds_source``, with ``mnist_idx``); :mod:`~beam_jobs.sources.cli_flags`
holds the flags that choose one. :mod:`~beam_jobs.sources.image_transform` decodes and
converts pixels for both jobs (16-bit images keep their high byte:
:func:`~beam_jobs.sources.image_transform.to_8bit`) and resizes, crops and encodes them for
preprocessing.
"""
