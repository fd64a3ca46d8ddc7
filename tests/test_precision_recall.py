"""Precision and recall of samples (Kynkaanniemi et al. 2019): the chunked numpy function
against a brute-force computation, known cases, bad inputs, the deterministic subset
combiner, the .npz round trip and the Beam FID job."""
from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to
from test_fid_beam import _direct_features, _generate, extractor_dir, generator_dir  # noqa: F401

from beam_jobs import fid
from beam_jobs.fid import fid_math
from beam_jobs.fid.fid_math import FeatureStatistics, precision_recall
from tfp_models.row_seeds import sample_row_seeds

CHUNKS = (1, 2, 3, 7, 64, 10_000)


def brute_force(real: np.ndarray, gen: np.ndarray, k: int) -> tuple[float, float]:
    """The definition, with the full distance matrices and a full sort (squared distances
    from the differences, not the dot-product expansion)."""
    real, gen = np.asarray(real, np.float64), np.asarray(gen, np.float64)

    def d2(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    def radii(x):
        d = d2(x, x)
        np.fill_diagonal(d, np.inf)  # a point is not its own neighbour (duplicates are)
        return np.sort(d, axis=1)[:, k - 1]

    cross = d2(gen, real)  # [M, N]
    precision = (cross <= radii(real)[None, :]).any(axis=1).mean()
    recall = (cross.T <= radii(gen)[None, :]).any(axis=1).mean()
    return float(precision), float(recall)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_equals_brute_force_on_random_data(k, seed):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(57, 6)).astype(np.float32)
    gen = rng.normal(0.5, 0.8, size=(43, 6)).astype(np.float32)
    expected = brute_force(real, gen, k)
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0  # not a trivial case
    for chunk in CHUNKS:
        pr = precision_recall(real, gen, k=k, chunk_size=chunk)
        assert (pr.precision, pr.recall) == expected, chunk
        assert (pr.k, pr.num_real, pr.num_generated) == (k, 57, 43)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_ties_and_duplicates_are_exact(k):
    """Integer features: every distance is exact in float64, so points exactly on a ball's
    boundary (<=: inside) and duplicates (a neighbour at distance 0, but not the point
    itself) are decided exactly like the brute force, for every chunk size."""
    rng = np.random.default_rng(k)
    real = rng.integers(-2, 3, size=(40, 3)).astype(np.float32)  # many duplicates
    gen = np.concatenate([real[:10], rng.integers(-3, 4, size=(25, 3))]).astype(np.float32)
    expected = brute_force(real, gen, k)
    for chunk in CHUNKS:
        pr = precision_recall(real, gen, k=k, chunk_size=chunk)
        assert (pr.precision, pr.recall) == expected, chunk


def test_boundary_and_self_exclusion_by_hand():
    # Real points on a line 0, 1, 3: with k=1 the radii are 1, 1, 2.
    real = np.array([[0.0], [1.0], [3.0]])
    np.testing.assert_array_equal(fid_math.knn_radii(real, k=1), [1.0, 1.0, 2.0])
    # 5 is on the boundary of the ball around 3 (inside), 5.5 and -1.5 are outside.
    gen = np.array([[5.0], [5.5], [-1.5], [0.5]])
    pr = precision_recall(real, gen, k=1, chunk_size=2)
    assert pr.precision == 0.5
    # A duplicated point is its own neighbour's neighbour at distance 0 (radius 0), so
    # with k=1 a real point equal to it is covered, a point 1e-3 away is not.
    gen = np.array([[0.0], [0.0], [50.0], [51.0]])  # radii 0, 0, 1, 1
    real = np.array([[0.0], [1e-3], [30.0], [40.0]])
    pr = precision_recall(real, gen, k=1)
    assert pr.recall == 0.25  # only real 0.0: inside the radius-0 ball of gen 0.0


def test_radii_match_brute_force_for_every_chunk_size():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(31, 4))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    for k in (1, 3, 30):
        expected = np.sort(d, axis=1)[:, k - 1]
        for chunk in CHUNKS:
            np.testing.assert_allclose(fid_math.knn_radii(x, k=k, chunk_size=chunk), expected,
                                       rtol=1e-12)


def test_identical_sets_and_far_apart_clusters():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 8))
    same = precision_recall(x, x.copy(), k=3, chunk_size=16)
    assert (same.precision, same.recall) == (1.0, 1.0)
    far = precision_recall(x, x + 1000.0, k=3, chunk_size=16)
    assert (far.precision, far.recall) == (0.0, 0.0)
    # Half the samples in the real cluster, half far away: precision 1/2, recall 1.
    gen = np.concatenate([x[:25] + 1e-3, x[25:] + 1000.0])
    half = precision_recall(x, gen, k=3)
    assert half.precision == 0.5 and half.recall < 1.0
    # Mode collapse: every sample is one real point; precision 1, recall small.
    collapsed = precision_recall(x, np.repeat(x[:1], 20, axis=0), k=3)
    assert collapsed.precision == 1.0 and collapsed.recall == 1 / 50


