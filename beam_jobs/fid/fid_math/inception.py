"""IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) per split, from per-split
sums (count, sum_x p(y|x) [K], sum_x sum_y p log p), plus the classifier's confident rate
and label coverage."""
from __future__ import annotations

import math

import numpy as np
import scipy.special

CONFIDENT_THRESHOLD = 0.9


class InceptionScoreStatistics:
    """Per-split ``count`` [S], ``sum_p`` [S, K] of p(y|x) and ``sum_plogp`` [S] (float64),
    and the classifier's verdicts: ``confident`` [S], how many images have
    max_y p(y|x) >= CONFIDENT_THRESHOLD, and ``label_hist`` [S, K], how many have each
    predicted label argmax_y p(y|x)."""

    def __init__(self, num_splits: int = 10):
        self.num_splits = num_splits
        self.count = np.zeros(num_splits, np.int64)
        self.sum_p: np.ndarray | None = None
        self.sum_plogp = np.zeros(num_splits, np.float64)
        self.confident = np.zeros(num_splits, np.int64)
        self.label_hist: np.ndarray | None = None

    def add(self, split: int, logits: np.ndarray) -> "InceptionScoreStatistics":
        """Adds logits [K] or [B, K] (unnormalized log-probabilities) to split ``split``."""
        z = np.asarray(logits, np.float64)
        if z.ndim == 1:
            z = z[None]
        logp = scipy.special.log_softmax(z, axis=-1)
        p = np.exp(logp)
        if self.sum_p is None:
            self.sum_p = np.zeros((self.num_splits, z.shape[1]), np.float64)
        elif self.sum_p.shape[1] != z.shape[1]:
            raise ValueError(f"logits have {z.shape[1]} classes, expected {self.sum_p.shape[1]}")
        if self.label_hist is None:
            self.label_hist = np.zeros((self.num_splits, z.shape[1]), np.int64)
        s = int(split) % self.num_splits
        self.count[s] += z.shape[0]
        self.sum_p[s] += p.sum(axis=0)
        self.sum_plogp[s] += float(scipy.special.xlogy(p, p).sum())
        self.confident[s] += int((p.max(axis=1) >= CONFIDENT_THRESHOLD).sum())
        self.label_hist[s] += np.bincount(p.argmax(axis=1), minlength=z.shape[1])
        return self

    def merge(self, other: "InceptionScoreStatistics") -> "InceptionScoreStatistics":
        if other.sum_p is None:
            return self
        if self.sum_p is None:
            self.sum_p = np.zeros_like(other.sum_p)
        if self.label_hist is None:
            self.label_hist = np.zeros_like(other.label_hist)
        self.count += other.count
        self.sum_p += other.sum_p
        self.sum_plogp += other.sum_plogp
        self.confident += other.confident
        self.label_hist += other.label_hist
        return self

    def confident_rate(self) -> float:
        """Fraction of images whose top class probability is >= CONFIDENT_THRESHOLD."""
        total = int(self.count.sum())
        if total == 0:
            raise ValueError("no logits were added; no confident-sample rate")
        return float(self.confident.sum()) / total

    def label_coverage(self) -> float:
        """Entropy of the predicted-label histogram / ln K, in [0, 1]: 1 when every class
        is predicted equally often, 0 when all images get one label."""
        if self.label_hist is None or self.label_hist.sum() == 0:
            raise ValueError("no logits were added; no label coverage")
        q = self.label_hist.sum(axis=0).astype(np.float64)
        q /= q.sum()
        return max(0.0, float(-scipy.special.xlogy(q, q).sum() / math.log(q.size)))

    def score(self) -> tuple[float, float]:
        """(mean, std) over the non-empty splits of exp(E_x KL(p(y|x) || p(y)))."""
        used = self.count > 0
        if not used.any():
            raise ValueError("no logits were added; cannot compute the inception score")
        n = self.count[used].astype(np.float64)
        p_y = self.sum_p[used] / n[:, None]
        kl = self.sum_plogp[used] / n - scipy.special.xlogy(p_y, p_y).sum(axis=1)
        scores = np.exp(kl)
        return float(scores.mean()), float(scores.std())


def inception_score(logits: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """IS (mean, std) of logits [N, K] over ``num_splits`` contiguous splits (in process)."""
    logits = np.asarray(logits)
    stats = InceptionScoreStatistics(num_splits)
    for s, chunk in enumerate(np.array_split(logits, num_splits)):
        if len(chunk):
            stats.add(s, chunk)
    return stats.score()
