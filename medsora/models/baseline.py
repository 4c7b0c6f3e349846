"""The video DiT users would pick instead (Latte / Endora design), for benchmarks only.

Transformer blocks of full self-attention + MLP with adaLN-Zero (DiT blocks), alternating a spatial block
(over each frame's tokens) and a temporal block (over each token position's frames); patch 2, learned
sigma, fixed 2D sin-cos position embedding and a 1D sin-cos temporal embedding added before the first
temporal block. Joint images go through the spatial blocks only (as Latte does), so they never reach the
video. Endora-B is Latte-B/2 (depth 12 = 6 spatial + 6 temporal blocks, width 768, 12 heads) on 16 latent
frames of an image VAE (8x spatial, 4 channels).

    model = build_baseline("B")                  # Endora-B / Latte-B/2
    model = build_baseline("B", hidden_size=512, num_heads=8)   # the same design at MedSora's width
"""
from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_1d_sincos_pos_embed_from_grid
from einops import rearrange
from timm.layers import Attention, Mlp, PatchEmbed
from torch import nn

from medsora.models.blocks import FinalLayer, dit_init, modulate, pos_embed_2d

# name -> (depth, hidden_size, num_heads): Latte / DiT sizes
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


class DiTBlock(nn.Module):
    """Self-attention + MLP (ratio 4, tanh-GELU), each a gated residual with adaLN-Zero; x (N, n, d), c (N, d)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c)[:, None].chunk(6, dim=-1)
        x = x + gate_a * self.attn(modulate(self.norm1(x), shift_a, scale_a))
        return x + gate_m * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class VideoDiT(nn.Module):
    """Latte-style video DiT. x (B, F, C, H, W) with f_v video frames then images -> (B, F, 2C or C, H, W)."""

    def __init__(self, depth: int = 12, hidden_size: int = 768, num_heads: int = 12, patch_size: int = 2,
                 in_channels: int = 4, input_size: tuple[int, int] = (16, 16), learn_sigma: bool = True):
        super().__init__()
        if depth % 2:
            raise ValueError(f"depth ({depth}) must be even: spatial and temporal blocks alternate")
        self.patch_size, self.hidden_size = patch_size, hidden_size
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        self.grid = (input_size[0] // patch_size, input_size[1] // patch_size)
        self.x_embedder = PatchEmbed(tuple(input_size), patch_size, in_channels, hidden_size, strict_img_size=False)
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.t_embedder = TimestepEmbedding(256, hidden_size)
        self.pos_embed = nn.Parameter(pos_embed_2d(hidden_size, self.grid), requires_grad=False)
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads) for _ in range(depth))  # spatial, temporal, ...
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        dit_init(self, [b.adaLN_modulation[-1] for b in self.blocks] +
                 [self.final_layer.adaLN_modulation[-1], self.final_layer.linear])

    def forward(self, x: torch.Tensor, t: torch.Tensor, num_video_frames: int | None = None) -> torch.Tensor:
        b, frames, _, height, width = x.shape
        fv = frames if num_video_frames is None else num_video_frames
        p = self.patch_size
        grid = (height // p, width // p)
        pos = self.pos_embed if grid == self.grid else pos_embed_2d(self.hidden_size, grid).to(x)
        h = self.x_embedder(rearrange(x, "b f c h w -> (b f) c h w")) + pos            # (b f) l d
        c = self.t_embedder(self.time_proj(t).to(h.dtype))                               # (b, d)
        c_frames = c.repeat_interleave(frames, dim=0)
        c_tokens = c.repeat_interleave(h.shape[1], dim=0)
        temp_embed = get_1d_sincos_pos_embed_from_grid(self.hidden_size, torch.arange(fv)).to(h)  # (f_v, d)
        for i in range(0, len(self.blocks), 2):
            h = self.blocks[i](h, c_frames)                                              # spatial: each frame
            h = rearrange(h, "(b f) l d -> (b l) f d", b=b)
            video, images = h[:, :fv], h[:, fv:]
            if fv:
                video = self.blocks[i + 1](video + temp_embed if i == 0 else video, c_tokens)  # temporal: video only
            h = rearrange(torch.cat([video, images], dim=1), "(b l) f d -> (b f) l d", b=b)
        out = self.final_layer(h, c_frames)
        return rearrange(out, "(b f) (h w) (p q c) -> b f c (h p) (w q)", b=b, h=grid[0], p=p, q=p)


def build_baseline(size: str = "B", **overrides) -> VideoDiT:
    """Latte-<size>/2 on image-VAE latents (4 channels, 16×16 for 128 px); overrides are VideoDiT arguments."""
    depth, hidden_size, num_heads = SIZES[size]
    kwargs = dict(depth=depth, hidden_size=hidden_size, num_heads=num_heads)
    return VideoDiT(**{**kwargs, **overrides})