def test_largest_k_and_the_smallest_sets():
    """k = n - 1 (each point's farthest other point) on both sides, the largest k the
    sets allow; one fewer point is refused."""
    rng = np.random.default_rng(3)
    real, gen = rng.normal(size=(6, 3)), rng.normal(size=(9, 3))
    for chunk in (1, 4, 100):
        assert (precision_recall(real, gen, k=5, chunk_size=chunk).precision,
                precision_recall(real, gen, k=5, chunk_size=chunk).recall) == brute_force(
                    real, gen, 5)
    with pytest.raises(ValueError, match=r"k=6 needs at least k \+ 1 = 7 real feature"):
        precision_recall(real, gen, k=6)
    with pytest.raises(ValueError, match=r"needs at least k \+ 1 = 7 feature vectors"):
        fid_math.knn_radii(real, k=6)


@pytest.mark.parametrize("real, gen, kwargs, message", [
    (np.zeros((10, 3)), np.zeros((3, 3)), {}, "needs at least k + 1 = 4 generated"),
    (np.zeros((10, 3)), np.zeros((10, 4)), {}, "dimension 3, generated ones 4"),
    (np.zeros(10), np.zeros((10, 3)), {}, "must be a matrix [n, d]"),
    (np.zeros((10, 3)), np.full((10, 3), np.nan), {}, "NaN or Inf"),
    (np.zeros((10, 3)), np.array([["a"] * 3] * 10), {}, "real numbers"),
    (np.zeros((10, 3)), np.zeros((10, 3)), {"k": 0}, "k=0: expected an integer >= 1"),
    (np.zeros((10, 3)), np.zeros((10, 3)), {"k": 2.0}, "k=2.0"),
    (np.zeros((10, 3)), np.zeros((10, 3)), {"chunk_size": 0}, "chunk_size=0"),
])
def test_bad_inputs_are_one_line_value_errors(real, gen, kwargs, message):
    with pytest.raises(ValueError) as e:
        precision_recall(real, gen, **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_smallest_keys_combiner_is_deterministic():
    """The subset is the n smallest subset_key ranks whatever the bundling; values (numpy
    arrays) are never compared, even for equal keys."""
    keys = [f"img-{i}" for i in range(300)] + list(range(200))
    expected_keys = sorted(keys, key=fid_math.subset_key)[:50]
    fn = fid_math.SmallestKeysCombineFn(50)
    accs = []
    for part in (keys[:7], keys[7:260], keys[260:]):
        acc = fn.create_accumulator()
        for key in part:
            acc = fn.add_input(acc, (fid_math.subset_key(key), np.full(2, hash(str(key)) % 97)))
        accs.append(fn.compact(acc))
    out = fn.extract_output(fn.merge_accumulators(accs[::-1]))
    assert len(out) == 50
    np.testing.assert_array_equal(out, [np.full(2, hash(str(k)) % 97) for k in expected_keys])
    dup = fn.extract_output(fn.add_input(fn.add_input(fn.create_accumulator(), (
        (1, "a"), np.zeros(3))), ((1, "a"), np.ones(3))))
    assert len(dup) == 2
    assert fid_math.subset_key(7) == fid_math.subset_key("7")  # a key's text decides
    with beam.Pipeline(options=fid.pipeline_options(None)) as p:
        picked = (p | beam.Create(keys) | beam.Map(lambda k: (fid_math.subset_key(k), str(k)))
                  | beam.CombineGlobally(fid_math.SmallestKeysCombineFn(50)))
        assert_that(picked, equal_to([[str(k) for k in expected_keys]]))


def test_statistics_npz_round_trip_of_pr_features(tmp_path):
    rng = np.random.default_rng(4)
    ident = dict(extractor="mnist_classifier", resize_protocol="p", image_shape="28x28x1",
                 extractor_fingerprint="savedmodel-sha256:" + "1" * 64)
    stats = FeatureStatistics.from_features(rng.normal(size=(30, 5)), **ident)
    stats.pr_features = rng.normal(size=(12, 5))
    stats.save(str(tmp_path / "a.npz"))
    loaded = FeatureStatistics.load(str(tmp_path / "a.npz"))
    assert loaded.pr_features.dtype == np.float32 and loaded.kid_features is None
    np.testing.assert_array_equal(loaded.pr_features, stats.pr_features.astype(np.float32))
    assert FeatureStatistics.load(str(tmp_path / "a.npz")).count == 30
    stats.pr_features = None
    stats.save(str(tmp_path / "b.npz"))
    assert FeatureStatistics.load(str(tmp_path / "b.npz")).pr_features is None
    # Features of another dimension than mu: refused in one line.
    np.savez(tmp_path / "c.npz", mu=stats.mu, sigma=stats.sigma, pr_features=np.zeros((4, 3)))
    with pytest.raises(fid_math.StatisticsError, match=r"pr_features \(4, 3\)"):
        FeatureStatistics.load(str(tmp_path / "c.npz"))


def test_report_states_subsets_and_why_numbers_are_missing():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=(30, 4)).astype(np.float32)
    out = fid.precision_recall_report(a, 20, b, 100, k=3, max_samples=25)
    pr = precision_recall(b[:25], a, k=3)
    assert (out["precision"], out["recall"]) == (pr.precision, pr.recall)
    assert (out["pr_k"], out["pr_num_samples"], out["pr_num_reference"]) == (3, 20, 25)
    assert "all 20 evaluated images and 25 of 100 reference images" in out["pr_note"]
    assert "deterministic subsets" in out["pr_note"]
    missing = fid.precision_recall_report(a, 20, None, None, unavailable="no reference")
    assert missing["precision"] is None and missing["pr_note"].endswith("no reference")
    small = fid.precision_recall_report(a[:3], 3, b, 30)
    assert small["recall"] is None and "at least 4" in small["pr_note"]
    off = fid.precision_recall_report(a, 20, b, 30, max_samples=0)
    assert off["precision"] is None and "turned off" in off["pr_note"]


