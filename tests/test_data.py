"""pipeline.data reads what beam_jobs.preprocess writes: exact pixels, labels, static
shapes, seeded determinism, and clear errors."""
from __future__ import annotations

import collections
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from artifacts import dataset_format
from artifacts.tfrecord_dataset import make_image_dataset, shuffled_epoch_records
from beam_jobs.preprocess import run_preprocess
from beam_jobs.preprocess.shard_plan import split_of
from beam_jobs.sources import mnist_idx
from pipeline.data import DatasetInfo, read_dataset_info


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory, mnist_dir) -> str:
    out = str(tmp_path_factory.mktemp("data") / "mnist28")
    run_preprocess("mnist_idx", str(mnist_dir), out, 28, validation_fraction=0.1, num_shards=3)
    return out


def _source_multiset(mnist_dir, split: str) -> collections.Counter:
    images, labels = mnist_idx.load_mnist(str(mnist_dir))
    return collections.Counter(
        (np.repeat(images[i][:, :, None], 3, axis=2).tobytes(), int(labels[i]))
        for i in range(len(images)) if split_of(f"t10k/{i:05d}", 0.1) == split)


def test_read_dataset_info(mnist_data):
    info = read_dataset_info(mnist_data)
    assert isinstance(info, DatasetInfo) and info.image_shape == (28, 28, 3)
    assert sum(info.split_counts.values()) == 10000 and set(info.split_counts) == {
        "train", "validation"}
    assert [os.path.basename(f) for f in info.split_files["train"]] == [
        f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert all(os.path.isabs(f) for f in info.split_files["validation"])
    assert info.label_names == [str(d) for d in range(10)] and info.raw["format_version"] == 1


@pytest.mark.parametrize("split", ["train", "validation"])
def test_read_back_equals_source_pixels_exactly(mnist_data, mnist_dir, split):
    ds = make_image_dataset(mnist_data, split, 512, shuffle=False, repeat=False,
                            drop_remainder=False, with_labels=True)
    got = collections.Counter()
    for images, labels in ds:
        assert images.dtype == tf.uint8 and labels.dtype == tf.int64
        for img, lab in zip(images.numpy(), labels.numpy()):
            got[(img.tobytes(), int(lab))] += 1
    assert got == _source_multiset(mnist_dir, split)


def test_static_shapes_seeded_determinism_and_flip(mnist_data):
    info = read_dataset_info(mnist_data)
    ds = make_image_dataset(info, "train", 32, seed=7)
    assert ds.element_spec.shape == (32, 28, 28, 3) and ds.element_spec.dtype == tf.uint8

    def take(**kw):
        return np.stack([b.numpy() for b in make_image_dataset(info, "train", 32, **kw).take(5)])

    a, b = take(seed=7), take(seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, take(seed=8))
    flipped = take(seed=7, random_flip=True)
    assert np.array_equal(flipped, take(seed=7, random_flip=True))
    same = [np.array_equal(f, x) for f, x in zip(flipped.reshape(-1, 28, 28, 3),
                                                 a.reshape(-1, 28, 28, 3))]
    mirrored = [np.array_equal(f, x[:, ::-1]) for f, x in zip(flipped.reshape(-1, 28, 28, 3),
                                                              a.reshape(-1, 28, 28, 3))]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 40 < sum(m and not s for s, m in zip(same, mirrored)) < 120  # ~half of 160
    # repeat: more batches than one epoch holds
    n = sum(1 for _ in make_image_dataset(info, "validation", 500, seed=1).take(4))
    assert n == 4


def test_clear_errors(mnist_data, tmp_path):
    with pytest.raises(ValueError, match=r"available splits: \['train', 'validation'\]"):
        make_image_dataset(mnist_data, "test", 8)
    with pytest.raises(ValueError, match="exceeds"):
        make_image_dataset(mnist_data, "validation", 5000)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_dataset_info(str(tmp_path / "nowhere"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        read_dataset_info(str(tmp_path / "plain"))
    broken = tmp_path / "broken"
    shutil.copytree(mnist_data, broken)
    os.remove(broken / "validation-00001-of-00003.tfrecord")
    with pytest.raises(FileNotFoundError, match="validation-00001-of-00003.tfrecord"):
        read_dataset_info(str(broken))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "dataset.json").write_text(json.dumps(
        {"format_version": 1, "image_shape": [8, 8, 3], "splits": {}}))
    with pytest.raises(ValueError, match="holds no records"):
        read_dataset_info(str(empty))


def _batches(info, start_batch: int, count: int, **kw) -> np.ndarray:
    ds = make_image_dataset(info, "train", 256, seed=3, start_batch=start_batch, **kw)
    return np.stack([b.numpy() for b in ds.take(count)])


def test_start_batch_continues_the_stream_exactly_across_epochs(mnist_data):
    """A resume at batch k yields batches k, k+1, ... of the run from 0, also where a batch
    straddles two epochs (9000 training digits = 35.2 batches of 256), with random flips."""
    info = read_dataset_info(mnist_data)
    stream = _batches(info, 0, 39, random_flip=True)
    for k in (1, 34, 35, 36):
        assert np.array_equal(_batches(info, k, 3, random_flip=True), stream[k:k + 3]), k
    with pytest.raises(ValueError, match="start_batch needs repeat"):
        make_image_dataset(info, "train", 256, repeat=False, start_batch=2)


def test_every_epoch_is_a_new_permutation_of_the_split(mnist_data):
    info = read_dataset_info(mnist_data)
    files = info.split_files["train"]
    epochs = [list(shuffled_epoch_records(files, e, 3, 10000).as_numpy_iterator())
              for e in (0, 1, 0)]
    assert len(epochs[0]) == info.split_counts["train"] == len(set(epochs[0]))
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    assert epochs[0] == epochs[2]  # an epoch depends on (seed, epoch) only


@pytest.mark.timeout(60)
def test_a_resume_a_million_steps_in_reads_at_most_one_epoch(mnist_data):
    """Batch 10^6 (2.56e8 records in) is computed from its epoch, not replayed: replaying
    would decode 28,000 epochs and time out. It equals the records of that epoch read
    directly at the in-epoch offset."""
    info = read_dataset_info(mnist_data)
    count = info.split_counts["train"]
    epoch, offset = divmod(10 ** 6 * 256, count)
    assert offset + 256 <= count  # this batch lies inside one epoch
    got = _batches(info, 10 ** 6, 1)[0]
    records = shuffled_epoch_records(info.split_files["train"], epoch, 3, 10000)
    spec = dataset_format.feature_spec()
    want = np.stack([
        tf.io.decode_png(tf.io.parse_single_example(r, spec)[dataset_format.IMAGE_KEY],
                         channels=3).numpy()
        for r in records.skip(offset).take(256)])
    assert np.array_equal(got, want)
