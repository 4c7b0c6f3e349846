"""First-frame conditioning (image-to-video), beyond the paper: the condition tensor, its dropout in training and
the guidance on it at sampling. Design and why: docs/first_frame.md.

    cond = make_condition(first, frames)                  # (B, C, h, w) clean first latents -> (B, F, C + 1, h, w)
    out = model(x, t, num_video_frames=fv, cond=cond)     # a model built with model.first_frame=true
    fn = guided(model_fn, cond, scale=2.0, channels=C)    # eps_u + s (eps_c - eps_u), for any sampler's model_fn(x, t)
    fn = pinned(fn, first, diffusion.alphas_cumprod, C)   # frame 0 is the given latent: its eps is set to fit it

The condition is the clean (normalised) first latent frame at frame 0 plus a mask channel (1 there, 0 elsewhere);
all zeros is "no condition" (dropped in training, the unconditional branch of guidance).
"""
from __future__ import annotations

from typing import Callable

import torch


def make_condition(first: torch.Tensor, frames: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, h, w) clean first latent frames -> the model's `cond` (B, frames, C + 1, h, w): the latent and a mask
    channel of ones at frame 0, zeros at every other frame (the rest of the clip, joint-training images); the rows
    where `keep` (B,) is False are all zeros (condition dropped)."""
    b, c, h, w = first.shape
    cond = first.new_zeros(b, frames, c + 1, h, w)
    cond[:, 0, :c] = first
    cond[:, 0, c] = 1.0
    if keep is not None:
        cond = cond * keep.to(cond)[:, None, None, None, None]
    return cond


def training_condition(x0: torch.Tensor, generator: torch.Generator, n: int, mine: slice, prob: float) -> torch.Tensor:
    """The condition of one training step: each clip keeps its own clean first latent frame x0[:, 0] with probability
    `prob`, else it is dropped (conditioning dropout: the same model learns the unconditional branch of guidance).
    The draws are made for the global batch of `n` clips from the step's generator (after its timesteps and noise)
    and `mine` takes this process's share, so a resumed run and N processes draw what one uninterrupted run does.
    x0 (b, F, C, h, w): the video latent frames first -> cond (b, F, C + 1, h, w)."""
    keep = (torch.rand(n, generator=generator) < prob)[mine].to(x0.device)
    return make_condition(x0[:, 0], x0.shape[1], keep)


def bind(model_fn: Callable, cond: torch.Tensor | None, part: slice = slice(None)) -> Callable:
    """`model_fn(x, t, cond=...)` as the diffusion's `model_fn(x, t)` with `cond[part]` (a micro-batch's rows);
    `model_fn` itself when there is no condition."""
    if cond is None:
        return model_fn
    return lambda x, t: model_fn(x, t, cond=cond[part])


def guided(model_fn: Callable, cond: torch.Tensor, scale: float, channels: int) -> Callable:
    """Guidance on the image condition: eps = eps_u + scale * (eps_c - eps_u), eps_u with the condition dropped.
    scale 1 is the conditional model alone (one call); otherwise both branches run as one batch of 2B. With learned
    variance (2C output channels) only the eps half is guided, the conditional variance half is kept."""
    if scale == 1.0:
        return bind(model_fn, cond)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model_fn(torch.cat([x, x]), torch.cat([t, t]), cond=torch.cat([cond, torch.zeros_like(cond)]))
        c, u = out.chunk(2)                                           # (B, F, out_channels, h, w) each
        eps = u[:, :, :channels] + scale * (c[:, :, :channels] - u[:, :, :channels])
        return torch.cat([eps, c[:, :, channels:]], dim=2)
    return fn


def pinned(model_fn: Callable, first: torch.Tensor, alphas_cumprod: torch.Tensor, channels: int) -> Callable:
    """Frame 0 is known: its eps is replaced by the one that makes the predicted x_0 of frame 0 the given clean
    latent, eps_0 = (x_t[:, 0] - sqrt(abar_t) first) / sqrt(1 - abar_t), at every step of any sampler.

    Every sampler here steps through the predicted x_0 (DDIM, DDPM's posterior, the DPM-Solver/UniPC data
    prediction), so frame 0 of the result is `first` and frame 0 of each x_t is `first` noised to level t: what the
    model saw in training, where x_t[:, 0] is the noised x0[:, 0] that the condition holds. The model is still asked
    for every frame (its prediction of the rest sees frame 0 and the condition). `first` (B, C, h, w), normalised;
    `alphas_cumprod` of the full diffusion (the model is called with original timesteps 0..T-1)."""
    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model_fn(x, t)
        abar = alphas_cumprod.to(x.device, torch.float64)[t].view(-1, 1, 1, 1)
        eps0 = (x[:, 0].double() - abar.sqrt() * first.to(x.device, torch.float64)) / (1 - abar).sqrt()
        out = out.clone()
        out[:, 0, :channels] = eps0.to(out.dtype)
        return out
    return fn
