"""Gaussian diffusion tables and posteriors (linear betas, eps-prediction, learned-range variance).

The maths follows improved-DDPM / DiT (`diffusion/gaussian_diffusion.py`), written compactly around one
class. Hand-written rather than diffusers because training needs the learned-range VB term and the
respacing of improved-DDPM on the same float64 tables, which diffusers' schedulers do not provide.

Timesteps are indices into this object's tables; a respaced object (`respace`) keeps `timestep_map`
so the model is always called with the original timestep in [0, 1000).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .losses import training_losses

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def space_timesteps(num_timesteps: int, steps: int, spacing: str = "uniform") -> list[int]:
    """Pick `steps` of `num_timesteps` original timesteps, ascending.

    spacing="ddim":    stride s with len(range(0, T, s)) == steps, as DiT's `space_timesteps(T, "ddim<steps>")`
                       (1000/250 -> 0, 4, ..., 996; the same steps as diffusers' "leading" spacing).
    spacing="uniform": `steps` evenly spaced points from 0 to T-1 inclusive, as DiT's `space_timesteps(T, "<steps>")`.
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps}], got {steps}")
    if spacing == "ddim":
        for stride in range(1, num_timesteps + 1):
            if len(range(0, num_timesteps, stride)) == steps:
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"no integer stride gives {steps} ddim steps out of {num_timesteps}; "
                         f"pick steps = ceil({num_timesteps}/stride) or spacing='uniform'")
    if spacing == "uniform":
        return sorted(set(np.linspace(0, num_timesteps - 1, steps).round().astype(int).tolist()))
    raise ValueError(f"spacing must be 'ddim' or 'uniform', got {spacing!r}")


def _extract(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """table[t] as x's dtype/device, shaped (B, 1, ..., 1) to broadcast against x."""
    out = table.to(t.device)[t].to(device=x.device, dtype=x.dtype)
    return out.reshape(-1, *([1] * (x.ndim - 1)))


def _model_output(out) -> torch.Tensor:
    """A model may return (output, extras); the diffusion only needs the output."""
    return out[0] if isinstance(out, (tuple, list)) else out


class GaussianDiffusion:
    """Linear-beta Gaussian diffusion with eps-prediction.

    learn_sigma=True: the model outputs 2C channels along `channel_dim` (eps, v); v in [-1, 1] interpolates
    the log variance between the clipped log posterior variance (v=-1) and log beta_t (v=+1).
    learn_sigma=False: the model outputs C channels; the variance is fixed to beta_t ("fixed large", DiT's
    default when not learning sigma).
    Layout: x is (B, F, C, H, W) with channel_dim=2, or (B, C, H, W) with channel_dim=1.
    """

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 learn_sigma: bool = True, channel_dim: int = 2, *,
                 betas: torch.Tensor | None = None, timestep_map: torch.Tensor | None = None):
        if betas is None:
            betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D tensor with values in (0, 1]")
        self.learn_sigma, self.channel_dim = learn_sigma, channel_dim
        self.num_timesteps = T = len(betas)
        self.timestep_map = torch.arange(T) if timestep_map is None else torch.as_tensor(timestep_map).long()

        # all tables float64, shape (T,)
        self.betas = betas
        alphas = 1.0 - betas
        self.alphas_cumprod = ac = torch.cumprod(alphas, 0)
        self.alphas_cumprod_prev = ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        self.sqrt_alphas_cumprod = ac.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - ac).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / ac).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / ac - 1.0).sqrt()
        # posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = pv = betas * (1.0 - ac_prev) / (1.0 - ac)
        # the posterior variance is 0 at t=0: its log is clipped to the t=1 value
        self.posterior_log_variance_clipped = torch.cat([pv[1:2], pv[1:]]).log() if T > 1 else betas.log()
        self.posterior_mean_coef1 = betas * ac_prev.sqrt() / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac)
        self.log_betas = betas.log()

    def __repr__(self) -> str:
        return (f"GaussianDiffusion(num_timesteps={self.num_timesteps}, learn_sigma={self.learn_sigma}, "
                f"channel_dim={self.channel_dim}, timesteps {int(self.timestep_map[0])}..{int(self.timestep_map[-1])})")

    def respace(self, steps: int, spacing: str = "uniform") -> "GaussianDiffusion":
        """A diffusion over `steps` of this one's timesteps, betas rescaled as improved-DDPM's SpacedDiffusion
        (beta'_i = 1 - abar[k_i] / abar[k_{i-1}], so abar' equals abar at the kept steps)."""
        keep = torch.tensor(space_timesteps(self.num_timesteps, steps, spacing))
        ac = self.alphas_cumprod[keep]
        betas = 1.0 - ac / torch.cat([ac.new_ones(1), ac[:-1]])
        return GaussianDiffusion(learn_sigma=self.learn_sigma, channel_dim=self.channel_dim,
                                 betas=betas, timestep_map=self.timestep_map[keep])

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> torch.Tensor:
        """Uniform training timesteps, LongTensor (batch,) in [0, num_timesteps)."""
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
        noise = torch.randn_like(x0) if noise is None else noise
        return _extract(self.sqrt_alphas_cumprod, t, x0) * x0 + _extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def q_posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        mean = _extract(self.posterior_mean_coef1, t, x_t) * x0 + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _extract(self.posterior_variance, t, x_t), _extract(self.posterior_log_variance_clipped, t, x_t)

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return _extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    def p_mean_variance(self, model_fn: ModelFn, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool = False) -> dict:
        """p(x_{t-1} | x_t) from the model: dict of mean, log_variance, pred_x0, eps (all shaped like x_t).

        `t` indexes this object's tables; the model is called with the original timestep timestep_map[t].
        """
        out = _model_output(model_fn(x_t, self.timestep_map.to(t.device)[t])).to(x_t.dtype)
        if self.learn_sigma:
            eps, v = out.chunk(2, dim=self.channel_dim)
            min_log = _extract(self.posterior_log_variance_clipped, t, x_t)
            max_log = _extract(self.log_betas, t, x_t)
            frac = (v + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
        else:
            eps = out
            # fixed large: beta_t, with the t=0 entry set to the posterior variance at t=1 (as DiT)
            large = torch.cat([self.posterior_variance[1:2], self.betas[1:]])
            log_variance = _extract(large.log(), t, x_t).expand_as(x_t)
        if eps.shape != x_t.shape:
            raise ValueError(f"model output {tuple(out.shape)} does not match x {tuple(x_t.shape)} "
                             f"(learn_sigma={self.learn_sigma}, channel_dim={self.channel_dim})")
        pred_x0 = self.predict_x0_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
            eps = self.predict_eps_from_x0(x_t, t, pred_x0)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {"mean": mean, "log_variance": log_variance, "pred_x0": pred_x0, "eps": eps}

    def training_losses(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> dict:
        """Per-sample loss = mse(eps) + vb; see `losses.training_losses`."""
        return training_losses(self, model_fn, x0, t, noise=noise, weight=weight)
