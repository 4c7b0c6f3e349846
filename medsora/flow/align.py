"""Optical-flow representation alignment loss: relative distribution similarity (Eqs. 14-15).

    loss = alignment_loss(features, targets, t)    # features / targets: one (B, f, l, d) per aligned block
    total = diffusion_loss + alpha * loss          # alpha = 0.01 (train.align_weight)

variant="channel" (the default): per sample b, block i and channel c, over the K = f·l video tokens of that sample,
    r[b, i, c] = 1 - Pearson(LN(y_i)[b, :, c], h_i[b, :, c])
    L = max(mean over b, i, c of g(t_b) · r[b, i, c] - margin, 0),  g(t) = 1 / (t + 1).
variant="batch" is Eq. 14 as written, K = b·f·l: per block and channel, one correlation over the tokens of all
samples of the batch,
    r[i, c] = 1 - Pearson(LN(y_i)[:, :, :, c], h_i[:, :, :, c])          (all b·f·l tokens at once)
    L = max(mean over b of g(t_b) · mean over i, c of r[i, c] - margin, 0).
Eq. 15 multiplies r by g(t), but a pooled r belongs to no single t: since Eq. 15 is linear in g(t)·r, the natural
reading weights the shared r by each sample's g(t_b) and averages over the batch, i.e. r times the batch mean of
g(t) (the authors' train.py does the same with their pooled statistic: `loss_dict["cov"] * (1.0/(t+1))`, then
`.mean()`). The margin is applied once, to that batch mean. A sample's gradient then depends on the other samples
(their tokens shift the channel means and variances, their t the weight), which "channel" avoids; with batch 1
the two are equal.
variant="token" is the authors' code: 1 - Pearson over the d channels of each token, averaged over tokens.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

VARIANTS = ("channel", "batch", "token")


def _pearson(x: torch.Tensor, y: torch.Tensor, dim: int, w: torch.Tensor | None = None, eps: float = 1e-8
             ) -> torch.Tensor:
    """Pearson correlation along `dim`, optionally with 0/1 weights w (broadcastable to x); constant inputs give 0."""
    if w is None:
        x = x - x.mean(dim, keepdim=True)
        y = y - y.mean(dim, keepdim=True)
        return (x * y).sum(dim) * torch.rsqrt((x * x).sum(dim) * (y * y).sum(dim) + eps)
    n = w.expand_as(x).sum(dim, keepdim=True).clamp_min(1.0)
    x = w * (x - (w * x).sum(dim, keepdim=True) / n)                      # masked entries become 0
    y = w * (y - (w * y).sum(dim, keepdim=True) / n)
    return (x * y).sum(dim) * torch.rsqrt((x * x).sum(dim) * (y * y).sum(dim) + eps)


def relative_distribution_similarity(y: torch.Tensor, h: torch.Tensor, mask: torch.Tensor | None = None,
                                     variant: str = "channel", eps: float = 1e-8) -> torch.Tensor:
    """r = 1 - Pearson(LN(y), h), y and h (B, f, l, d); mask (B, f) bool, False = frame left out.

    Returns (B, d) for variant="channel" (over the f·l tokens of each sample), (d,) for "batch" (over the kept
    b·f·l tokens of the whole batch) or (B,) for "token" (over the d channels of each token, then averaged over
    the sample's kept tokens).
    """
    if y.shape != h.shape or y.ndim != 4:
        raise ValueError(f"features and targets must both be (B, f, l, d), got {tuple(y.shape)} and {tuple(h.shape)}")
    b, f, l, d = y.shape
    y = F.layer_norm(y.float(), (d,))                                     # LayerNorm without affine
    h = h.to(y.dtype)
    y, h = y.reshape(b, f * l, d), h.reshape(b, f * l, d)                 # b f l d -> b (f l) d
    w = None
    if mask is not None:                                                  # (b, f) -> (b, f l, 1)
        w = mask.to(y.device, y.dtype).expand(b, f)[:, :, None].expand(b, f, l).reshape(b, f * l, 1)
    if variant == "channel":
        return 1 - _pearson(y, h, dim=1, w=w, eps=eps)                   # (b, d)
    if variant == "batch":                                                # b (f l) d -> (b f l) d
        w = None if w is None else w.reshape(b * f * l, 1)
        return 1 - _pearson(y.reshape(b * f * l, d), h.reshape(b * f * l, d), dim=0, w=w, eps=eps)   # (d,)
    if variant == "token":
        r = 1 - _pearson(y, h, dim=2, eps=eps)                           # (b, K)
        return r.mean(1) if w is None else (w[..., 0] * r).sum(1) / w[..., 0].sum(1).clamp_min(1.0)   # (b,)
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def _per_sample(r: torch.Tensor, b: int, variant: str) -> torch.Tensor:
    """r of one block, (B, d), (B,) or the batch-pooled (d,) -> (B,): its mean over channels for each sample."""
    return r.mean().expand(b) if variant == "batch" else r.reshape(b, -1).mean(1)


def alignment_loss(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], t: torch.Tensor,
                   margin: float = 0.01, variant: str = "channel", mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_align of Eq. 15 for the aligned blocks; a scalar.

    features: one (B, f, l, d) per aligned block (block outputs after the spatial Mamba, video frames);
    targets: the matching (B, f, l, d) from the cache; t: (B,) timesteps.
    mask: optional bool (B, f) or (B, 1) (True = frame is aligned). Frames set to False (joint-training images,
    clips without targets) get no gradient; a sample with no aligned frame leaves the mean.
    variant: "channel", "batch" or "token" (module docstring); with "batch" the one pooled r of each block is
    weighted by the mean of g(t) over the samples with an aligned frame.
    """
    if len(features) != len(targets) or not features:
        raise ValueError(f"need one target per aligned block, got {len(features)} features, {len(targets)} targets")
    b, f = features[0].shape[:2]
    g = 1.0 / (t.to(features[0].device).float() + 1.0)                   # (B,)
    keep = torch.ones(b, device=g.device) if mask is None else mask.to(g.device).expand(b, f).any(1).float()
    # per block (B, d), (d,) or (B,) -> mean over channels per sample; a pooled r is shared by all samples
    r = torch.stack([_per_sample(relative_distribution_similarity(y, h, mask, variant), b, variant)
                     for y, h in zip(features, targets)]).mean(0)        # (B,)
    per_sample = (g * r * keep).sum() / keep.sum().clamp_min(1.0)
    return torch.clamp(per_sample - margin, min=0.0)
