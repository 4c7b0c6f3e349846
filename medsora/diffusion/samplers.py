"""Samplers: DDIM (respaced, eta) and DDPM ancestral (learned or fixed variance), x_T -> x_0; and the multistep
ODE/SDE solvers DPM-Solver++ 2M (and its SDE variant) and UniPC through diffusers' schedulers (`solver_sample`).

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


SOLVERS = ("dpmpp-2m", "dpmpp-2m-sde", "unipc")


def _scheduler(diffusion: GaussianDiffusion, solver: str):
    """diffusers' multistep solver on this diffusion's own betas (ε-prediction; the learned variance is not used:
    these solvers integrate the probability-flow ODE, or for the SDE variant draw their own noise)."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = dict(num_train_timesteps=diffusion.num_timesteps, trained_betas=diffusion.betas.cpu().numpy().copy(),
                  prediction_type="epsilon", timestep_spacing="linspace")
    if solver == "unipc":
        return UniPCMultistepScheduler(solver_order=2, predict_x0=True, **common)
    algorithm = "sde-dpmsolver++" if solver == "dpmpp-2m-sde" else "dpmsolver++"
    # steps uniform in log-SNR (Lu et al.'s choice): on the closed-form Gaussian case 25 of them land closer to the
    # ODE's solution than DDIM's 250 (tests/test_solvers.py), diffusers' default linspace needs ~35
    return DPMSolverMultistepScheduler(solver_order=2, algorithm_type=algorithm, use_lu_lambdas=True, **common)


@torch.no_grad()
def solver_sample(diffusion: GaussianDiffusion, model_fn: ModelFn, shape, steps: int = 20, solver: str = "dpmpp-2m",
                  *, generator: torch.Generator | None = None, seed: int | None = None, device="cpu",
                  noise: torch.Tensor | None = None, progress: bool = True,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """DPM-Solver++ (2M, or its SDE variant) or UniPC (2nd order) in `steps` model calls, through diffusers'
    schedulers. `diffusion` must be the full (not respaced) diffusion: the solvers choose their own timesteps.
    The model's ε is read as DDIM reads it (`p_mean_variance`). Returns x_0 of `shape`."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if not torch.equal(diffusion.timestep_map, torch.arange(diffusion.num_timesteps)):
        raise ValueError("solver_sample needs the full diffusion, not a respaced one")
    sched = _scheduler(diffusion, solver)
    sched.set_timesteps(steps, device=torch.device(device))
    x, generator = _setup(shape, generator, seed, device, noise, dtype)
    for t in tqdm(sched.timesteps, disable=not progress, desc=solver):
        tt = torch.full((shape[0],), int(t), device=x.device, dtype=torch.long)
        eps = diffusion.p_mean_variance(model_fn, x, tt)["eps"]
        extra = {"generator": generator} if solver == "dpmpp-2m-sde" else {}   # the only one that draws noise
        x = sched.step(eps, t, x, **extra).prev_sample
    return x


def sample_with(sampler: str, diffusion: GaussianDiffusion, model_fn: ModelFn, noise: torch.Tensor,
                generator: torch.Generator | None, steps: int, eta: float = 0.0, device="cpu") -> torch.Tensor:
    """x_0 from the noise x_T with the sampler named `sampler` (ddim, ddpm or one of SOLVERS), no progress bar."""
    if sampler == "ddim":
        return ddim_sample(diffusion, model_fn, noise.shape, steps=steps, eta=eta, noise=noise, device=device,
                           progress=False)
    if sampler == "ddpm":
        return ddpm_sample(diffusion, model_fn, noise.shape, steps=steps, noise=noise, generator=generator,
                           device=device, progress=False)
    return solver_sample(diffusion, model_fn, noise.shape, steps=steps, solver=sampler, noise=noise,
                         generator=generator, device=device, progress=False)
