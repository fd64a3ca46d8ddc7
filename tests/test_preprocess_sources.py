"""beam_jobs.preprocess end to end on the real formats besides zips: LSUN-style LMDB of WebP,
ImageNet-64 npz, image folders of many formats and modes, MNIST IDX."""
from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import pytest
from PIL import Image
from test_preprocess import IN_MEMORY, read_split, rng_image

from artifacts import dataset_format
from beam_jobs.preprocess import run_preprocess, shard_plan
from beam_jobs.sources import array_sources, mnist_idx
from beam_jobs.sources.image_transform import ImageTransform

# -- LSUN-style LMDB of WebP -------------------------------------------------------------

def test_lsun_lmdb_webp_key_ranges(tmp_path, monkeypatch):
    import lmdb

    monkeypatch.setattr(shard_plan, "RECORDS_PER_PART", 7)  # shards of many fragments
    rng = np.random.default_rng(3)
    db = str(tmp_path / "church_outdoor_train_lmdb")
    sources = {}
    env = lmdb.open(db, map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(40):
            h, w = (90, 120) if i % 2 else (130, 100)
            buf = io.BytesIO()
            Image.fromarray(rng_image(rng, h, w)).save(buf, format="WEBP", quality=80)
            key = hashlib.sha1(b"%d" % i).hexdigest().encode()
            txn.put(key, buf.getvalue())
            sources[key.decode()] = buf.getvalue()
        txn.put(b"ffffffffcorrupt", b"RIFF\x00\x00\x00\x00WEBPVP8 garbage")
    env.close()
    info = run_preprocess("lsun_lmdb", db, str(tmp_path / "out"), 32, resize_shorter_side=48,
                          num_shards=2, pipeline_args=IN_MEMORY)
    assert info["source"]["kind"] == "lsun_lmdb" and info["label_names"] is None
    assert info["bad_records"] == [{"key": "ffffffffcorrupt",
                                    "reason": info["bad_records"][0]["reason"]}]
    got = read_split(tmp_path / "out", info, "train")
    assert set(got) == set(sources)
    t = ImageTransform(32, resize_shorter_side=48)
    for key, (img, label) in got.items():
        assert label == dataset_format.UNKNOWN_LABEL
        assert np.array_equal(img, np.asarray(Image.open(io.BytesIO(t.from_bytes(sources[key])))))


# -- downsampled-ImageNet npz ------------------------------------------------------------

def test_imagenet64_npz_folder_channel_first_and_one_based_labels(tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "imagenet64"
    folder.mkdir()
    batches = {}
    for name, n in [("train_data_batch_1.npz", 30), ("val_data.npz", 12)]:
        images = rng_image(rng, n * 64, 64).reshape(n, 64, 64, 3)
        labels = rng.integers(1, 1001, n)
        np.savez(folder / name, data=images.transpose(0, 3, 1, 2).reshape(n, -1),
                 labels=labels.tolist(), mean=np.zeros(12288))
        batches[name] = (images, labels)
    out = tmp_path / "out"
    info = run_preprocess("imagenet64_npz", str(folder), str(out), 64, pipeline_args=IN_MEMORY)
    got = read_split(out, info, "train")
    assert len(got) == 42 and info["num_bad_records"] == 0
    for name, (images, labels) in batches.items():
        for i in range(len(images)):
            img, label = got[f"{name}/{i:07d}"]
            assert np.array_equal(img, images[i]) and label == labels[i] - 1
    small = run_preprocess("imagenet64_npz", str(folder / "val_data.npz"), str(tmp_path / "s"),
                           32, pipeline_args=IN_MEMORY)
    assert small["image_shape"] == [32, 32, 3] and small["splits"]["train"]["count"] == 12
    with pytest.raises(ValueError, match="1-based"):
        np.savez(folder / "zero.npz", data=np.zeros((2, 12288), np.uint8), labels=[0, 1])
        run_preprocess("imagenet64_npz", str(folder), str(tmp_path / "z"), 64)


def test_npz_member_array_maps_stored_and_extracts_compressed(tmp_path):
    rng = np.random.default_rng(8)
    data = rng_image(rng, 7 * 48, 4).reshape(7, -1)
    np.savez(tmp_path / "stored.npz", labels=np.arange(7), data=data)
    np.savez_compressed(tmp_path / "deflated.npz", data=data, labels=np.arange(7))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    stored = array_sources.npz_member_array(str(tmp_path / "stored.npz"), "data.npy", str(scratch))
    assert isinstance(stored, np.memmap) and not os.listdir(scratch)  # mapped in place
    deflated = array_sources.npz_member_array(str(tmp_path / "deflated.npz"), "data.npy",
                                              str(scratch))
    assert len(os.listdir(scratch)) == 1  # extracted once, then memory-mapped
    for got in (stored, deflated):
        assert got.shape == data.shape
        assert np.array_equal(np.asarray(got[[5, 0, 3]]), data[[5, 0, 3]])


def test_imagenet64_compressed_npz_reads_like_stored(tmp_path):
    rng = np.random.default_rng(9)
    images = rng_image(rng, 9 * 16, 16).reshape(9, 16, 16, 3)
    flat = images.transpose(0, 3, 1, 2).reshape(9, -1)
    for name, save in (("a", np.savez), ("b", np.savez_compressed)):
        (tmp_path / name).mkdir()
        save(tmp_path / name / "val_data.npz", data=flat, labels=np.arange(1, 10))
    infos = [run_preprocess("imagenet64_npz", str(tmp_path / name), str(tmp_path / f"{name}_out"),
                            16, num_shards=2, pipeline_args=IN_MEMORY) for name in "ab"]
    assert ([s["sha256"] for s in infos[0]["splits"]["train"]["shards"]]
            == [s["sha256"] for s in infos[1]["splits"]["train"]["shards"]])
    got = read_split(tmp_path / "b_out", infos[1], "train")
    assert all(np.array_equal(got[f"val_data.npz/{i:07d}"][0], images[i]) for i in range(9))


# -- image folder with many formats and modes --------------------------------------------

def test_image_folder_formats_modes_and_bad_files(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "photos"
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
    base = rng_image(rng, 48, 40)
    Image.fromarray(base).save(root / "cats" / "a.jpg", quality=95)
    Image.fromarray(base).convert("L").save(root / "cats" / "grey.png")
    Image.fromarray(base).convert("P").save(root / "cats" / "palette.gif")
    Image.fromarray(base).convert("RGBA").save(root / "dogs" / "alpha.png")
    Image.fromarray(base).convert("CMYK").save(root / "dogs" / "cmyk.jpg")
    Image.fromarray(base).save(root / "dogs" / "x.tiff")
    Image.fromarray(base).save(root / "dogs" / "y.webp", lossless=True)
    (root / "dogs" / "zero.jpg").write_bytes(b"")
    (root / "dogs" / "text.png").write_text("not an image")
    (root / "notes.txt").write_text("skipped")
    info = run_preprocess("image_folder", str(root), str(tmp_path / "out"), 24,
                          pipeline_args=IN_MEMORY)
    assert info["label_names"] == ["cats", "dogs"] and info["num_bad_records"] == 2
    assert info["source"]["skipped_non_image_files"] == 1
    got = read_split(tmp_path / "out", info, "train")
    assert sorted(got) == ["cats/a.jpg", "cats/grey.png", "cats/palette.gif", "dogs/alpha.png",
                           "dogs/cmyk.jpg", "dogs/x.tiff", "dogs/y.webp"]
    assert all(img.shape == (24, 24, 3) for img, _ in got.values())
    assert got["cats/grey.png"][1] == 0 and got["dogs/x.tiff"][1] == 1
    # Lossless inputs of the same pixels give the same output.
    assert np.array_equal(got["dogs/x.tiff"][0], got["dogs/y.webp"][0])
    g = got["cats/grey.png"][0]
    assert np.array_equal(g[..., 0], g[..., 2])


# -- MNIST IDX ---------------------------------------------------------------------------

def test_mnist_grayscale_pixel_exact(tmp_path, mnist_dir):
    info = run_preprocess("mnist_idx", str(mnist_dir), str(tmp_path / "m"), 28, grayscale=True,
                          validation_fraction=0.1, num_shards=2)
    images, labels = mnist_idx.load_mnist(str(mnist_dir))
    assert info["image_shape"] == [28, 28, 1] and info["label_names"] == [str(d) for d in range(10)]
    total = 0
    for split in ("train", "validation"):
        for key, (img, label) in read_split(tmp_path / "m", info, split).items():
            i = int(key.split("/")[1])
            assert np.array_equal(img[..., 0], images[i]) and label == labels[i]
            total += 1
    assert total == 10000
