"""Both Beam jobs on Beam's Dask runner (:mod:`beam_jobs.runtime.dask_runner`) against a real
``dask.distributed`` cluster of 2 worker processes on 127.0.0.1, compared with the local
runner on real CIFAR-10 test JPEGs: byte-identical shards, the same dataset.json, the same
FID/KID/IS/precision/recall."""
from __future__ import annotations

import json
import os
import pathlib
import zipfile

import numpy as np
import pytest

from beam_jobs import fid, preprocess
from beam_jobs.fid import extractors

pytestmark = pytest.mark.slow

NUM_IMAGES = 240
LOCAL_ARGS = ["--runner=FnApiRunner"]


@pytest.fixture(scope="module")
def dask_address():
    """The scheduler address of a LocalCluster of 2 single-thread worker processes."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def _dask_args(address: str) -> list[str]:
    return ["--runner=DaskRunner", f"--dask_client_address={address}"]


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory, cifar_zip) -> str:
    """The first NUM_IMAGES JPEGs of the CIFAR-10 test zip plus two undecodable members
    (bad records: the job's tagged ``bad`` output)."""
    path = tmp_path_factory.mktemp("raw") / "cifar_subset.zip"
    with zipfile.ZipFile(cifar_zip) as zin, zipfile.ZipFile(path, "w") as zout:
        names = [n for n in zin.namelist() if n.endswith(".jpg")][:NUM_IMAGES]
        for name in names:
            zout.writestr(name, zin.read(name))
        zout.writestr("test/cat/broken-1.jpg", b"not a jpeg")
        zout.writestr("test/dog/broken-2.jpg", zin.read(names[0])[:40])
    return str(path)


def _preprocess(raw: str, out: pathlib.Path, args: list[str]) -> dict:
    return preprocess.run_preprocess("image_zip", raw, str(out), 32, num_shards=3,
                                     validation_fraction=0.3, pipeline_args=args)


def _files(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _without_created(data: bytes) -> dict:
    info = json.loads(data)
    info.pop("created")  # the commit time: differs between any two runs
    info.pop("code_version")  # the git commit: another may land between the two runs
    return info


def _assert_same_data_set(a: pathlib.Path, b: pathlib.Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name == "dataset.json":
            assert _without_created(fa[name]) == _without_created(fb[name])
        else:
            assert fa[name] == fb[name], name


@pytest.fixture(scope="module")
def local_data(tmp_path_factory, cifar_subset) -> pathlib.Path:
    out = tmp_path_factory.mktemp("datasets") / "local"
    _preprocess(cifar_subset, out, LOCAL_ARGS)
    return out


def test_preprocess_on_dask_writes_the_local_runners_bytes(tmp_path, cifar_subset, local_data,
                                                           dask_address):
    on_dask = tmp_path / "dask"
    _preprocess(cifar_subset, on_dask, _dask_args(dask_address))
    _assert_same_data_set(local_data, on_dask)
    info = json.loads((on_dask / "dataset.json").read_text())
    assert info["num_bad_records"] == 2
    assert sum(s["count"] for s in info["splits"].values()) == NUM_IMAGES
    assert len([n for n in os.listdir(on_dask) if n.endswith(".tfrecord")]) == 6


def test_preprocess_on_its_own_local_dask_cluster(tmp_path, cifar_subset, local_data):
    """No scheduler address: the runner starts (and stops) 2 worker processes itself."""
    _preprocess(cifar_subset, tmp_path / "own", ["--runner=DaskRunner",
                                                 "--dask_num_workers=2"])
    _assert_same_data_set(local_data, tmp_path / "own")


@pytest.fixture(scope="module")
def extractor_dir(tmp_path_factory) -> str:
    """An untrained MNIST-architecture extractor (grey 28x28 input; accuracy irrelevant)."""
    _, features_model = extractors.build_mnist_classifier(feature_dim=32, seed=1)
    return extractors.export_mnist_classifier(
        features_model, str(tmp_path_factory.mktemp("ext") / "mnist_classifier"))


def _fid_run(data_dir: pathlib.Path, extractor_dir: str, ref: pathlib.Path,
             args: list[str]) -> dict:
    """Reference statistics of the validation split, then FID & co. of the train split."""
    fid.evaluate(fid.TFRecordSource(str(data_dir), "validation"), "mnist_classifier",
                 extractor_dir, output_stats=str(ref), save_kid_features=True,
                 save_pr_features=True, kid_samples=500, pipeline_args=args)
    return fid.evaluate(fid.TFRecordSource(str(data_dir), "train"), "mnist_classifier",
                        extractor_dir, reference_stats_path=str(ref), kid_samples=500,
                        kid_subset_size=40, kid_num_subsets=10, pipeline_args=args)


def test_fid_on_dask_matches_the_local_runner(tmp_path, local_data, extractor_dir,
                                              dask_address):
    data_dir = local_data
    local = _fid_run(data_dir, extractor_dir, tmp_path / "ref_local.npz", LOCAL_ARGS)
    on_dask = _fid_run(data_dir, extractor_dir, tmp_path / "ref_dask.npz",
                       _dask_args(dask_address) + [f"--temp_location={tmp_path}"])
    assert local["fid"] > 0 and local["precision"] is not None
    # This FID is ~8e-4 (two splits of one small set in an MNIST classifier's features),
    # so float64 rounding of the statistics (summation order differs between runners,
    # ~3e-11 absolute here) is 4e-8 of it: 1e-9 relative, or 1e-9 absolute near zero;
    # the statistics themselves are compared below.
    assert on_dask["fid"] == pytest.approx(local["fid"], rel=1e-9, abs=1e-9)
    for key in ("kid_mean", "kid_std", "is_mean", "is_std", "confident_rate",
                "label_coverage", "precision", "recall"):
        assert on_dask[key] == pytest.approx(local[key], rel=1e-9, abs=1e-12), key
    for key in ("num_samples", "reference_num_samples", "image_shape",
                "extractor_fingerprint"):
        assert on_dask[key] == local[key], key
    with np.load(tmp_path / "ref_local.npz") as a, np.load(tmp_path / "ref_dask.npz") as b:
        np.testing.assert_allclose(b["mu"], a["mu"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b["sigma"], a["sigma"], rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(b["kid_features"], a["kid_features"])
        np.testing.assert_array_equal(b["pr_features"], a["pr_features"])


def test_runner_keeps_tagged_outputs_apart_counts_metrics_and_injects_defaults(
        tmp_path, dask_address):
    """What Beam's own DaskRunner gets wrong: every branch runs, a tagged output holds only
    its own elements, counters reach ``metrics()``, an empty CombineGlobally yields its
    default through a side input."""
    import apache_beam as beam

    from beam_jobs.runtime.beam_options import pipeline_options

    class Split(beam.DoFn):
        def process(self, x):
            if x % 2:
                beam.metrics.Metrics.counter("test", "odd").inc()
                yield beam.pvalue.TaggedOutput("odd", x)
            else:
                yield x

    def write(value, name):
        (tmp_path / name).write_text(json.dumps(value))

    p = beam.Pipeline(options=pipeline_options(_dask_args(dask_address)))
    out = p | beam.Create(range(50)) | beam.ParDo(Split()).with_outputs("odd", main="even")
    _ = out.even | "ListEven" >> beam.combiners.ToList() | "WE" >> beam.Map(
        lambda xs: write(sorted(xs), "even.json"))
    _ = out.odd | "ListOdd" >> beam.combiners.ToList() | "WO" >> beam.Map(
        lambda xs: write(sorted(xs), "odd.json"))
    _ = (out.even | beam.Filter(lambda x: x > 100) | beam.CombineGlobally(sum)
         | "WS" >> beam.Map(write, "empty_sum.json"))
    result = p.run()
    assert result.wait_until_finish() == "DONE"
    assert json.loads((tmp_path / "even.json").read_text()) == list(range(0, 50, 2))
    assert json.loads((tmp_path / "odd.json").read_text()) == list(range(1, 50, 2))
    assert json.loads((tmp_path / "empty_sum.json").read_text()) == 0
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("odd"))
    assert [c.committed for c in counters["counters"]] == [25]
