"""The FID job reads raw inputs through the preprocessing job's sources: every input kind,
the same keys and the same pixels (16-bit images included)."""
from __future__ import annotations

import io
import zipfile

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from artifacts import dataset_format
from artifacts.cli import parse_flags
from beam_jobs import fid
from beam_jobs.fid import cli
from beam_jobs.fid.source_registry import source_from_args
from beam_jobs.preprocess import run_preprocess
from beam_jobs.sources.cli_flags import check_source_flags
from beam_jobs.sources.registry import SOURCE_KINDS

IN_MEMORY = ["--direct_running_mode=in_memory"]


def _preprocessed(out_dir: str) -> list[tuple[str, list]]:
    """(key, pixels as nested lists) of every record of a data set's train split."""
    import tensorflow as tf

    info = dataset_format.read_dataset_info(out_dir)
    spec = dataset_format.feature_spec()
    out = []
    for path in info.split_files["train"]:
        for record in dataset_format.iter_tfrecord(path):
            ex = tf.io.parse_single_example(record, spec)
            out.append((ex[dataset_format.KEY_KEY].numpy().decode(),
                        tf.io.decode_png(ex[dataset_format.IMAGE_KEY]).numpy().tolist()))
    return out


def _fid_pixels(source) -> beam.PTransform:
    return fid.ReadImages(source) | beam.MapTuple(lambda key, image: (key, image.tolist()))


def test_sixteen_bit_grey_png_gives_the_same_pixels_in_both_jobs(tmp_path):
    """A 16-bit grayscale PNG (mode I;16) keeps its high byte in the preprocessing job
    and in the FID job alike; 8-bit grey images are unchanged in both."""
    rng = np.random.default_rng(16)
    folder = tmp_path / "imgs"
    folder.mkdir()
    wide = rng.integers(0, 65536, (8, 8)).astype(np.uint16)
    Image.fromarray(wide).save(folder / "wide.png")
    assert Image.open(folder / "wide.png").mode == "I;16"
    grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(grey).save(folder / "grey.png")

    out = tmp_path / "out"
    run_preprocess("image_folder", str(folder), str(out), 8, grayscale=True,
                   pipeline_args=IN_MEMORY)
    expected = _preprocessed(str(out))
    by_key = dict(expected)
    assert np.array_equal(np.array(by_key["wide.png"])[..., 0], wide >> 8)
    assert np.array_equal(np.array(by_key["grey.png"])[..., 0], grey)
    with beam.Pipeline(options=fid.pipeline_options(IN_MEMORY)) as p:
        assert_that(p | _fid_pixels(fid.ImageFolderSource(str(folder))), equal_to(expected))


def test_fid_takes_every_input_kind_of_preprocess():
    """--source=KIND --input=PATH (or --tfds_name) chooses the raw source of that kind."""
    for kind in SOURCE_KINDS:
        flags = ["--tfds_name=cifar10"] if kind == "tfds" else ["--input=/data/x,/data/y"]
        args, _ = cli.parse_args([f"--source={kind}", *flags])  # check_source_flags included
        source = source_from_args(args)
        assert isinstance(source, fid.RawImageSource) and source.kind == kind
        assert (dict(source.options) == {"name": "cifar10"} if kind == "tfds"
                else source.input_path == ("/data/x", "/data/y"))
    args, _ = cli.parse_args(["--image_folder=/data/x"])
    check_source_flags(args)
    assert source_from_args(args) == fid.ImageFolderSource("/data/x")
    two, _ = parse_flags(cli.define_flags(), ["--image_folder=a", "--data_dir=b"], cli.PROG, "")
    with pytest.raises(SystemExit, match="exactly one source"):
        source_from_args(two)


@pytest.mark.parametrize("kind", ["image_zip", "imagenet64_npz"])
def test_raw_inputs_give_fid_the_keys_and_pixels_of_preprocess(kind, tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    if kind == "image_zip":
        path = tmp_path / "imgs.zip"
        with zipfile.ZipFile(path, "w") as z:
            for i, image in enumerate(images):
                buf = io.BytesIO()
                Image.fromarray(image).save(buf, format="PNG")
                z.writestr(f"cls{i % 2}/{i}.png", buf.getvalue())
            z.writestr("cls0/broken.png", b"not a png")
    else:
        path = tmp_path / "val_data.npz"
        np.savez(path, data=images.transpose(0, 3, 1, 2).reshape(5, -1), labels=[1, 2, 3, 4, 5])
    out = tmp_path / "out"
    info = run_preprocess(kind, str(path), str(out), 8, pipeline_args=IN_MEMORY)
    expected = _preprocessed(str(out))
    assert len(expected) == 5 and info["num_bad_records"] == (kind == "image_zip")
    source = fid.RawImageSource(kind, str(path))
    assert source.size_hint() == 5 + (kind == "image_zip")
    with beam.Pipeline(options=fid.pipeline_options(IN_MEMORY)) as p:
        assert_that(p | _fid_pixels(source), equal_to(expected))
