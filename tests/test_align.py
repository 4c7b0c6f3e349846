"""The relative-distribution-similarity alignment loss (medsora.flow.align)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr

from medsora.flow.align import alignment_loss, relative_distribution_similarity


def _ln(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:])


def _naive_r(y: torch.Tensor, h: torch.Tensor, keep=None, variant="channel") -> np.ndarray:
    """1 - numpy's Pearson correlation, by loops: per sample and channel over the kept tokens, or per token."""
    y, h = _ln(y.double()).numpy(), h.double().numpy()
    b, f, l, d = y.shape
    out = []
    for i in range(b):
        frames = [j for j in range(f) if keep is None or keep[i][j]]
        ys, hs = y[i, frames].reshape(-1, d), h[i, frames].reshape(-1, d)
        if variant == "channel":
            out.append([1 - np.corrcoef(ys[:, c], hs[:, c])[0, 1] for c in range(d)])
        else:
            out.append(np.mean([1 - np.corrcoef(ys[k], hs[k])[0, 1] for k in range(len(ys))]))
    return np.array(out)


def test_channel_variant_matches_numpy_per_sample_per_channel():
    torch.manual_seed(0)
    y, h = torch.randn(3, 2, 5, 6), torch.randn(3, 2, 5, 6)
    h[1] = 0.5 * _ln(y[1]) + 0.3 * torch.randn(2, 5, 6)          # one correlated sample
    r = relative_distribution_similarity(y, h)
    assert r.shape == (3, 6)
    assert np.allclose(r.double().numpy(), _naive_r(y, h), atol=1e-5)
    keep = torch.tensor([[True, False], [True, True], [False, True]])
    assert np.allclose(relative_distribution_similarity(y, h, keep).numpy(), _naive_r(y, h, keep.tolist()), atol=1e-5)


def test_token_variant_matches_numpy_per_token():
    torch.manual_seed(1)
    y, h = torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8)
    r = relative_distribution_similarity(y, h, variant="token")
    assert r.shape == (2,)
    assert np.allclose(r.numpy(), _naive_r(y, h, variant="token"), atol=1e-5)
    with pytest.raises(ValueError, match="variant"):
        relative_distribution_similarity(y, h, variant="pixel")


def _pooled_r(y: torch.Tensor, h: torch.Tensor, keep=None) -> np.ndarray:
    """1 - SciPy's Pearson r per channel over every kept token of every sample (K = b·f·l), by loops."""
    y, h = _ln(y.double()).numpy(), h.double().numpy()
    b, f, l, d = y.shape
    rows = [(i, j) for i in range(b) for j in range(f) if keep is None or keep[i][j]]
    ys = np.concatenate([y[i, j] for i, j in rows])                       # (kept frames · l, d)
    hs = np.concatenate([h[i, j] for i, j in rows])
    return np.array([1 - pearsonr(ys[:, c], hs[:, c])[0] for c in range(d)])


def test_batch_variant_pools_the_batch_as_eq14():
    torch.manual_seed(2)
    y, h = torch.randn(3, 2, 5, 6), torch.randn(3, 2, 5, 6)
    h[0] = 0.8 * _ln(y[0]) + 0.2 * torch.randn(2, 5, 6)          # samples differ in how well they align
    h[2] = -0.5 * _ln(y[2]) + 0.3 * torch.randn(2, 5, 6)
    r = relative_distribution_similarity(y, h, variant="batch")
    assert r.shape == (6,)
    assert np.allclose(r.double().numpy(), _pooled_r(y, h), atol=1e-5)
    keep = torch.tensor([[True, False], [True, True], [False, True]])
    assert np.allclose(relative_distribution_similarity(y, h, keep, "batch").numpy(), _pooled_r(y, h, keep.tolist()),
                       atol=1e-5)
    # batch > 1: not the per-sample correlation (nor its mean); batch 1: the same numbers
    channel = relative_distribution_similarity(y, h, variant="channel")
    assert not np.allclose(r.numpy(), channel.mean(0).numpy(), atol=1e-2)
    for i in range(3):
        one = relative_distribution_similarity(y[i:i + 1], h[i:i + 1], variant="batch")
        assert torch.allclose(one, relative_distribution_similarity(y[i:i + 1], h[i:i + 1])[0], atol=1e-6)


def test_batch_variant_loss_weights_the_pooled_r_by_the_mean_g_of_t():
    torch.manual_seed(3)
    ys = [torch.randn(3, 2, 8, 16) for _ in range(2)]
    hs = [0.4 * _ln(y) + torch.randn_like(y) for y in ys]
    hs[0][1] = _ln(ys[0][1])                                      # one sample perfectly aligned in block 0
    t = torch.tensor([0, 9, 499])
    r = np.mean([_pooled_r(y, h).mean() for y, h in zip(ys, hs)])  # mean over blocks and channels
    want = r * np.mean(1.0 / (t.numpy() + 1.0))
    got = alignment_loss(ys, hs, t, margin=0.0, variant="batch")
    assert np.isclose(got.item(), want, atol=1e-5)
    assert np.isclose(alignment_loss(ys, hs, t, margin=0.05, variant="batch").item(), max(want - 0.05, 0), atol=1e-5)
    assert not np.isclose(got.item(), alignment_loss(ys, hs, t, margin=0.0).item(), atol=1e-3)   # != "channel"
    one = [y[:1] for y in ys], [h[:1] for h in hs], t[:1]
    assert torch.isclose(alignment_loss(*one, margin=0.0, variant="batch"), alignment_loss(*one, margin=0.0), atol=1e-6)
    # masked frames: no gradient, and a sample with no aligned frame leaves the g(t) mean
    y = ys[0].clone().requires_grad_(True)
    mask = torch.tensor([[True, False], [True, True], [False, False]])
    loss = alignment_loss([y], [hs[0]], t, margin=0.0, variant="batch", mask=mask)
    loss.backward()
    want = _pooled_r(ys[0], hs[0], mask.tolist()).mean() * np.mean(1.0 / (t[:2].numpy() + 1.0))
    assert np.isclose(loss.item(), want, atol=1e-5)
    assert torch.equal(y.grad[0, 1], torch.zeros(8, 16)) and torch.equal(y.grad[2], torch.zeros(2, 8, 16))
    assert y.grad[0, 0].abs().sum() > 0 and y.grad[1].abs().sum() > 0


