"""The MedSora block (SPEC.md "Backbone block") and the DiT pieces around it.

One block, adaLN-Zero, three residual sub-layers in sequence and no MLP:

    x = x + g1 · LocalAttention(mod(LN(x)))            per frame, tokens in raster order
    x = x + g2 · SpatialMamba(mod(LN(x)))              spiral scans of the f×w̄ and f×h̄ planes, gated fusion
    (alignment feature = x here)
    x = x + g3 · TemporalMamba(mod(LN(x)))             Mamba-2 over (b·l, f)

Tokens are (B, F, l, d): F = f_v video frames then f_i images, l = h̄·w̄ tokens per frame (raster order).
Scans that cross frames run over the video frames as one clip and over each image as its own 1-frame clip,
so an image never reaches the video (SPEC.md "Decision — joint images").
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers.models.embeddings import get_2d_sincos_pos_embed_from_grid
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from medsora.models.attention import LocalAttention
from medsora.models.mamba2 import Mamba2
from medsora.models.spiral import inverse, spiral_order


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def pos_embed_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding of an h×w token grid, raster order: (1, h·w, dim).
    First half of the channels encodes the column, second half the row (as DiT's numpy version)."""
    h, w = grid
    cols, rows = torch.meshgrid(torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64), indexing="xy")
    return get_2d_sincos_pos_embed_from_grid(dim, torch.stack([cols, rows])).float()[None]  # (1, h*w, dim)


def per_clip(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, num_video_frames: int) -> torch.Tensor:
    """Apply `fn` ((N, f, ...) -> (N, f, ...')) to the video frames x[:, :f_v] as one clip and to each image
    x[:, f_v:] as its own 1-frame clip; returns the results back on the frame axis, (B, F, ...')."""
    b, frames = x.shape[:2]
    out = []
    if num_video_frames > 0:
        out.append(fn(x[:, :num_video_frames]))
    if frames > num_video_frames:
        images = fn(rearrange(x[:, num_video_frames:], "b f ... -> (b f) 1 ..."))
        out.append(rearrange(images, "(b f) 1 ... -> b f ...", b=b))
    return torch.cat(out, dim=1) if len(out) > 1 else out[0]


class SpatialMamba(nn.Module):
    """Bidirectional spiral scans along width and height through one shared Mamba-2, fused by Eq. 9.

    The four scans (width/height × spiral/reverse) share the weights, and in_proj is per token, so it runs
    once and its output is permuted for each order; only conv + scan (`Mamba2.mix`) run per order. The two
    directions of an axis are summed before the shared out_proj, which is linear (no bias).
    With the Mamba's `recompute`, the four scans keep only the projection z for the backward (not four
    permuted copies of it) and recompute the rest there.
    """

    def __init__(self, dim: int, pair: int, **mamba_kwargs):
        super().__init__()
        self.pair = pair
        self.mamba = Mamba2(dim, **mamba_kwargs)
        self.gate_w = nn.Linear(dim, dim)   # W1, b1 of Eq. 9
        self.gate_h = nn.Linear(dim, dim)   # W2, b2

    def _scan(self, seq: torch.Tensor, rows: int, cols: int, mix: Callable) -> torch.Tensor:
        """seq (M, rows·cols, D_in) in plane raster order -> spiral + reverse outputs, in place, summed."""
        fwd = spiral_order(rows, cols, self.pair, device=seq.device)
        rev = fwd.flip(0)
        y = mix(torch.cat([seq[:, fwd], seq[:, rev]]))                # (2M, L, d_inner), sequences independent
        y_fwd, y_rev = y.chunk(2)
        return y_fwd[:, inverse(fwd)] + y_rev[:, inverse(rev)]

    def _width(self, z: torch.Tensor, mix: Callable) -> torch.Tensor:
        n, f, h, w, _ = z.shape
        seq = rearrange(z, "n f h w c -> (n h) (f w) c")              # the f×w̄ plane of each row
        return rearrange(self._scan(seq, f, w, mix), "(n h) (f w) c -> n f (h w) c", n=n, f=f)

    def _height(self, z: torch.Tensor, mix: Callable) -> torch.Tensor:
        n, f, h, w, _ = z.shape
        seq = rearrange(z, "n f h w c -> (n w) (f h) c")              # the f×h̄ plane of each column
        return rearrange(self._scan(seq, f, h, mix), "(n w) (f h) c -> n f (h w) c", n=n, f=f)

    def _axis(self, scan: Callable, z: torch.Tensor, num_video_frames: int) -> torch.Tensor:
        """z (B, F, h̄, w̄, d_in_proj) -> one axis' output (B, F, l, d_inner). With `recompute` each axis is
        recomputed on its own in the backward, so only one axis' intermediates are alive at a time."""
        if self.mamba.recompute and torch.is_grad_enabled():
            return checkpoint(per_clip, lambda v: scan(v, self.mamba.mix_stored), z, num_video_frames,
                              use_reentrant=False)
        return per_clip(lambda v: scan(v, self.mamba.mix), z, num_video_frames)

    def forward(self, x: torch.Tensor, num_video_frames: int, grid: tuple[int, int]) -> torch.Tensor:
        b, frames, l, _ = x.shape
        z = self.mamba.project(rearrange(x, "b f l d -> b (f l) d"))  # in_proj once per token
        z = rearrange(z, "b (f h w) c -> b f h w c", f=frames, h=grid[0])
        y_w = self.mamba.out_proj(self._axis(self._width, z, num_video_frames))
        y_h = self.mamba.out_proj(self._axis(self._height, z, num_video_frames))
        return torch.sigmoid(self.gate_w(y_w)) * y_w + torch.sigmoid(self.gate_h(y_h)) * y_h