def test_beam_job_precision_recall_equals_numpy_on_the_same_features(
        tmp_path, generator_dir, extractor_dir):  # noqa: F811
    """Reference: 40 samples at temperature 1 written with --save_pr_features; evaluated:
    37 samples at temperature 0.7, both sides capped at 25 (deterministic subsets). The
    job's numbers equal the numpy function on the features computed directly from the
    same images and the same subsets."""
    ref_path = str(tmp_path / "ref.npz")
    ref = fid.evaluate(fid.SampleSource(generator_dir, 40, 1.0, 1, 16), "mnist_classifier",
                       extractor_dir, kid_samples=0, output_stats=ref_path,
                       save_pr_features=True)
    assert ref["precision"] is None and "no reference features" in ref["pr_note"]
    stored = FeatureStatistics.load(ref_path).pr_features
    assert stored.shape == (40, 32)
    out = fid.evaluate(fid.SampleSource(generator_dir, 37, 0.7, 0, 16), "mnist_classifier",
                       extractor_dir, kid_samples=0, reference_stats_path=ref_path,
                       pr_max_samples=25)
    # The same features directly: the 25 sample indices of smallest rank, in rank order.
    chosen = sorted(range(37), key=fid_math.subset_key)[:25]
    fn = tf.saved_model.load(generator_dir).signatures["sample"]
    images = fn(seed=sample_row_seeds(0, 0, 37),  # the job's row seeds for seed 0
                temperature=np.full(37, 0.7, np.float32))["images"].numpy()
    gen, _ = _direct_features(extractor_dir, images[chosen])
    real, _ = _direct_features(extractor_dir, _generate(generator_dir, sample_row_seeds(1, 0, 40)))
    ref_order = sorted(range(40), key=fid_math.subset_key)
    np.testing.assert_allclose(stored, real[ref_order], rtol=1e-5, atol=1e-6)
    expected = precision_recall(real[ref_order][:25], gen, k=3)
    assert (out["precision"], out["recall"]) == (expected.precision, expected.recall)
    assert 0.0 < out["precision"] < 1.0 and 0.0 < out["recall"] < 1.0  # not trivial
    assert (out["pr_k"], out["pr_num_samples"], out["pr_num_reference"]) == (3, 25, 25)
    assert "25 of 37 evaluated images and 25 of 40 reference images" in out["pr_note"]
    assert out["num_samples"] == 37


def test_compare_stats_cli_reports_precision_recall(tmp_path, capsys):
    """--compare_stats: precision/recall of A's features against B's when both files hold
    them, null with a note otherwise."""
    rng = np.random.default_rng(7)
    ident = dict(extractor="mnist_classifier", resize_protocol="p", image_shape="28x28x1",
                 extractor_fingerprint="savedmodel-sha256:" + "1" * 64)
    fa, fb = rng.normal(size=(60, 4)), rng.normal(0.5, 1.0, size=(50, 4))
    a = FeatureStatistics.from_features(fa, pr_features=fa, **ident)
    b = FeatureStatistics.from_features(fb, pr_features=fb, **ident)
    a.save(str(tmp_path / "a.npz"))
    b.save(str(tmp_path / "b.npz"))
    b.pr_features = None
    b.save(str(tmp_path / "c.npz"))
    capsys.readouterr()
    assert fid.main([f"--compare_stats={tmp_path / 'a.npz'},{tmp_path / 'b.npz'}",
                     "--pr_k=2", "--pr_max_samples=40"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = precision_recall(fb[:40].astype(np.float32), fa[:40].astype(np.float32), k=2)
    assert (out["precision"], out["recall"]) == (expected.precision, expected.recall)
    assert out["fid"] > 0 and (out["pr_num_samples"], out["pr_num_reference"]) == (40, 40)
    assert "40 of 60 evaluated images and 40 of 50 reference images" in out["pr_note"]
    assert fid.main([f"--compare_stats={tmp_path / 'a.npz'},{tmp_path / 'c.npz'}"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["precision"] is None and "c.npz' hold no precision/recall" in out["pr_note"]
