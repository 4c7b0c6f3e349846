"""Focal frequency loss (Jiang et al., ICCV 2021), on images or video frames.

For every image (and channel) with 2D DFT F (orthonormal, over the last two axes H, W):

    d(u, v)   = |F_pred(u, v) - F_target(u, v)|
    w(u, v)   = d(u, v)^alpha / max_{u', v'} d(u', v')^alpha        (in [0, 1]; no gradient)
    FFL       = mean over images, channels and (u, v) of  w(u, v) * d(u, v)^2

The weight focuses the loss on the frequencies that are hardest to reconstruct. Written here because
it is a few lines of torch.fft; the reference package adds patching and spectrum-averaging options that
the paper does not use.
"""
from __future__ import annotations

import torch
from torch import nn


class FocalFrequencyLoss(nn.Module):
    """FFL(pred, target) for tensors (..., H, W), e.g. (B, T, 3, H, W) videos; `alpha` = 1 as in the paper."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = torch.fft.fft2(pred.float(), norm="ortho") - torch.fft.fft2(target.float(), norm="ortho")
        dist2 = diff.real ** 2 + diff.imag ** 2                                  # d^2, (..., H, W)
        with torch.no_grad():
            w = dist2.sqrt() ** self.alpha
            w = w / w.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        return (w * dist2).mean()
