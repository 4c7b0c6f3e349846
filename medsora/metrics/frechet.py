"""Fréchet distance between Gaussians, and streaming feature statistics (float64).

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

The trace term is computed as tr((A S2 A)^(1/2)) with A = S1^(1/2) (TF-GAN's `trace_sqrt_product`):
A S2 A is symmetric positive semi-definite and has the same eigenvalues as S1 S2, so `eigh` gives
real eigenvalues, clipped at 0 before the square root. Unlike `scipy.linalg.sqrtm(S1 @ S2)` this
never returns a complex result or NaN, even when both covariances are singular (fewer samples
than feature dimensions, the usual case for FVD on small medical datasets).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative eigenvalues clipped)."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, via the symmetric form A S2 A, A = S1^(1/2)."""
    a = _sqrt_psd(sigma1)
    m = a @ sigma2 @ a
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(fd, 0.0))  # tiny negative values are round-off of a zero distance


class FeatureStats:
    """Running mean and covariance of feature vectors, merged batch by batch (Chan et al.).

    Keeps the mean and the centred scatter matrix M2 = sum (x - mean)(x - mean)^T in float64,
    which avoids the cancellation of `E[x x^T] - mean mean^T` when features have a large mean.
    `cov` divides by n (the biased estimate, as StyleGAN-V's FeatureStats).
    """

    def __init__(self, dim: int | None = None):
        self.n = 0
        self.mean = None if dim is None else np.zeros(dim)
        self.m2 = None if dim is None else np.zeros((dim, dim))

    def update(self, x) -> "FeatureStats":
        """Add a batch of features (b, d)."""
        x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (batch, dim), got shape {x.shape}")
        if len(x) == 0:
            return self
        if self.mean is None:
            self.mean, self.m2 = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        nb, mb = len(x), x.mean(0)
        xc = x - mb
        delta = mb - self.mean
        n = self.n + nb
        self.m2 += xc.T @ xc + np.outer(delta, delta) * (self.n * nb / n)
        self.mean += delta * (nb / n)
        self.n = n
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add the features another FeatureStats has seen (Chan's parallel formula), e.g. another process's."""
        if not other.n:
            return self
        if not self.n:
            self.n, self.mean, self.m2 = other.n, other.mean.copy(), other.m2.copy()
            return self
        n, delta = self.n + other.n, other.mean - self.mean
        self.m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        self.mean = self.mean + delta * (other.n / n)
        self.n = n
        return self

    @property
    def cov(self) -> np.ndarray:
        if not self.n:
            raise ValueError("no features were added")
        return self.m2 / self.n

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, n=self.n, mean=self.mean, m2=self.m2)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        with np.load(path) as f:
            s = cls()
            s.n, s.mean, s.m2 = int(f["n"]), f["mean"].astype(np.float64), f["m2"].astype(np.float64)
        return s


def stats_distance(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)