class TemporalMamba(nn.Module):
    """Mamba-2 over each token position's frames: (b·l, f)."""

    def __init__(self, dim: int, **mamba_kwargs):
        super().__init__()
        self.mamba = Mamba2(dim, **mamba_kwargs)

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        y = self.mamba(rearrange(x, "n f l d -> (n l) f d"))
        return rearrange(y, "(n l) f d -> n f l d", n=n)

    def forward(self, x: torch.Tensor, num_video_frames: int) -> torch.Tensor:
        return per_clip(self._clip, x, num_video_frames)


class MedSoraBlock(nn.Module):
    """Local attention -> spatial Mamba -> temporal Mamba, each a gated residual (adaLN-Zero).
    Block `index` scans with spiral pair `index % 8` on both axes."""

    def __init__(self, cfg, index: int):
        super().__init__()
        d = cfg.hidden_size
        mamba_kwargs = dict(d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand, headdim=cfg.headdim,
                            ngroups=cfg.ngroups, chunk_size=cfg.chunk_size, recompute=cfg.recompute)
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = LocalAttention(d, heads=cfg.attn_heads, window=cfg.attn_window, look_backward=cfg.attn_look_backward,
                                   look_forward=cfg.attn_look_forward, dropout=cfg.attn_dropout, recompute=cfg.recompute)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.spatial = SpatialMamba(d, pair=index, **mamba_kwargs)
        self.norm3 = nn.LayerNorm(d, eps=1e-6)
        self.temporal = TemporalMamba(d, **mamba_kwargs)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 9 * d))

    def forward(self, x: torch.Tensor, c: torch.Tensor, num_video_frames: int, grid: tuple[int, int]):
        """x (B, F, l, d), c (B, d) -> x (B, F, l, d) and the spatial output (B, F, l, d) (alignment feature)."""
        b = x.shape[0]
        (shift_a, scale_a, gate_a, shift_s, scale_s, gate_s,
         shift_t, scale_t, gate_t) = self.adaLN_modulation(c)[:, None, None].chunk(9, dim=-1)  # each (B, 1, 1, d)
        h = rearrange(modulate(self.norm1(x), shift_a, scale_a), "b f l d -> (b f) l d")
        x = x + gate_a * rearrange(self.attn(h), "(b f) l d -> b f l d", b=b)
        x = x + gate_s * self.spatial(modulate(self.norm2(x), shift_s, scale_s), num_video_frames, grid)
        feature = x
        x = x + gate_t * self.temporal(modulate(self.norm3(x), shift_t, scale_t), num_video_frames)
        return x, feature


class FinalLayer(nn.Module):
    """DiT's final layer: LayerNorm (no affine) -> adaLN modulation -> Linear to patch·patch·out_channels."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (N, l, d), c (N, d) -> (N, l, p·p·out)."""
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def dit_init(model: nn.Module, zero: list[nn.Module]) -> None:
    """DiT initialisation: Xavier-uniform Linears, patch embedding as a Linear, timestep MLP normal(0.02),
    and the modules in `zero` (adaLN outputs, final layer, ...) set to zero. `model` has DiT's
    `x_embedder` (timm PatchEmbed) and `t_embedder` (diffusers TimestepEmbedding)."""
    def _basic_init(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    model.apply(_basic_init)
    w = model.x_embedder.proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(model.x_embedder.proj.bias)
    nn.init.normal_(model.t_embedder.linear_1.weight, std=0.02)
    nn.init.normal_(model.t_embedder.linear_2.weight, std=0.02)
    for m in zero:
        nn.init.zeros_(m.weight)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
