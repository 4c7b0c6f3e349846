"""The MedSora backbone: patch embedding -> N MedSora blocks -> DiT final layer, and `build_model(preset)`.

    model = build_model("B")                               # 86,466,304 parameters
    out = model(x, t, num_video_frames=4)                  # x (B, F, C, H, W) -> (B, F, 2C, H, W)
    out, feats = model(x, t, 4, return_features=True)      # feats: per block (B, f_v, l, d)
    out = model(x, t, 4, cond=cond)                        # model.first_frame: cond (B, F, C + 1, H, W)
"""
from __future__ import annotations

import dataclasses

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from einops import rearrange
from timm.layers import PatchEmbed
from torch import nn

from medsora.config import ModelConfig, model_preset
from medsora.models.blocks import FinalLayer, MedSoraBlock, dit_init, pos_embed_2d


class MedSora(nn.Module):
    """Unconditional video diffusion backbone (Table 1 of the paper; sizes in SPEC.md "Parameter counts"), and with
    `model.first_frame` one conditioned on a given first latent frame (docs/first_frame.md)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.hidden_size, cfg.patch_size
        self.out_channels = cfg.in_channels * (2 if cfg.learn_sigma else 1)
        self.grid = (cfg.input_size[0] // p, cfg.input_size[1] // p)
        self.x_embedder = PatchEmbed(tuple(cfg.input_size), p, cfg.in_channels, d, strict_img_size=False)
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)   # DiT's [cos, sin] sinusoid
        self.t_embedder = TimestepEmbedding(256, d)                                      # Linear - SiLU - Linear
        # frozen, stored as DiT does, so parameters() counts it
        self.pos_embed = nn.Parameter(pos_embed_2d(d, self.grid), requires_grad=False)
        self.blocks = nn.ModuleList(MedSoraBlock(cfg, i) for i in range(cfg.depth))
        self.final_layer = FinalLayer(d, p, self.out_channels)
        if cfg.first_frame:   # docs/first_frame.md; drawn from a forked generator: the other weights stay the same
            with torch.random.fork_rng(devices=[]):
                self.cond_embedder = PatchEmbed(tuple(cfg.input_size), p, cfg.in_channels + 1, d, strict_img_size=False)
        self.initialize_weights()

    def initialize_weights(self):
        """DiT initialisation: every Linear Xavier (the Mamba projections and the attention's q, k, v too), only the
        adaLN outputs and the final layer zero. This is the authors' effective initialisation: their block zeroes
        q, k, v, but their `initialize_weights` then re-applies Xavier to every Linear. (Zero q, k, v with a zero
        adaLN gate would be an exact saddle: the attention branch would never get a gradient.)"""
        zero = [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]
        zero += [block.adaLN_modulation[-1] for block in self.blocks]
        if self.cfg.first_frame:   # zero: a first-frame model starts as the unconditional one (dit_init skips convs)
            zero.append(self.cond_embedder.proj)
        dit_init(self, zero)

    def forward(self, x: torch.Tensor, t: torch.Tensor, num_video_frames: int | None = None,
                return_features: bool = False, cond: torch.Tensor | None = None):
        """x (B, F, C, H, W): f_v video latent frames then F - f_v image latents; t (B,) diffusion steps.
        `cond` (B, F, C + 1, H, W), first_frame models only: the clean first latent frame and a mask channel
        (medsora.first_frame); None = no condition (all zeros). Returns (B, F, out_channels, H, W), and with
        `return_features` a list (one per block) of the spatial outputs of the video frames, each (B, f_v, l, d)."""
        b, frames, _, height, width = x.shape
        fv = frames if num_video_frames is None else num_video_frames
        if not 0 <= fv <= frames:
            raise ValueError(f"num_video_frames={fv} must be between 0 and the {frames} frames of x")
        p = self.cfg.patch_size
        grid = (height // p, width // p)
        pos = self.pos_embed if grid == self.grid else pos_embed_2d(self.cfg.hidden_size, grid).to(x)

        h = self.x_embedder(rearrange(x, "b f c h w -> (b f) c h w")) + pos            # (b f) l d
        if self.cfg.first_frame or cond is not None:
            h = h + self._condition(x, cond)                                              # (b f) l d
        h = rearrange(h, "(b f) l d -> b f l d", b=b)
        c = self.t_embedder(self.time_proj(t).to(h.dtype))                               # (b, d)
        features = []
        for block in self.blocks:
            h, feature = block(h, c, fv, grid)
            if return_features:
                features.append(feature[:, :fv])
        out = self.final_layer(rearrange(h, "b f l d -> (b f) l d"), c.repeat_interleave(frames, dim=0))
        out = rearrange(out, "(b f) (h w) (p q c) -> b f c (h p) (w q)", b=b, h=grid[0], p=p, q=p)
        return (out, features) if return_features else out

    def _condition(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The first-frame tokens added to the x tokens, (b f) l d."""
        if not self.cfg.first_frame:
            raise ValueError("this model was built without model.first_frame; it takes no first-frame condition")
        b, f, c, h, w = x.shape
        cond = x.new_zeros(b, f, c + 1, h, w) if cond is None else cond
        if cond.shape != (b, f, c + 1, h, w):
            raise ValueError(f"cond must be {(b, f, c + 1, h, w)} (latent channels + 1 mask channel), got "
                             f"{tuple(cond.shape)}")
        return self.cond_embedder(rearrange(cond.to(x.dtype), "b f c h w -> (b f) c h w"))


def build_model(name_or_config: str | ModelConfig = "B", **overrides) -> MedSora:
    """A MedSora backbone from a preset name (tiny, S, B, L) or a ModelConfig, with ModelConfig field overrides."""
    cfg = model_preset(name_or_config) if isinstance(name_or_config, str) else name_or_config
    cfg = dataclasses.replace(cfg, **overrides)
    if isinstance(cfg.input_size, list):
        cfg = dataclasses.replace(cfg, input_size=tuple(cfg.input_size))
    return MedSora(cfg)
