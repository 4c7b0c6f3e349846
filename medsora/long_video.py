"""Image-conditioned and long videos from a first-frame checkpoint (beyond the paper; docs/first_frame.md).

    firsts = first_frame_latents(vae, norm, "frame.png", size=64)        # (k, C, h, w), normalised
    latents, videos = generate(draw, model_fn, vae, norm, noise, g, first=firsts, frames=40, guidance=2.0,
                               alphas_cumprod=diffusion.alphas_cumprod)   # frame 0 pinned to the given frame

A video longer than one clip is made segment after segment: each later segment is conditioned on the last decoded
frame of the one before, re-encoded by the VAE as a first frame; its own first decoded frame (that frame again) is
dropped when the segments are joined, and the joined video is cut to exactly `frames` frames.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data.clips import to_tensor
from .data.video import is_video_file, list_frame_images, natural_key, read_frames, to_rgb8
from .first_frame import guided, make_condition, pinned


def first_frame_files(path: str | Path) -> list[Path]:
    """An image file, a video file (its first frame is used), or a folder of them (natural order)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--first-frame {path}: no such file or folder")
    if path.is_dir():
        videos = sorted((p for p in path.iterdir() if p.is_file() and is_video_file(p)), key=lambda p: natural_key(p.name))
        files = sorted(list_frame_images(path) + videos, key=lambda p: natural_key(p.name))
        if not files:
            raise ValueError(f"--first-frame {path}: the folder holds no image or video file")
        return files
    return [path]


def read_first_frame(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) in [-1, 1], cropped and resized as training clips are (`to_tensor`)."""
    if is_video_file(path):
        frames = read_frames(path, [0], size)                              # (1, H, W, 3) uint8
    else:
        from PIL import Image

        try:
            with Image.open(path) as im:
                frames = np.array(to_rgb8(im))[None]          # a writable copy
        except Exception as e:  # noqa: BLE001 - PIL raises several types for what is not an image
            raise ValueError(f"--first-frame {path}: not a readable image or video ({type(e).__name__})") from None
    return to_tensor(frames, size)[0]


@torch.no_grad()
def encode_first_frames(vae, images: torch.Tensor, norm) -> torch.Tensor:
    """Frames (n, 3, H, W) in [-1, 1] -> normalised first latent frames (n, C, h, w). Each frame is encoded as a
    one-frame clip: the 3D causal VAE's first latent frame encodes the first pixel frame alone."""
    z = vae.encode(images[:, None].to(vae.device, vae.dtype))[:, 0].float().cpu()
    return norm.normalize(z)


def first_frame_latents(vae, norm, path: str | Path, size: int) -> torch.Tensor:
    """The normalised first latent frames (k, C, h, w) of the k images / videos at `path`."""
    images = torch.stack([read_first_frame(p, size) for p in first_frame_files(path)])
    return encode_first_frames(vae, images, norm)


def segments_needed(frames: int, clip: int) -> int:
    """Segments of `clip` decoded frames whose join (the first frame of each later one dropped) has >= `frames`."""
    return 1 + max(0, -(-(frames - clip) // (clip - 1))) if clip > 1 else frames


@torch.no_grad()
def generate(draw_fn: Callable, model_fn: Callable, vae, norm, noise: torch.Tensor, generator: torch.Generator,
             first: torch.Tensor | None = None, frames: int | None = None,
             guidance: float = 1.0, alphas_cumprod: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Videos of `frames` frames (default: one clip) from the noise (n, f_v, C, h, w) of the first segment; later
    segments draw theirs from `generator`. `draw_fn(model_fn, noise) -> x_0`; `model_fn(x, t, cond=None)`;
    `first` (n, C, h, w): normalised first latent frames (None: an unconditional start). With `alphas_cumprod` (the
    full diffusion's) a conditioned segment's frame 0 is pinned to its first latent (`first_frame.pinned`). Returns the VAE-scale
    latents of all segments (n, S·f_v, C, h, w) and the joined videos (n, frames, 3, H, W) in [-1, 1]."""
    fv, channels = noise.shape[1], noise.shape[2]
    latents, videos, total = [], [], 0
    while True:
        fn = model_fn if first is None else guided(model_fn, make_condition(first, fv).to(noise), guidance, channels)
        if first is not None and alphas_cumprod is not None:
            fn = pinned(fn, first, alphas_cumprod, channels)
        z = norm.denormalize(draw_fn(fn, noise)).cpu()
        video = vae.decode(z.to(vae.device, vae.dtype)).float().cpu()      # (n, T, 3, H, W)
        latents.append(z)
        videos.append(video if not videos else video[:, 1:])               # a later segment repeats its first frame
        total += videos[-1].shape[1]
        if frames is None or total >= frames:
            break
        first = encode_first_frames(vae, video[:, -1], norm)
        noise = torch.randn(noise.shape, generator=generator)
    return torch.cat(latents, dim=1), torch.cat(videos, dim=1)[:, :frames]
