"""Gaussian diffusion: schedule, training losses (MSE + VB), DDIM / DDPM samplers, DPM-Solver++ / UniPC."""
from .losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl, training_losses
from .samplers import SOLVERS, ddim_sample, ddpm_sample, sample_with, solver_sample
from .schedule import GaussianDiffusion, space_timesteps

__all__ = [
    "GaussianDiffusion", "space_timesteps", "training_losses", "normal_kl",
    "discretized_gaussian_log_likelihood", "mean_flat", "ddim_sample", "ddpm_sample", "solver_sample", "sample_with",
    "SOLVERS",
]
