"""Per-channel latent normalisation: z' = (z - shift) * scale, as Stable Diffusion 3 / Flux store `shift_factor`
and `scaling_factor`, but per channel and measured over the latent cache.

A VAE with a published factor (CogVideoX-2b: 1.15258426, CogVideoX-5b: 0.7, applied inside `VideoVAE.encode`)
keeps it: its norm is the identity on top. Any other VAE (the `tiny` VAE: random, or trained by the demo with one
global factor) gets a per-channel shift and scale measured over every cached clip, so that the diffusion model sees latents of per-channel mean 0 and std 1, as its noise.

    norm = LatentNorm.measure(count, sum, sum_sq)   # from the cache's running sums (float64)
    z_model = norm.normalize(z_vae);  z_vae = norm.denormalize(z_model)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("auto", "measured", "published")


@dataclass(frozen=True)
class LatentNorm:
    shift: tuple[float, ...]   # per latent channel
    scale: tuple[float, ...]
    kind: str = "identity"     # identity (the VAE's published factor) | measured

    @classmethod
    def identity(cls, channels: int) -> "LatentNorm":
        return cls((0.0,) * channels, (1.0,) * channels, "identity")

    @classmethod
    def measure(cls, count: float, total: torch.Tensor, total_sq: torch.Tensor) -> "LatentNorm":
        """From per-channel sums of z and z² over `count` values each (float64): shift = mean, scale = 1/std."""
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(1e-12)
        return cls(tuple(mean.tolist()), tuple(var.rsqrt().tolist()), "measured")

    def _view(self, z: torch.Tensor, values) -> torch.Tensor:
        # latents are (..., C, h, w): channel axis -3
        return torch.tensor(values, dtype=torch.float64).to(device=z.device, dtype=z.dtype).view(-1, 1, 1)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "identity":
            return z
        return (z - self._view(z, self.shift)) * self._view(z, self.scale)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "identity":
            return z
        return z / self._view(z, self.scale) + self._view(z, self.shift)

    def to_dict(self) -> dict:
        return {"shift": list(self.shift), "scale": list(self.scale), "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict | None, channels: int | None = None) -> "LatentNorm":
        """From `to_dict`'s output; None (a cache or run from before normalisation) is the identity."""
        if d is None:
            if channels is None:
                raise ValueError("LatentNorm.from_dict(None) needs the number of channels")
            return cls.identity(channels)
        return cls(tuple(float(v) for v in d["shift"]), tuple(float(v) for v in d["scale"]), d.get("kind", "measured"))


PUBLISHED = (1.15258426, 0.7)   # CogVideoX-2b and CogVideoX-5b VAE scaling factors


def wants_measured(mode: str, scaling_factor: float) -> bool:
    """`vae.latent_norm`: measured, published (the VAE's own factor alone), or auto = published for a VAE whose
    scaling factor is one of the published CogVideoX values, measured for any other."""
    if mode not in MODES:
        raise ValueError(f"vae.latent_norm must be one of {', '.join(MODES)}, got {mode!r}")
    published = any(abs(scaling_factor - f) < 1e-6 for f in PUBLISHED)
    return mode == "measured" or (mode == "auto" and not published)
