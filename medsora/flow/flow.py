"""Optical flow of a clip: F+1 frames -> F flows between consecutive frames, RAFT or Farnebäck behind one call.

    est = build_flow("raft_large", weights="raft_large_C_T_SKHT_V2-ff5fadd5.pth")   # or "hub", or "farneback"
    flow = est(frames)            # (B, F+1, 3, H, W) in [-1, 1] -> (B, F, 2, H, W); also (F+1, 3, H, W) -> (F, 2, H, W)
    est.name                      # "raft_large" | "raft_small" | "farneback": record it in the cache's config

Flow i maps frame i to frame i+1: (u, v) in pixels, u to the right, v down, i.e. frame_i(y, x) ≈ frame_{i+1}(y+v, x+u).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from einops import rearrange
from torch import nn
from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights, raft_large, raft_small

from ..weights_check import load_checked, read_weights

METHODS = ("raft_large", "raft_small", "farneback")

_RAFT = {
    "raft_large": (raft_large, Raft_Large_Weights.DEFAULT),
    "raft_small": (raft_small, Raft_Small_Weights.DEFAULT),
}


def _pairs(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(B, F+1, 3, H, W) or (F+1, 3, H, W) -> first and second frames of each pair, (B·F, 3, H, W) each, and B
    (0 when the input had no batch axis)."""
    batch = frames.shape[0] if frames.ndim == 5 else 0
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[2] != 3 or frames.shape[1] < 2:
        raise ValueError(f"frames must be (B, F+1, 3, H, W) with F >= 1, got {tuple(frames.shape)}")
    first = rearrange(frames[:, :-1], "b f c h w -> (b f) c h w")
    second = rearrange(frames[:, 1:], "b f c h w -> (b f) c h w")
    return first, second, batch


def _unpair(flow: torch.Tensor, batch: int) -> torch.Tensor:
    """(B·F, 2, H, W) -> (B, F, 2, H, W), or (F, 2, H, W) when the input had no batch axis."""
    return rearrange(flow, "(b f) c h w -> b f c h w", b=batch) if batch else flow


class RAFTFlow(nn.Module):
    """torchvision RAFT on the consecutive pairs of a clip, `batch_size` pairs at a time.

    weights: a local .pth state dict in torchvision's format (the files under
    https://download.pytorch.org/models/raft_*.pth), "hub" for torchvision's DEFAULT weights (its cache, or a
    download when online), or None for random initialisation (tests only: the flow is meaningless).
    The input goes through the weights' own transforms (`Raft_*_Weights.DEFAULT.transforms()`), which take
    [0, 1] floats: the clip's [-1, 1] is mapped to [0, 1] first (the authors fed [-1, 1] to a 0-255 model).
    num_flow_updates: RAFT's refinement iterations; the flow is the last one's. torchvision's default is 12, the
    authors' train.py runs 20 (`iters=20`), which is what `flow.raft_iters` defaults to.
    """

    def __init__(self, name: str = "raft_large", weights: str | Path | None = "hub", num_flow_updates: int = 12,
                 batch_size: int = 16):
        super().__init__()
        if name not in _RAFT:
            raise ValueError(f"RAFT model must be one of {tuple(_RAFT)}, got {name!r}")
        if num_flow_updates < 1:
            raise ValueError(f"RAFT needs num_flow_updates >= 1, got {num_flow_updates}")
        builder, default = _RAFT[name]
        self.name, self.num_flow_updates, self.batch_size = name, num_flow_updates, batch_size
        self.transforms = default.transforms()
        if weights == "hub":
            try:
                self.model = builder(weights=default, progress=False)
            except (OSError, RuntimeError) as e:       # offline and not in torchvision's cache (URLError is OSError)
                raise FileNotFoundError(f"could not get {name} weights from torchvision's cache or {default.url}: "
                                        f"{e}. Download the file and pass its path as weights.") from e
        else:
            self.model = builder(weights=None, progress=False)
            if weights is not None:
                path = Path(weights).expanduser()
                if not path.is_file():
                    raise FileNotFoundError(
                        f"RAFT weights not found: {path}. Download {default.url} (torchvision's {name} weights) "
                        f"and pass its path, or use weights='hub' with internet access.")
                source = f"{default.url} (torchvision's {name} weights)"
                load_checked(self.model, read_weights(path, source), f"{path} does not hold {name} weights",
                             f"download {source} and pass its path")
        self.model.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        first, second, batch = _pairs(frames)
        n, h, w = first.shape[0], first.shape[-2], first.shape[-1]
        if h % 8 or w % 8:
            raise ValueError(f"RAFT needs H and W divisible by 8, got {h}x{w}")
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, n, self.batch_size):
            a = ((first[i:i + self.batch_size].float() + 1) / 2).clamp(0, 1).to(device)   # [-1, 1] -> [0, 1]
            b = ((second[i:i + self.batch_size].float() + 1) / 2).clamp(0, 1).to(device)
            a, b = self.transforms(a, b)                                                  # -> what the weights expect
            out.append(self.model(a, b, num_flow_updates=self.num_flow_updates)[-1])     # last refinement
        return _unpair(torch.cat(out).to(frames.device), batch)                          # (b f) 2 h w


class FarnebackFlow(nn.Module):
    """OpenCV's Farnebäck dense flow on grey uint8 frames: needs no weights, runs on the CPU.

    Parameters are cv2.calcOpticalFlowFarneback's, defaults as in OpenCV's own examples.
    """

    name = "farneback"

    def __init__(self, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15, iterations: int = 3,
                 poly_n: int = 5, poly_sigma: float = 1.2):
        super().__init__()
        self.params = dict(pyr_scale=pyr_scale, levels=levels, winsize=winsize, iterations=iterations,
                           poly_n=poly_n, poly_sigma=poly_sigma, flags=0)

    @staticmethod
    def _grey(x: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) in [-1, 1] -> (N, H, W) uint8 luma (ITU-R 601, as cv2.COLOR_RGB2GRAY)."""
        rgb = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
        grey = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
        return grey.round().to(torch.uint8).numpy()

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        first, second, batch = _pairs(frames)
        a, b = self._grey(first), self._grey(second)
        flow = np.stack([cv2.calcOpticalFlowFarneback(p, q, None, **self.params) for p, q in zip(a, b)])
        flow = rearrange(torch.from_numpy(flow), "n h w c -> n c h w")                   # (b f) h w 2 -> (b f) 2 h w
        return _unpair(flow.to(frames.device), batch)


def build_flow(method: str = "raft_large", weights: str | Path | None = "hub", **kwargs) -> nn.Module:
    """The flow estimator named by `method` (one of METHODS); `weights` only matters for RAFT."""
    if method == "farneback":
        return FarnebackFlow(**kwargs)
    if method in _RAFT:
        return RAFTFlow(method, weights, **kwargs)
    raise ValueError(f"flow method must be one of {METHODS}, got {method!r}")
