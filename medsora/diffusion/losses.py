"""Training loss: MSE on eps + variational-bound (VB) term for the learned variance.

diffusers has no VB training loss, so this part is ours (maths of improved-DDPM's "hybrid" loss, as DiT).
"""
from __future__ import annotations

import math

import torch


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL( N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)) ) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
                                        half_bin: float = 1.0 / 255) -> torch.Tensor:
    """Elementwise log-probability (nats) of the bin [x - half_bin, x + half_bin] under N(means, exp(log_scales)^2).

    x is taken to lie in [-1, 1]; the edge bins extend to -inf (x < -0.999) and +inf (x > 0.999), as the
    8-bit decoder of Ho et al. Uses the exact normal CDF (DiT uses a tanh approximation of it).
    """
    inv_std = torch.exp(-log_scales)
    plus_in = inv_std * (x - means + half_bin)
    min_in = inv_std * (x - means - half_bin)
    log_cdf_plus = torch.special.log_ndtr(plus_in)                       # log P(z < plus)
    log_one_minus_cdf_min = torch.special.log_ndtr(-min_in)              # log P(z > min)
    # bin mass, taken on the side of the mean where the CDF is small (no cancellation near 1)
    upper_side = min_in > 0
    delta = torch.where(upper_side, torch.special.ndtr(-min_in) - torch.special.ndtr(-plus_in),
                        torch.special.ndtr(plus_in) - torch.special.ndtr(min_in))
    log_delta = torch.log(delta.clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def mean_flat(x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over all non-batch dims -> (B,). `weight` covers the leading dims of x, e.g. (B,) or (B, F) for
    (B, F, C, H, W): a weighted mean, so a 0/1 frame mask averages over the kept frames only."""
    dims = list(range(1, x.ndim))
    if weight is None:
        return x.mean(dim=dims)
    w = weight.to(x.dtype).reshape(*weight.shape, *([1] * (x.ndim - weight.ndim))).expand_as(x)
    return (x * w).sum(dim=dims) / w.sum(dim=dims).clamp(min=1e-12)


def vb_terms_bpd(diffusion, model_fn, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample VB term in bits per dim: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0,
    the discretized decoder NLL -log p(x_0|x_1) at t = 0."""
    true_mean, _, true_log_var = diffusion.q_posterior_mean_variance(x0, x_t, t)
    p = diffusion.p_mean_variance(model_fn, x_t, t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"]), weight) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])
    nll = mean_flat(nll, weight) / math.log(2.0)
    return torch.where(t == 0, nll, kl)


def training_losses(diffusion, model_fn, x0: torch.Tensor, t: torch.Tensor,
                    noise: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> dict:
    """Per-sample losses for a batch x0 (B, ...) at timesteps t (B,).

    Returns {"loss", "mse", "vb"}: (B,) tensors, loss = mse + vb (vb is 0 when learn_sigma=False), and
    "extra" when model_fn returns a tuple (output, *extra) (e.g. block features for an alignment loss).
    The VB term sees the eps half detached ("stop-gradient mean"), so it only trains the variance channels.
    """
    noise = torch.randn_like(x0) if noise is None else noise
    x_t = diffusion.q_sample(x0, t, noise)
    raw = model_fn(x_t, diffusion.timestep_map.to(t.device)[t])
    out = (raw[0] if isinstance(raw, (tuple, list)) else raw).to(x0.dtype)
    terms = {}
    if diffusion.learn_sigma:
        eps, v = out.chunk(2, dim=diffusion.channel_dim)
        frozen = torch.cat([eps.detach(), v], dim=diffusion.channel_dim)
        terms["vb"] = vb_terms_bpd(diffusion, lambda *_: frozen, x0, x_t, t, weight)
    else:
        eps = out
        terms["vb"] = torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
    if eps.shape != x0.shape:
        raise ValueError(f"model output {tuple(out.shape)} does not match x0 {tuple(x0.shape)} "
                         f"(learn_sigma={diffusion.learn_sigma}, channel_dim={diffusion.channel_dim})")
    terms["mse"] = mean_flat((noise - eps) ** 2, weight)
    terms["loss"] = terms["mse"] + terms["vb"]
    if isinstance(raw, (tuple, list)):
        terms["extra"] = raw[1] if len(raw) == 2 else tuple(raw[1:])
    return terms
