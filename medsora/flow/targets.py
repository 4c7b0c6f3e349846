"""Alignment targets of a clip: flow -> flow images -> DINO features -> Sampling() to the backbone's shapes.

    sampling = Sampling(flow_frames=16, latent_frames=4, size=(64, 512))
    targets, targets_flipped = clip_targets(frames, flow_estimator, dino, layers=(0, 2, 4, 6, 8, 10), sampling=sampling)
    # frames (17, 3, 128, 128) in [-1, 1] -> {layer: (4, 64, 512)} for the clip and for its horizontal flip

Computed once per clip by the cache (stored as fp16); training never runs RAFT or DINO.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .dino import dino_features
from .flow_image import flow_to_rgb


def flip_flow(flow: torch.Tensor) -> torch.Tensor:
    """The flow of the horizontally flipped clip: flow (..., 2, H, W) mirrored along W, with u negated."""
    flipped = flow.flip(-1)
    return torch.cat([-flipped[..., :1, :, :], flipped[..., 1:, :, :]], dim=-3)


def flow_groups(flow_frames: int, latent_frames: int) -> list[tuple[int, int]]:
    """The flow frames [a, b) each latent frame encodes: F/f each when f divides F (clips of 4k frames, the paper's
    16); else, as the causal VAE encodes a clip of 4k + 1 frames, the first flow frame alone and then groups of
    (F - 1)/(f - 1)."""
    if latent_frames >= 1 and flow_frames % latent_frames == 0:
        g = flow_frames // latent_frames
        return [(j * g, (j + 1) * g) for j in range(latent_frames)]
    if latent_frames > 1 and (flow_frames - 1) % (latent_frames - 1) == 0:
        g = (flow_frames - 1) // (latent_frames - 1)
        return [(0, 1)] + [(1 + j * g, 1 + (j + 1) * g) for j in range(latent_frames - 1)]
    raise ValueError(f"flow frames ({flow_frames}) must be a multiple of latent frames ({latent_frames}), or one "
                     "more than a multiple of latent frames - 1 (clips of 4k or 4k + 1 frames)")


class Sampling(nn.Module):
    """Sampling() of Eq. 14: DINO features of F flow frames -> the backbone's f latent frames, l tokens, width d.

    1. a fixed 1x1 convolution over the frame axis (F -> f input/output channels), block-diagonal: latent frame j
       is the mean of the flow frames it encodes (`flow_groups`; the authors' uniform 1/F weights would make all f
       targets equal, SPEC.md "Sampling()");
    2. bilinear resize of (tokens, width) -> (l, d), e.g. (256, 384) -> (64, 512) as in the paper (Table 1,
       "bilinear interpolation size (64, 512)") and the authors' code (one bilinear, align_corners=False resize
       of the raster-ordered token axis and the channel axis): grid=False, config `flow.resize=tokens`, the default.
       grid=True (`flow.resize=grid`) resizes the token *grid* instead ((16, 16) -> (8, 8), channels linearly),
       so that target token k sits where latent token k is. With the raster resize latent token (r, c) of an 8x8
       grid reads DINO token 4k + 1.5, i.e. row 2r + c // 4, column 4 (c mod 4) + 1.5 of the 16x16 grid: the left
       half of a latent row reads one whole DINO row, its right half the next one.
    No trainable parameter: the weight is a non-persistent buffer, so checkpoints are unchanged.
    """

    def __init__(self, flow_frames: int, latent_frames: int, size: tuple[int, int], grid: bool = False):
        super().__init__()
        weight = torch.zeros(latent_frames, flow_frames)
        for j, (a, b) in enumerate(flow_groups(flow_frames, latent_frames)):
            weight[j, a:b] = 1.0 / (b - a)
        self.register_buffer("weight", weight[:, :, None, None], persistent=False)   # (f, F, 1, 1) conv kernel
        self.size, self.grid = tuple(size), grid

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, F, n, c) or (F, n, c) -> (B, f, l, d) or (f, l, d)."""
        squeeze = h.ndim == 3
        if squeeze:
            h = h[None]
        x = F.conv2d(h.float(), self.weight.to(h.device))                               # (B, F, n, c) -> (B, f, n, c)
        if not self.grid:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)  # (B, f, l, d)
        else:
            b, f, n, c = x.shape
            side, lside = _side(n), _side(self.size[0])
            x = x.reshape(b * f, 1, side, side, c).permute(0, 1, 4, 2, 3)               # (b f) 1 c hs ws
            x = F.interpolate(x, size=(self.size[1], lside, lside), mode="trilinear", align_corners=False)
            x = x.permute(0, 1, 3, 4, 2).reshape(b, f, lside * lside, self.size[1])     # (b f) 1 d h w -> b f (h w) d
        return x[0] if squeeze else x


def _side(n: int) -> int:
    side = round(n ** 0.5)
    if side * side != n:
        raise ValueError(f"grid=True needs a square token grid, got {n} tokens")
    return side


@torch.no_grad()
def flow_targets(flow: torch.Tensor, dino: nn.Module, layers: Sequence[int], sampling: Sampling,
                 colour: str = "hsv") -> dict[int, torch.Tensor]:
    """Flow (F, 2, H, W) or (B, F, 2, H, W) -> {layer: (f, l, d)} (or (B, f, l, d)) for each unique layer."""
    lead = flow.shape[:-3]                                                    # (F,) or (B, F)
    rgb = flow_to_rgb(flow, colour).reshape(-1, 3, *flow.shape[-2:])       # (...) 3 h w -> n 3 h w
    feats = dino_features(dino, rgb, layers)                               # {layer: (n, tokens, dim)}
    return {i: sampling(h.reshape(*lead, *h.shape[-2:])) for i, h in feats.items()}


@torch.no_grad()
def clip_targets(frames: torch.Tensor, flow_estimator: nn.Module, dino: nn.Module, layers: Sequence[int],
                 sampling: Sampling, colour: str = "hsv") -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """A clip (F+1, 3, H, W) in [-1, 1] (or a batch of them) -> alignment targets of the clip and of its
    horizontal flip, each {layer: (f, l, d)}. The flow runs once; the flipped clip's flow is `flip_flow` of it
    (DINO is not flip-equivariant, so it runs on both)."""
    flow = flow_estimator(frames)                                          # (F, 2, H, W) or (B, F, 2, H, W)
    return (flow_targets(flow, dino, layers, sampling, colour),
            flow_targets(flip_flow(flow), dino, layers, sampling, colour))
