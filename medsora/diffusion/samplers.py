"""Samplers: DDIM (respaced, eta) and DDPM ancestral (learned or fixed variance), x_T -> x_0.

Both run on a respaced copy of the diffusion (improved-DDPM SpacedDiffusion), so the model is called with the
original timesteps. Hand-written (not diffusers' schedulers) so that sampling uses the same learned-range
variance and float64 tables as training; the tests check them step by step against diffusers.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .schedule import GaussianDiffusion, ModelFn, _extract


def _setup(shape, generator, seed, device, noise, dtype):
    device = torch.device(device)
    if generator is None:
        generator = torch.Generator(device)
        generator.manual_seed(0 if seed is None else seed)
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype) if noise is None else noise.to(device, dtype)
    return x, generator


@torch.no_grad()
def ddim_sample(diffusion: GaussianDiffusion, model_fn: ModelFn, shape, steps: int | None = 250, eta: float = 0.0, *,
                generator: torch.Generator | None = None, seed: int | None = None, device="cpu",
                noise: torch.Tensor | None = None, clip_denoised: bool = False, spacing: str = "ddim",
                progress: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021) over `steps` respaced timesteps ("ddim" spacing: 0, 4, ..., 996 for 250).

    eta=0 is deterministic; the variance channels of a learn_sigma model are ignored. `noise` is x_T (else drawn
    from `generator`, or a new generator seeded with `seed`). Returns x_0 of `shape`.
    """
    diff = diffusion if steps is None else diffusion.respace(steps, spacing)
    x, generator = _setup(shape, generator, seed, device, noise, dtype)
    for i in tqdm(range(diff.num_timesteps - 1, -1, -1), disable=not progress, desc="ddim"):
        t = torch.full((shape[0],), i, device=x.device, dtype=torch.long)
        out = diff.p_mean_variance(model_fn, x, t, clip_denoised)
        ab, ab_prev = _extract(diff.alphas_cumprod, t, x), _extract(diff.alphas_cumprod_prev, t, x)
        sigma = eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt()
        x = ab_prev.sqrt() * out["pred_x0"] + (1 - ab_prev - sigma ** 2).sqrt() * out["eps"]
        if eta > 0 and i > 0:
            x = x + sigma * torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


@torch.no_grad()
def ddpm_sample(diffusion: GaussianDiffusion, model_fn: ModelFn, shape, steps: int | None = None, *,
                generator: torch.Generator | None = None, seed: int | None = None, device="cpu",
                noise: torch.Tensor | None = None, clip_denoised: bool = False, spacing: str = "uniform",
                progress: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Ancestral sampling x_{t-1} ~ N(mean, exp(log_variance)) with the model's (learned or fixed) variance.

    steps=None runs all of the diffusion's timesteps; otherwise it respaces to `steps` ("uniform": 0 ... 999).
    Noise is drawn after x_T once per step with t > 0. Returns x_0 of `shape`.
    """
    diff = diffusion if steps is None else diffusion.respace(steps, spacing)
    x, generator = _setup(shape, generator, seed, device, noise, dtype)
    for i in tqdm(range(diff.num_timesteps - 1, -1, -1), disable=not progress, desc="ddpm"):
        t = torch.full((shape[0],), i, device=x.device, dtype=torch.long)
        out = diff.p_mean_variance(model_fn, x, t, clip_denoised)
        x = out["mean"]
        if i > 0:
            x = x + (0.5 * out["log_variance"]).exp() * torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    return x
