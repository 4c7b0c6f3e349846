"""Optical flow -> RGB image, the input DINO sees (Eq. 13 of the paper).

    rgb = flow_to_rgb(flow)                       # (..., 2, H, W) -> (..., 3, H, W) in [0, 1]
    rgb = flow_to_rgb(flow, colour="middlebury")  # the authors' code: Baker et al.'s colour wheel

Convention: (u, v) in pixels, u to the right, v down (image coordinates), as RAFT and OpenCV return it.
"""
from __future__ import annotations

import math

import torch
from torchvision.utils import flow_to_image

COLOURS = ("hsv", "middlebury")


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB, hue in degrees (any real), s and v in [0, 1]; returns (..., 3, H, W) for (..., H, W) inputs.

    Written by hand because neither torch nor torchvision has an HSV -> RGB for tensors; this is the closed form
    c_n = v - v·s·clamp(min(k_n, 4 - k_n), 0, 1), k_n = (n + h/60) mod 6, n = 5, 3, 1 for R, G, B.
    """
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + h / 60.0, 6.0)
        out.append(v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=-3)


def flow_to_rgb(flow: torch.Tensor, colour: str = "hsv", eps: float = 1e-6) -> torch.Tensor:
    """Flow (..., 2, H, W) -> RGB (..., 3, H, W) float in [0, 1], each (H, W) frame normalised on its own.

    colour="hsv" (default, the paper's Eq. 13): M = sqrt(u² + v²), hue = atan2(v, u) / 2π · 360°, S = 1,
    V = M / M_max of the frame. Right = red (0°), down = yellow-green (90°), left = cyan (180°), up = violet
    (270°); zero flow is black (V = 0, never NaN).
    colour="middlebury": torchvision's `flow_to_image` (Baker et al. 2007 colour wheel, saturation carries the
    magnitude, zero flow is white), applied per frame so that each frame is normalised by its own maximum.
    """
    if flow.shape[-3] != 2:
        raise ValueError(f"flow must be (..., 2, H, W), got {tuple(flow.shape)}")
    flow = flow.float()
    if colour == "hsv":
        u, v = flow.unbind(-3)                                   # (..., H, W) each
        mag = torch.sqrt(u * u + v * v)
        mag_max = mag.flatten(-2).amax(-1)[..., None, None]      # per frame
        value = mag / mag_max.clamp_min(eps)
        hue = torch.atan2(v, u) * (180.0 / math.pi)              # (-180, 180]; hsv_to_rgb wraps it
        return hsv_to_rgb(hue, torch.ones_like(value), value).clamp(0.0, 1.0)
    if colour == "middlebury":
        lead, (h, w) = flow.shape[:-3], flow.shape[-2:]
        frames = flow.reshape(-1, 2, h, w)                      # (...) 2 h w -> n 2 h w
        rgb = torch.stack([flow_to_image(f) for f in frames]) if len(frames) else frames.new_zeros(0, 3, h, w)
        return (rgb.float() / 255.0).reshape(*lead, 3, h, w)
    raise ValueError(f"colour must be one of {COLOURS}, got {colour!r}")
