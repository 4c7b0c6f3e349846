"""The video Inception Score (ISv, Saito et al. 2017) as StyleGAN-V computes it (`isv2048_ucf`).

Detector: StyleGAN-V's TorchScript `c3d_ucf101.pt`, a C3D fine-tuned on UCF-101 (ported from TGANv2's chainer
checkpoint); it takes uint8 clips (b, 3, 16, h, w) at the dataset's resolution, does its own resize and mean
subtraction, and returns the 101 class probabilities. Protocol: 2048 generated 16-frame clips (their first 16
frames), probabilities shuffled with `np.random.RandomState(42)`, then 10 equal splits; per split
exp(mean_x KL(p(y|x) || p(y))); the mean and std over the splits are reported. Only the TorchScript file is
accepted: there is no other published C3D-UCF101 checkpoint whose numbers match the tables.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..weights_check import WeightsError
from .weights import is_torchscript, load_torchscript, refetch

ISV_FRAMES = 16
ISV_SHUFFLE_SEED = 42


def load_c3d(path: str | Path, device="cpu"):
    """StyleGAN-V's TorchScript C3D detector; any other file is refused in one line naming it."""
    path = Path(path)
    if not path.is_file() or not is_torchscript(path):
        raise WeightsError(f"{path} is not a TorchScript archive: ISv needs StyleGAN-V's c3d_ucf101.pt; "
                           f"{refetch(path.with_name('c3d_ucf101.pt'))}")
    return load_torchscript(path, device)


class C3DProbs:
    """Callable: uint8 videos (b, t, h, w, 3) -> float64 (b, 101) class probabilities of their first 16 frames."""

    name = "c3d"

    def __init__(self, detector, device="cpu", path: str | Path = "c3d_ucf101.pt"):
        self.detector, self.device, self.path = detector.to(device).eval(), torch.device(device), Path(path)

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        x = rearrange(torch.as_tensor(videos)[:, :ISV_FRAMES].to(self.device), "b t h w c -> b c t h w").contiguous()
        probs = self.detector(x).double().cpu()
        if probs.ndim != 2 or (probs < 0).any() or not torch.allclose(probs.sum(1), torch.ones_like(probs[:, 0]), atol=1e-3):
            raise WeightsError(f"{self.path} does not return class probabilities (got shape {tuple(probs.shape)}); "
                               f"use StyleGAN-V's c3d_ucf101.pt, {refetch(self.path.with_name('c3d_ucf101.pt'))}")
        return probs


def video_inception_score(probs, splits: int = 10, seed: int | None = ISV_SHUFFLE_SEED) -> tuple[float, float]:
    """(mean, std) over `splits` splits of exp(E_x KL(p(y|x) || p(y))); the rows are shuffled first with
    RandomState(seed), as StyleGAN-V (seed None: in the given order)."""
    probs = np.array(probs, dtype=np.float64)
    if seed is not None:
        np.random.RandomState(seed).shuffle(probs)
    n = len(probs)
    splits = max(1, min(splits, n))
    scores = []
    for i in range(splits):
        part = probs[i * n // splits:(i + 1) * n // splits]
        kl = part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(part.mean(0, keepdims=True), 1e-30, None)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
