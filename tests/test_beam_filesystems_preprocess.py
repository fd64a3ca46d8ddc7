"""beam_jobs.preprocess on ``testfs://`` (the object-store-like Beam filesystem of
test_beam_filesystems.py): the byte-identical golden output of the preprocessing job (shard
digests recorded before the job moved to FileSystems), overwrites and refusals, and inputs
(folders, zips, IDX files) read like local ones.
"""
from __future__ import annotations

import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image
from test_beam_filesystems import objects, testfs  # noqa: F401 (a fixture)

from artifacts import dataset_format
from beam_jobs.preprocess import COMMIT_MARKER, run_preprocess
from beam_jobs.runtime import beam_fs

# -- golden shards ------------------------------------------------------------------------

# sha256 of the shards written for golden_input() by beam_jobs.preprocess at d022d1a (local
# atomic renames, before FileSystems): the output must stay byte-identical.
GOLDEN = {
    "train": [("train-00000-of-00003.tfrecord", 4,
               "45cf0c43ae29ab52c6f358d9a8d430fec9029281cdb90a40eec591b5695e18ee"),
              ("train-00001-of-00003.tfrecord", 14,
               "e3918fed699babede8dcffa9af0fa0d2a2b7750b0832457592656b6b5ea97f63"),
              ("train-00002-of-00003.tfrecord", 16,
               "01c8c522681d58bf84946d8f7aafefdf9de1cdebd0213ea6722a8fbad59b19a1")],
    "validation": [("validation-00000-of-00003.tfrecord", 2,
                    "1f2addacc656b419e544d17a5440dfc033fb4babe3381ca634f1a4fed694a981"),
                   ("validation-00001-of-00003.tfrecord", 5,
                    "55881fbad7f9755036417b15b20288a6a5cd10fb206be1ffec186b73cd5e7c3a"),
                   ("validation-00002-of-00003.tfrecord", 7,
                    "6c076bd45317b780207356788f292f71deb1240b6c6fe4a1e12b47724ab0d241")],
}
GOLDEN_KW = dict(validation_fraction=0.3, num_shards=3)


