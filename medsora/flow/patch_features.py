"""Weight-free features of flow images, for alignment where DINO ViT-S/8 weights are absent.

    feats = FlowPatchFeatures()(images, layers=(0, 1))   # images (N, 3, H, W) in [0, 1] -> {layer: (N, H/8*W/8, 192)}

NOT the paper's method: the paper aligns the backbone with DINO features of the HSV flow images (Eq. 13-15).
This stand-in keeps DINO's interface (one token per 8x8 patch, one feature map per "layer", each token
LayerNorm-ed) so `cache --flow` and training with alignment run anywhere; every place that shows results says
which features were used (`flow.features`, recorded in the cache manifest and the run's config).

Token (r, c) of layer j is the 8x8 RGB patch (r, c) of the flow image after a box blur whose width grows with
depth (1, 3, 7, 15 px over 12 layers), flattened: the first layers see the flow's fine structure, the deep ones
its context, as a ViT's receptive field grows. No weight, nothing to download; written by hand because no
library ships a fixed patch descriptor with DINO's token layout (a fixed unfold + blur is a few lines).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NAME = "flow patches (weight-free, not DINO)"


class FlowPatchFeatures(nn.Module):
    def __init__(self, patch: int = 8, depth: int = 12, levels: int = 4):
        super().__init__()
        self.patch, self.depth, self.levels = patch, depth, levels
        self.dim = 3 * patch * patch

    def blur(self, layer: int) -> int:
        """Box-blur width of `layer`: 1 (none), 3, 7, 15 px, growing with depth."""
        return 2 ** (1 + layer * self.levels // self.depth) - 1

    @torch.no_grad()
    def forward(self, images: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        layers = sorted(set(int(i) for i in layers))
        if not layers or layers[0] < 0 or layers[-1] >= self.depth:
            raise ValueError(f"flow-patch layers must be in [0, {self.depth}), got {layers}")
        h, w = images.shape[-2:]
        if h % self.patch or w % self.patch:
            raise ValueError(f"flow images of {h}x{w} px do not split into {self.patch}x{self.patch} patches")
        out = {}
        x = images.float()
        for i in layers:
            k = self.blur(i)
            y = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False) if k > 1 else x
            tokens = F.unfold(y, self.patch, stride=self.patch).transpose(1, 2)       # (N, tokens, 3*p*p)
            out[i] = F.layer_norm(tokens, tokens.shape[-1:])
        return out
