"""The FID job's sources by the CLI flag that chooses each (``--data_dir``,
``--saved_model``, ``--model_dir``, ``--image_folder``, ``--source`` with ``--input``)."""
from __future__ import annotations

from types import SimpleNamespace

from beam_jobs.fid.generators import ModelDirSampleSource, SampleSource
from beam_jobs.fid.sources import ImageFolderSource, ImageSource, RawImageSource, TFRecordSource

FID_SOURCES: dict[str, type[ImageSource]] = {
    cls.FLAG: cls for cls in (TFRecordSource, SampleSource, ModelDirSampleSource,
                              ImageFolderSource, RawImageSource)}
GENERATOR_SOURCES = {"saved_model": SampleSource, "model_dir": ModelDirSampleSource}
SOURCE_CHOICE_ERROR = ("give exactly one source: --data_dir, --saved_model, --model_dir, "
                       "--image_folder or --source with --input (got {}), or --compare_stats")


def chosen_sources(args: SimpleNamespace) -> list[str]:
    """The source flags (:data:`FID_SOURCES`) that are set."""
    return [flag for flag in FID_SOURCES if getattr(args, flag)]


def source_from_args(args: SimpleNamespace) -> ImageSource:
    """The one source the CLI's flags choose (:func:`beam_jobs.fid.cli.parse_args`);
    SystemExit naming the flags otherwise."""
    chosen = chosen_sources(args)
    if len(chosen) != 1:
        raise SystemExit(SOURCE_CHOICE_ERROR.format(chosen or "none"))
    return FID_SOURCES[chosen[0]].from_args(args)