@pytest.mark.parametrize("variant", ["channel", "batch", "token"])
def test_affine_features_give_zero_and_independent_ones_do_not(variant):
    torch.manual_seed(0)
    h = [_ln(torch.randn(2, 4, 64, 32)) for _ in range(3)]          # targets: per-token standardised, as cached
    t = torch.tensor([0, 0])
    affine = [2.5 * x - 0.7 for x in h]                              # y = a h + b, a > 0
    assert alignment_loss(affine, h, t, margin=0.0, variant=variant) < 1e-4
    independent = [torch.randn_like(x) for x in h]
    loss = alignment_loss(independent, h, t, margin=0.0, variant=variant)
    assert 0.8 < loss < 1.2                                          # r ≈ 1 for uncorrelated features
    assert alignment_loss([-x for x in h], h, t, margin=0.0, variant=variant) > 1.99   # anti-correlated: r = 2


def test_hinge_at_the_margin():
    torch.manual_seed(0)
    y, h = [torch.randn(2, 2, 8, 16)], [torch.randn(2, 2, 8, 16)]
    t = torch.tensor([3, 7])
    raw = alignment_loss(y, h, t, margin=0.0)
    for margin in (0.01, raw.item() - 1e-3, raw.item() + 1e-3, 1.0):
        assert torch.isclose(alignment_loss(y, h, t, margin=margin), torch.clamp(raw - margin, min=0), atol=1e-6)
    y[0].requires_grad_(True)
    alignment_loss(y, h, t, margin=raw.item() + 1e-3).backward()    # below the margin: no gradient at all
    assert torch.equal(y[0].grad, torch.zeros_like(y[0]))


def test_g_of_t_weights_each_sample():
    torch.manual_seed(0)
    ys = [torch.randn(3, 2, 8, 16) for _ in range(2)]
    hs = [0.3 * _ln(y) + torch.randn_like(y) for y in ys]
    t = torch.tensor([0, 9, 499])
    # per sample: mean over blocks and channels of r, from numpy, weighted by 1 / (t + 1), averaged over samples
    r = np.mean([_naive_r(y, h).mean(1) for y, h in zip(ys, hs)], axis=0)     # (B,)
    want = np.mean(r / (t.numpy() + 1.0))
    assert np.isclose(alignment_loss(ys, hs, t, margin=0.0).item(), want, atol=1e-5)
    # each sample's loss depends on its own t only (per-sample correlation)
    alone = [alignment_loss([y[i:i + 1] for y in ys], [h[i:i + 1] for h in hs], t[i:i + 1], margin=0.0)
             for i in range(3)]
    assert np.isclose(sum(a.item() for a in alone) / 3, want, atol=1e-5)


def test_masked_frames_get_no_gradient_and_masked_samples_leave_the_mean():
    torch.manual_seed(0)
    y = torch.randn(3, 4, 8, 16, requires_grad=True)
    h = torch.randn(3, 4, 8, 16)
    t = torch.tensor([1, 2, 3])
    mask = torch.tensor([[True, True, False, False],                # two joint-training images at the end
                         [True, True, True, True],
                         [False, False, False, False]])            # a sample with no aligned frame
    loss = alignment_loss([y], [h], t, margin=0.0, mask=mask)
    loss.backward()
    assert torch.equal(y.grad[0, 2:], torch.zeros(2, 8, 16)) and torch.equal(y.grad[2], torch.zeros(4, 8, 16))
    assert y.grad[0, :2].abs().sum() > 0 and y.grad[1].abs().sum() > 0
    # equals the loss on the aligned frames alone, sample 2 excluded from the mean
    first = alignment_loss([y[:1, :2]], [h[:1, :2]], t[:1], margin=0.0)
    second = alignment_loss([y[1:2]], [h[1:2]], t[1:2], margin=0.0)
    assert torch.isclose(loss, (first + second) / 2, atol=1e-6)
    # a (B, 1) mask switches whole samples
    per_sample = alignment_loss([y], [h], t, margin=0.0, mask=torch.tensor([[True], [True], [False]]))
    full = [alignment_loss([y[i:i + 1]], [h[i:i + 1]], t[i:i + 1], margin=0.0) for i in range(2)]
    assert torch.isclose(per_sample, (full[0] + full[1]) / 2, atol=1e-6)


def test_constant_channels_and_shape_errors_are_safe():
    y = torch.ones(1, 2, 4, 8)                                       # LayerNorm of a constant token is 0
    h = torch.zeros(1, 2, 4, 8)
    y.requires_grad_(True)
    loss = alignment_loss([y], [h], torch.tensor([0]), margin=0.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(y.grad).all() and torch.isclose(loss, torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"\(B, f, l, d\)"):
        alignment_loss([torch.zeros(1, 2, 4, 8)], [torch.zeros(1, 2, 4, 4)], torch.tensor([0]))
    with pytest.raises(ValueError, match="one target per"):
        alignment_loss([y], [], torch.tensor([0]))
