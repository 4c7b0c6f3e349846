"""The figures of issue #18 for a first-frame run, measured on its own outputs (the demo's "first frame" stage and
benchmarks/long_video.py):

    fit = first_frame_fit(vae, samples, firsts, size)     # PSNR of each sample's frame 0 vs its conditioning frame,
                                                          # beside the VAE's own reconstruction PSNR of that frame
    c = continuity(video, clip, vae.temporal_factor)      # a long video's frame-to-frame differences: at segment
                                                          # boundaries vs inside segments (goal: <= 1.5x the median)
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .data.video import probe, read_frames
from .long_video import read_first_frame


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two images on the 0-255 scale."""
    return 10 * math.log10(255 ** 2 / max(float(((np.asarray(a, np.float64) - b) ** 2).mean()), 1e-12))


def video_frames(path: Path) -> np.ndarray:
    """All frames of a written video, float64 (T, H, W, 3) on the 0-255 scale."""
    return read_frames(path, range(probe(path).num_frames)).astype(np.float64)


@torch.no_grad()
def first_frame_fit(vae, samples: list[Path], firsts: list[Path], size: int) -> dict:
    """Mean PSNR of each sample's first decoded frame against its conditioning frame (`firsts[k]`, read as sampling
    reads it) and of the VAE's own reconstruction of that frame; `gap` = VAE - sample (goal: <= 1 dB)."""
    got, own = [], []
    for video, first in zip(samples, firsts):
        x = read_first_frame(first, size)                                          # (3, H, W) in [-1, 1]
        target = ((x + 1) * 127.5).round().permute(1, 2, 0).numpy()
        rec = vae.decode(vae.encode(x[None, None]))[0, 0].float().cpu()
        own.append(psnr8(((rec.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy(), target))
        got.append(psnr8(video_frames(video)[0], target))
    sample, vae_own = float(np.mean(got)), float(np.mean(own))
    return {"sample_psnr": sample, "vae_psnr": vae_own, "gap": vae_own - sample, "videos": len(got)}


def continuity(video: np.ndarray, clip: int, group: int) -> dict:
    """Mean absolute frame-to-frame difference (grey levels) of a long video (T, H, W, 3) joined from segments of
    `clip` frames (each later one without its repeated first frame): mean at the segment boundaries, median inside
    segments, mean inside segments between the VAE's latent groups of `group` frames, boundary / median, and every
    step (`steps[i]`: frame i -> i + 1)."""
    diffs = np.abs(np.diff(np.asarray(video, np.float64), axis=0)).mean(axis=(1, 2, 3))   # diffs[i]: i -> i + 1
    step = clip - 1
    cut = {i for i in range(step, len(diffs), step)}          # last frame of a segment -> first new one
    inside = [d for i, d in enumerate(diffs) if i not in cut]
    groups = [d for i, d in enumerate(diffs) if i not in cut and (i % step) % group == 0]
    boundary = [diffs[i] for i in sorted(cut)]
    out = {"boundary": float(np.mean(boundary)) if boundary else float("nan"), "inside_median": float(np.median(inside)),
           "between_groups": float(np.mean(groups)) if groups else float("nan"), "boundaries": len(boundary),
           "steps": diffs.tolist()}
    out["ratio"] = out["boundary"] / max(out["inside_median"], 1e-9)
    return out
