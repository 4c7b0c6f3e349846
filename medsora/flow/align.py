"""Optical-flow representation alignment loss: relative distribution similarity (Eqs. 14-15).

    loss = alignment_loss(features, targets, t)    # features / targets: one (B, f, l, d) per aligned block
    total = diffusion_loss + alpha * loss          # alpha = 0.01 (train.align_weight)

Per sample b, block i and channel c, over the K = f·l video tokens of that sample:
    r[b, i, c] = 1 - Pearson(LN(y_i)[b, :, c], h_i[b, :, c])
    L = max(mean over b, i, c of g(t_b) · r[b, i, c] - margin, 0),  g(t) = 1 / (t + 1).
The paper writes K = b·f·l, but g(t) is per sample, so the correlation is taken per sample (it also keeps one
sample's target from depending on what else is in the batch); with the paper's batch of 2 the two barely differ.
variant="token" is the authors' code: 1 - Pearson over the d channels of each token, averaged over tokens.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

VARIANTS = ("channel", "token")


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

    Returns (B, d) for variant="channel" (over the f·l tokens of each sample) or (B,) for "token" (over the d
    channels of each token, then averaged over the sample's kept tokens).
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
    if variant == "token":
        r = 1 - _pearson(y, h, dim=2, eps=eps)                           # (b, K)
        return r.mean(1) if w is None else (w[..., 0] * r).sum(1) / w[..., 0].sum(1).clamp_min(1.0)   # (b,)
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def alignment_loss(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], t: torch.Tensor,
                   margin: float = 0.01, variant: str = "channel", mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_align of Eq. 15 for the aligned blocks; a scalar.

    features: one (B, f, l, d) per aligned block (block outputs after the spatial Mamba, video frames);
    targets: the matching (B, f, l, d) from the cache; t: (B,) timesteps.
    mask: optional bool (B, f) or (B, 1) (True = frame is aligned). Frames set to False (joint-training images,
    clips without targets) get no gradient; a sample with no aligned frame leaves the mean.
    """
    if len(features) != len(targets) or not features:
        raise ValueError(f"need one target per aligned block, got {len(features)} features, {len(targets)} targets")
    b, f = features[0].shape[:2]
    g = 1.0 / (t.to(features[0].device).float() + 1.0)                   # (B,)
    keep = torch.ones(b, device=g.device) if mask is None else mask.to(g.device).expand(b, f).any(1).float()
    # (blocks, B, d) or (blocks, B, 1) -> mean over blocks and channels per sample
    r = torch.stack([relative_distribution_similarity(y, h, mask, variant).reshape(b, -1).mean(1)
                     for y, h in zip(features, targets)]).mean(0)        # (B,)
    per_sample = (g * r * keep).sum() / keep.sum().clamp_min(1.0)
    return torch.clamp(per_sample - margin, min=0.0)
