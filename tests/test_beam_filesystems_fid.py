"""beam_jobs.fid on ``testfs://`` (the object-store-like Beam filesystem of
test_beam_filesystems.py): data, reference statistics and image folders read from it,
statistics written to it, its temporary files deleted.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from test_beam_filesystems import objects, testfs  # noqa: F401 (a fixture)
from test_beam_filesystems_preprocess import _idx

from beam_jobs.preprocess import run_preprocess
from beam_jobs.runtime import beam_fs

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
