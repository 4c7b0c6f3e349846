"""FVD features as StyleGAN-V computes them (Skorokhodov et al. 2022, `fvd2048_16f`).

Protocol: 16 consecutive frames per clip, uint8 RGB; each frame bilinearly resized to 224×224,
values rescaled to [-1, 1]; the I3D's 400-d Kinetics logits (before softmax, averaged over time)
are the features; mean and covariance in float64; Fréchet distance between real and fake.
StyleGAN-V's TorchScript detector does the resize and rescale itself (`rescale=True, resize=True,
return_features=True`); for an `InceptionI3d` state dict we do the same steps here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

FVD_FRAMES = 16
I3D_SIZE = 224


def resize_frames(videos: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(b, t, h, w, 3) uint8 → (b, 3, t, size, size) float in [0, 255], frame by frame."""
    b = videos.shape[0]
    x = rearrange(videos, "b t h w c -> (b t) c h w").float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False)
    return rearrange(x, "(b t) c h w -> b c t h w", b=b)


class I3DFeatures:
    """Callable: uint8 videos (b, t, h, w, 3) → float32 (b, 400) FVD features."""

    name = "i3d"

    def __init__(self, detector, device="cpu"):
        self.detector, self.device = detector.to(device).eval(), torch.device(device)
        self.scripted = isinstance(detector, torch.jit.ScriptModule)

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        videos = torch.as_tensor(videos).to(self.device)
        if self.scripted:  # the TorchScript detector takes uint8 (b, 3, t, h, w) and resizes itself
            x = rearrange(videos, "b t h w c -> b c t h w").contiguous()
            return self.detector(x, rescale=True, resize=True, return_features=True).float()
        x = resize_frames(videos, I3D_SIZE) * (2.0 / 255.0) - 1.0  # (b, 3, t, 224, 224) in [-1, 1]
        return self.detector(x).float()
