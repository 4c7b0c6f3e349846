"""Metric arithmetic: Fréchet distance, streaming statistics, Inception Score, frame consistency."""
import numpy as np
import pytest
import scipy.linalg
import torch

from medsora.metrics.clip_fc import frame_consistency
from medsora.metrics.frechet import FeatureStats, frechet_distance
from medsora.metrics.inception import inception_score


def _random_cov(rng, d, n=None):
    x = rng.normal(size=(n or 4 * d, d)) @ rng.normal(size=(d, d))
    return np.atleast_2d(np.cov(x, rowvar=False))


def _scipy_fd(mu1, s1, mu2, s2):
    """The formula as pytorch-fid / StyleGAN-V write it, with scipy's general sqrtm."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)))


@pytest.mark.parametrize("d", [1, 5, 64])
def test_frechet_matches_scipy(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), rel=1e-8, abs=1e-8)


def test_frechet_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9 + 1, abs=1e-12)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 5, 32), rng.uniform(0.1, 5, 32)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # a rotated pair that commutes: S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T gives the same distance
    q, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # same Gaussian: 0
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)


def test_frechet_stable_on_singular_covariances():
    """Fewer samples than dimensions (rank-deficient), and a covariance with eigenvalues ~1e-14."""
    rng = np.random.default_rng(1)
    d = 160
    x, y = rng.normal(size=(30, d)), rng.normal(size=(30, d)) + 0.5
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)  # rank 29 each
    fd = frechet_distance(x.mean(0), s1, y.mean(0), s2)
    assert isinstance(fd, float) and np.isfinite(fd) and fd > 0
    # pytorch-fid's fallback for singular products: sqrtm of (S1 + eps I)(S2 + eps I); close to ours
    eps = 1e-6 * np.eye(d)
    ref = _scipy_fd(x.mean(0), s1 + eps, y.mean(0), s2 + eps)
    assert fd == pytest.approx(ref, rel=1e-4)
    assert frechet_distance(x.mean(0), s1, x.mean(0), s1) == pytest.approx(0, abs=1e-6 * np.trace(s1))
    # near-singular: one direction carries almost no variance
    w = np.r_[np.ones(d - 1), 1e-14]
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s3 = q @ np.diag(w) @ q.T
    fd3 = frechet_distance(np.zeros(d), s3, np.zeros(d), s3)
    assert np.isfinite(fd3) and abs(fd3) < 1e-6


def test_feature_stats_streaming_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(203, 7)) * 3 + 1e6  # large mean: the naive E[xx^T] - mm^T loses all digits
    stats = FeatureStats()
    for lo, hi in [(0, 1), (1, 50), (50, 51), (51, 203)]:  # uneven batches, a batch of one
        stats.update(torch.as_tensor(x[lo:hi], dtype=torch.float64))
    assert stats.n == 203
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False, bias=True), rtol=1e-8, atol=1e-8)


def test_feature_stats_save_load(tmp_path):
    rng = np.random.default_rng(3)
    stats = FeatureStats().update(rng.normal(size=(10, 4)))
    back = FeatureStats.load(stats.save(tmp_path / "s.npz"))
    assert back.n == 10
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.cov, stats.cov)


def _is_naive(probs, splits):
    """IS by its definition with explicit loops: exp(mean_x sum_y p(y|x) log(p(y|x) / p(y)))."""
    n = len(probs)
    out = []
    for s in range(splits):
        part = probs[s * n // splits:(s + 1) * n // splits]
        py = [sum(p[y] for p in part) / len(part) for y in range(probs.shape[1])]
        kl = [sum(p[y] * np.log(p[y] / py[y]) for y in range(len(py)) if p[y] > 0) for p in part]
        out.append(np.exp(sum(kl) / len(kl)))
    return float(np.mean(out)), float(np.std(out))


def test_inception_score_formula():
    torch.manual_seed(0)
    logits = torch.randn(40, 6) * 3
    probs = logits.softmax(-1).double().numpy()
    mean, std = inception_score(probs, splits=4)
    ref_mean, ref_std = _is_naive(probs, 4)
    assert mean == pytest.approx(ref_mean, rel=1e-10) and std == pytest.approx(ref_std, rel=1e-8)
    # the same quantity through entropies: IS = exp(H(p(y)) - E_x H(p(y|x))) for one split
    h = lambda p: -(p * np.log(p)).sum(-1)  # noqa: E731
    assert inception_score(probs, 1)[0] == pytest.approx(np.exp(h(probs.mean(0)) - h(probs).mean()), rel=1e-10)
    # closed forms: identical predictions → 1; confident and spread evenly over k classes → k
    assert inception_score(np.tile(probs[:1], (10, 1)), 1)[0] == pytest.approx(1.0)
    assert inception_score(np.eye(5)[np.arange(20) % 5], 2)[0] == pytest.approx(5.0)


def test_frame_consistency_formula():
    torch.manual_seed(0)
    emb = torch.randn(3, 16, 8)
    naive = torch.tensor([
        100 * np.mean([torch.nn.functional.cosine_similarity(v[i], v[i + 1], dim=0).item() for i in range(15)])
        for v in emb
    ])
    torch.testing.assert_close(frame_consistency(emb), naive.float(), rtol=1e-5, atol=1e-4)
    const = emb[:, :1].expand(-1, 16, -1)
    torch.testing.assert_close(frame_consistency(const), torch.full((3,), 100.0))


def test_feature_stats_merge_equals_one_stream():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, (50, 6))
    whole = FeatureStats().update(x[:20]).update(x[20:])
    parts = [FeatureStats().update(x[k::3]) for k in range(3)] + [FeatureStats()]   # an idle process adds nothing
    merged = FeatureStats()
    for p in parts:
        merged.merge(p)
    assert merged.n == 50
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(merged.cov, np.cov(x.T, bias=True), rtol=1e-10, atol=1e-12)
