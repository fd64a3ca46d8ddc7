"""The Beam jobs on a filesystem that is not the local one: ``testfs://`` below is a Beam
``FileSystem`` over a separate directory tree with object-store semantics (no
directories, objects appear only when their writer closes, rename = copy + delete), so
any code path that falls back to ``os.path``/``open`` on a job path fails or writes into
the working directory (checked empty). Plus the byte-identical golden output of the
preprocessing job (shard digests recorded before the job moved to FileSystems).

FnApiRunner runs its workers in this process in the ``in_memory`` and
``multi_threading`` modes the tests use, so they see the scheme registered here.
"""
from __future__ import annotations

import io
import os
import shutil
import zipfile

import numpy as np
import pytest
from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems
from PIL import Image

from artifacts import dataset_format
from beam_jobs.preprocess import COMMIT_MARKER, run_preprocess
from beam_jobs.runtime import beam_fs

ROOT_ENV = "ADE_TESTFS_ROOT"


class _Object(io.BytesIO):
    """A write channel: the object appears under its name only when closed."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def close(self):
        if not self.closed:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            tmp = f"{self._path}.upload-{id(self)}"
            with open(tmp, "wb") as f:
                f.write(self.getvalue())
            os.replace(tmp, self._path)
        super().close()


class TestFileSystem(FileSystem):
    """``testfs://a/b`` is ``$ADE_TESTFS_ROOT/a/b``; an object store's semantics."""

    __test__ = False  # not a pytest class

    @classmethod
    def scheme(cls):
        return "testfs"

    @staticmethod
    def _local(path: str) -> str:
        assert path.startswith("testfs://"), path
        return os.path.join(os.environ[ROOT_ENV], path[len("testfs://"):])

    def join(self, basepath, *paths):
        out = basepath
        for p in paths:
            out = out.rstrip("/") + "/" + p.lstrip("/")
        return out

    def split(self, path):
        path = path.rstrip("/")
        head, _, tail = path.rpartition("/")
        return (head if "://" in head else path[:len("testfs://")]), tail

    def mkdirs(self, path):
        pass  # no directories

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        root = os.environ[ROOT_ENV]
        for dirpath, _, files in os.walk(root):
            for name in files:
                if ".upload-" in name:
                    continue
                local = os.path.join(dirpath, name)
                url = "testfs://" + os.path.relpath(local, root).replace(os.sep, "/")
                if url.startswith(dir_or_prefix):
                    yield FileMetadata(url, os.path.getsize(local), os.path.getmtime(local))

    def create(self, path, mime_type="application/octet-stream",
               compression_type=CompressionTypes.AUTO):
        assert compression_type in (CompressionTypes.AUTO, CompressionTypes.UNCOMPRESSED)
        return _Object(self._local(path))

    def open(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
        try:
            return open(self._local(path), "rb")
        except OSError as e:
            raise BeamIOError("open failed", {path: e}) from e

    def copy(self, source_file_names, destination_file_names):
        for s, d in zip(source_file_names, destination_file_names):
            with self.open(s) as src, self.create(d) as dst:
                dst.write(src.read())

    def rename(self, source_file_names, destination_file_names):
        self.copy(source_file_names, destination_file_names)  # not atomic, as on GCS
        self.delete(source_file_names)

    def exists(self, path):
        return os.path.isfile(self._local(path))

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        errors = {}
        for p in paths:
            local = self._local(p)
            if os.path.isfile(local):
                os.remove(local)
            else:  # a "directory": every object under the prefix
                objects = [m.path for m in self._list(p.rstrip("/") + "/")]
                if not objects:
                    errors[p] = FileNotFoundError(p)
                for o in objects:
                    os.remove(self._local(o))
        if errors:
            raise BeamIOError("delete failed", errors)


@pytest.fixture()
def testfs(tmp_path, monkeypatch):
    """(root of the testfs tree, an empty working directory that must stay empty)."""
    root = tmp_path / "testfs_root"
    root.mkdir()
    monkeypatch.setenv(ROOT_ENV, str(root))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield root
    assert os.listdir(cwd) == []  # nothing fell back to a local relative path


def objects(root, prefix: str = "") -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel.startswith(prefix):
                with open(os.path.join(dirpath, name), "rb") as f:
                    out[rel[len(prefix):]] = f.read()
    return out


# -- the scheme itself behaves as intended --------------------------------------------------

def test_testfs_is_a_separate_tree_without_dirs(testfs):
    assert FileSystems.get_scheme("testfs://a/b") == "testfs"
    beam_fs.write_bytes("testfs://a/b/c.bin", b"xyz")
    assert (testfs / "a" / "b" / "c.bin").read_bytes() == b"xyz"
    assert beam_fs.list_files("testfs://a") == {"b/c.bin": 3}
    assert beam_fs.read_bytes("testfs://a/b/c.bin") == b"xyz"
    assert not os.path.exists("testfs://a/b/c.bin")  # os.path cannot see it
    beam_fs.move(["testfs://a/b/c.bin"], ["testfs://d/e.bin"])
    assert beam_fs.list_files("testfs://a") == {} and beam_fs.exists("testfs://d/e.bin")
    beam_fs.delete_tree("testfs://d")
    assert objects(testfs) == {}


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


# -- the FID job on testfs ------------------------------------------------------------------

@pytest.fixture(scope="module")
def extractor_dir(tmp_path_factory) -> str:
    from beam_jobs.fid import extractors

    _, features_model = extractors.build_mnist_classifier(feature_dim=16, seed=2)
    return extractors.export_mnist_classifier(
        features_model, str(tmp_path_factory.mktemp("ext") / "mnist_classifier"))


@pytest.mark.slow
def test_fid_reads_data_and_writes_statistics_on_testfs(tmp_path, testfs, extractor_dir):
    from beam_jobs import fid
    from beam_jobs.fid import fid_math
    rng = np.random.default_rng(11)
    digits = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    (mnist / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(digits))
    (mnist / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(np.arange(30, dtype=np.uint8) % 10))
    mem = ["--direct_running_mode=in_memory"]
    run_preprocess("mnist_idx", str(mnist), str(tmp_path / "m"), 28, grayscale=True,
                   num_shards=2, pipeline_args=mem)
    run_preprocess("mnist_idx", str(mnist), "testfs://data/m", 28, grayscale=True,
                   num_shards=2, pipeline_args=mem)
    remote_args = mem + ["--temp_location=testfs://tmp"]
    local = fid.evaluate(fid.TFRecordSource(str(tmp_path / "m"), "train"), "mnist_classifier",
                         extractor_dir, kid_samples=20, output_stats=str(tmp_path / "a.npz"),
                         save_kid_features=True, pipeline_args=mem)
    remote = fid.evaluate(fid.TFRecordSource("testfs://data/m", "train"), "mnist_classifier",
                          extractor_dir, kid_samples=20, output_stats="testfs://stats/a.npz",
                          save_kid_features=True, pipeline_args=remote_args)
    assert remote["num_samples"] == local["num_samples"] == 30
    assert remote["is_mean"] == pytest.approx(local["is_mean"], rel=1e-5)
    a = fid_math.FeatureStatistics.load(str(tmp_path / "a.npz"))
    b = fid_math.FeatureStatistics.load("testfs://stats/a.npz")
    # float32 features of differently composed RunInference batches: ~1e-7 relative apart
    np.testing.assert_allclose(b.mu, a.mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.sigma, a.sigma, rtol=1e-5, atol=1e-6)
    assert b.kid_features.shape == (20, 16) and b.image_shape == "28x28x1"
    assert abs(fid.compare_stats(str(tmp_path / "a.npz"), "testfs://stats/a.npz")) < 1e-4
    # FID against reference statistics stored on testfs, for images in a testfs folder.
    for i in range(20):
        beam_fs.write_bytes(f"testfs://imgs/d{i:02d}.png", _png(digits[i]))
    beam_fs.write_bytes("testfs://imgs/.hidden/x.png", _png(digits[7]))
    folder = fid.ImageFolderSource("testfs://imgs")
    assert folder.files() == [f"testfs://imgs/d{i:02d}.png" for i in range(20)]
    out = fid.evaluate(folder, "mnist_classifier", extractor_dir, kid_samples=0,
                       reference_stats_path="testfs://stats/a.npz", pipeline_args=remote_args)
    assert out["num_samples"] == 20 and out["fid"] > 0
    assert objects(testfs, "tmp/") == {}  # every run's files are deleted
    with pytest.raises(ValueError, match="--temp_location"):
        fid.run_features(folder, _info(extractor_dir),
                         pipeline_args=["--runner=DataflowRunner", "--project=p"])


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _info(extractor_dir: str):
    from beam_jobs.fid import extractors

    return extractors.resolve_extractor("mnist_classifier", extractor_dir)