def golden_input(folder) -> str:
    """Two downsampled-ImageNet npz batches of seeded random 16x16 images (48 records)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(2026)
    for name, n in [("train_data_batch_1.npz", 37), ("val_data.npz", 11)]:
        images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
        np.savez(os.path.join(folder, name), data=images.transpose(0, 3, 1, 2).reshape(n, -1),
                 labels=rng.integers(1, 1001, n))
    return str(folder)


def digests(info: dict) -> dict:
    return {s: [(e["file"], e["count"], e["sha256"]) for e in v["shards"]]
            for s, v in info["splits"].items()}


def test_golden_shards_local_and_on_testfs(tmp_path, testfs):
    src = golden_input(tmp_path / "npz")
    local = run_preprocess("imagenet64_npz", src, str(tmp_path / "local"), 16,
                           pipeline_args=["--direct_running_mode=in_memory"], **GOLDEN_KW)
    assert digests(local) == {s: [tuple(e) for e in v] for s, v in GOLDEN.items()}
    remote = run_preprocess("imagenet64_npz", src, "testfs://bucket/data/out", 16,
                            pipeline_args=["--direct_running_mode=multi_threading",
                                           "--direct_num_workers=2",
                                           "--temp_location=testfs://bucket/tmp"],
                            **GOLDEN_KW)
    assert digests(remote) == digests(local)
    written = objects(testfs, "bucket/data/out/")
    names = sorted(e["file"] for v in local["splits"].values() for e in v["shards"])
    assert sorted(written) == sorted(names + ["dataset.json", "dataset_info.json",
                                              "features.json"])
    for name in names:
        assert written[name] == (tmp_path / "local" / name).read_bytes()
    assert objects(testfs, "bucket/tmp/") == {}  # the work directory is gone
    # dataset.json and the TFDS metadata read back from a local copy of the tree.
    copy = tmp_path / "copy"
    shutil.copytree(testfs / "bucket" / "data" / "out", copy)
    info = dataset_format.read_dataset_info(str(copy))
    assert info.split_counts == {"train": 34, "validation": 14}
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(copy))
    assert builder.info.splits["train"].num_examples == 34
    assert builder.info.splits["validation"].num_bytes == sum(
        len(written[n]) for n in names if n.startswith("validation"))


def test_overwrite_and_refusals_on_testfs(tmp_path, testfs):
    src = golden_input(tmp_path / "npz")
    out = "testfs://b/out"
    args = ["--direct_running_mode=in_memory"]
    first = run_preprocess("imagenet64_npz", src, out, 16, pipeline_args=args, **GOLDEN_KW)
    before = objects(testfs, "b/out/")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_preprocess("imagenet64_npz", src, out, 16, pipeline_args=args)
    assert objects(testfs, "b/out/") == before
    # Without --temp_location the work directory is a hidden sibling of the output.
    second = run_preprocess("imagenet64_npz", src, out, 8, overwrite=True, pipeline_args=args)
    after = objects(testfs, "b/")
    assert second["image_shape"] == [8, 8, 3] != first["image_shape"]
    assert sorted(after) == sorted(
        f"out/{n}" for n in ["dataset.json", "dataset_info.json", "features.json"]
        + [e["file"] for v in second["splits"].values() for e in v["shards"]])
    beam_fs.write_bytes("testfs://b/other/keep.txt", b"mine")
    with pytest.raises(FileExistsError, match="not a data set"):
        run_preprocess("imagenet64_npz", src, "testfs://b/other", 8, overwrite=True)
    # An interrupted commit (marker, no dataset.json) is replaced with --overwrite.
    beam_fs.delete_tree(out)
    beam_fs.write_bytes(f"{out}/{COMMIT_MARKER}", b"{}")
    beam_fs.write_bytes(f"{out}/train-00000-of-00009.tfrecord", b"partial")
    with pytest.raises(FileExistsError, match="interrupted commit"):
        run_preprocess("imagenet64_npz", src, out, 8, pipeline_args=args)
    third = run_preprocess("imagenet64_npz", src, out, 8, overwrite=True, pipeline_args=args)
    assert digests(third) == digests(second)
    assert COMMIT_MARKER not in beam_fs.list_files(out)
    assert "train-00000-of-00009.tfrecord" not in beam_fs.list_files(out)


# -- inputs on testfs: folders, zips, IDX files ---------------------------------------------

def _idx(arr: np.ndarray) -> bytes:
    import gzip
    import struct

    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return gzip.compress(header + arr.tobytes(), mtime=0)


def test_inputs_on_testfs_read_like_local_inputs(tmp_path, testfs):
    rng = np.random.default_rng(7)
    local = tmp_path / "in"
    photos = local / "photos"
    for cls in ("cats", "dogs", ".hidden"):
        (photos / cls).mkdir(parents=True)
    for i in range(12):
        img = rng.integers(0, 256, (20 + i, 18, 3), dtype=np.uint8)
        Image.fromarray(img).save(photos / ("cats", "dogs", ".hidden")[i % 3] / f"{i:02d}.png")
    (photos / "cats" / "big.png").write_bytes(b"\x89PNG" + b"\0" * 5000)
    (photos / "notes.txt").write_text("not an image")
    with zipfile.ZipFile(local / "photos.zip", "w") as zf:
        for p in sorted(photos.rglob("*.png")):
            zf.write(p, p.relative_to(photos).as_posix())
    mnist = local / "mnist"
    mnist.mkdir()
    (mnist / "t10k-images-idx3-ubyte.gz").write_bytes(
        _idx(rng.integers(0, 256, (25, 28, 28), dtype=np.uint8)))
    (mnist / "t10k-labels-idx1-ubyte.gz").write_bytes(
        _idx(rng.integers(0, 10, 25).astype(np.uint8)))
    shutil.copytree(local, testfs / "in")
    args = ["--direct_running_mode=in_memory"]
    for kind, rel, kw in [("image_folder", "photos", {}), ("image_zip", "photos.zip", {}),
                          ("mnist_idx", "mnist", {"grayscale": True})]:
        a = run_preprocess(kind, str(local / rel), str(tmp_path / f"out_{kind}"), 16,
                           num_shards=2, validation_fraction=0.2, pipeline_args=args,
                           max_member_bytes=4000, **kw)
        b = run_preprocess(kind, f"testfs://in/{rel}", f"testfs://out/{kind}", 16,
                           num_shards=2, validation_fraction=0.2, pipeline_args=args,
                           max_member_bytes=4000, **kw)
        assert digests(a) == digests(b), kind
        assert a["label_names"] == b["label_names"] and a["bad_records"] == b["bad_records"]
        assert b["source"]["input"] == f"testfs://in/{rel}"
        for v in b["splits"].values():
            for e in v["shards"]:
                assert objects(testfs, f"out/{kind}/")[e["file"]] == \
                    (tmp_path / f"out_{kind}" / e["file"]).read_bytes()
    folder = json_of(testfs / "out" / "image_folder")
    assert folder["label_names"] == ["cats", "dogs"]  # .hidden is not read
    assert folder["source"]["skipped_non_image_files"] == 1
    assert [r["key"] for r in folder["bad_records"]] == ["cats/big.png"]
    assert "exceeds --max_member_bytes=4000" in folder["bad_records"][0]["reason"]
    assert sum(v["count"] for v in folder["splits"].values()) == 8


def json_of(directory) -> dict:
    import json

    return json.loads((directory / dataset_format.DATASET_JSON).read_text())


def test_local_only_sources_refuse_urls_clearly(testfs):
    with pytest.raises(ValueError, match="local or mounted path"):
        run_preprocess("imagenet64_npz", "testfs://in/npz", "testfs://out/x", 16)
    with pytest.raises(ValueError, match="local or mounted path"):
        run_preprocess("lsun_lmdb", "testfs://in/lmdb", "testfs://out/x", 16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_preprocess("image_folder", "testfs://in/none", "testfs://out/x", 16)
