"""The FID job's sources by the CLI flag that chooses each (``--data_dir``,
``--saved_model``, ``--model_dir``, ``--image_folder``, ``--source`` with ``--input``)."""
from __future__ import annotations

import argparse

from beam_jobs.fid.generators import ModelDirSampleSource, SampleSource
from beam_jobs.fid.sources import ImageFolderSource, ImageSource, RawImageSource, TFRecordSource

FID_SOURCES: dict[str, type[ImageSource]] = {
    cls.FLAG: cls for cls in (TFRecordSource, SampleSource, ModelDirSampleSource,
                              ImageFolderSource, RawImageSource)}
GENERATOR_SOURCES = {"saved_model": SampleSource, "model_dir": ModelDirSampleSource}


def source_from_args(args: argparse.Namespace) -> ImageSource:
    """The one source the CLI's flags choose; SystemExit naming the flags otherwise."""
    chosen = [flag for flag in FID_SOURCES if getattr(args, flag)]
    if len(chosen) != 1:
        raise SystemExit("give exactly one source: --data_dir, --saved_model, --model_dir, "
                         "--image_folder or --source with --input "
                         f"(got {chosen or 'none'}), or --compare_stats")
    return FID_SOURCES[chosen[0]].from_args(args)
