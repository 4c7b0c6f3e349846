"""The training dataset: clips of F+1 frames (every `stride`-th frame) plus joint-training images.

    ds = ClipDataset(root, cfg.data, seed=0)
    item = ds[i]   # {"video": (F+1, 3, S, S) float in [-1, 1], "images": (N, 3, S, S), "flip": bool, ...}

Clip `index` is a window of each usable source (the non-overlapping windows, so that their number is
fixed); each fetch takes its F+1 frames from a start drawn afresh inside the window (the authors' random
temporal crop), and joint-training images are single frames drawn from *other* sources. A latent cache
instead encodes `offsets` evenly spaced starts per window (`load_clip(i, offset=o, offsets=K)`) and one
chunk of images of the clip's *own* source, which training appends to clips of other sources. Randomness
(start, flip, images) comes from a generator seeded by (seed, epoch, index): the same seed gives the same
data, and `set_epoch` changes it between epochs. A file that fails to decode is logged once and another clip is
taken; one bad file never stops an epoch.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from ..errors import MedsoraError
from .index import Entry, build_index, clip_span, clip_starts
from .video import VideoError, read_frames

log = logging.getLogger(__name__)


def to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, size, size) in [-1, 1]: centre square crop, then resize.

    Cropping the centre square of the short side and resizing it equals "resize the short side to
    `size`, then centre-crop", and resizes fewer pixels.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # n h w c -> n c h w
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[..., top:top + s, left:left + s].float()
    if s != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=s > size, align_corners=False)
    return (x / 127.5 - 1.0).clamp_(-1.0, 1.0)


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, root: str | Path, cfg: DataConfig, seed: int = 0, entries: list[Entry] | None = None,
                 progress: bool = True):
        self.root = Path(root)
        self.cfg = cfg
        self.seed = seed
        self.epoch = 0
        entries = entries if entries is not None else build_index(self.root, cfg.index_dir, progress=progress)
        self.sources = [e for e in entries if e.ok]
        # (source id, start frame) of every clip
        self.clips = [(i, s) for i, e in enumerate(self.sources) for s in clip_starts(e, cfg.num_frames, cfg.frame_stride)]
        if not self.clips:
            bad = [e for e in entries if not e.ok]
            raise ValueError(
                f"no usable clip in {self.root}: {len(entries)} sources found, {len(bad)} unusable; a clip needs "
                f"{cfg.num_frames * cfg.frame_stride + 1} frames (data.num_frames={cfg.num_frames}, "
                f"data.frame_stride={cfg.frame_stride}). Run `medsora data check {self.root}` for the reasons."
            )
        if cfg.num_images and len(self.sources) < 2:
            log.warning("joint training draws images from other videos but %s holds only one; images will come "
                        "from the same video", self.root)
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def frame_indices(self, start: int) -> list[int]:
        return [start + k * self.cfg.frame_stride for k in range(self.cfg.num_frames + 1)]

    def room(self, index: int) -> int:
        """How many start frames clip `index` can take: its window's length, less at the end of its source."""
        src, start = self.clips[index]
        span = clip_span(self.cfg.num_frames, self.cfg.frame_stride)
        return min(span, self.sources[src].num_frames - span - start + 1)

    def offset_start(self, index: int, offset: int, offsets: int) -> int:
        """Start frame of offset `offset` of `offsets`, evenly spaced over the clip's room (distinct where it allows)."""
        return self.clips[index][1] + offset * self.room(index) // offsets

    def load_clip(self, index: int, flip: bool | None = None, offset: int | None = None, offsets: int = 1,
                  images: str | None = "other") -> dict:
        """Clip `index` without the fallback; raises VideoError on a bad file. `offset` of `offsets` picks one of
        the evenly spaced starts in the window (None: a start drawn at random, as training from pixels does);
        `images`: the joint images, single frames of other sources ("other"), one chunk of the clip's own source
        ("own", what the cache stores), or none (None: nothing decoded for them)."""
        src = self.clips[index][0]
        rng = self.rng(index)
        if flip is None:
            flip = bool(self.cfg.hflip and rng.random() < 0.5)
        if offset is None:
            start = self.clips[index][1] + int(rng.integers(0, self.room(index)))
        else:
            start = self.offset_start(index, offset, offsets)
        video = self._read(src, self.frame_indices(start))
        images = self._images(src, rng, images)
        if flip:
            video, images = video.flip(-1), images.flip(-1)
        return {"video": video, "images": images, "flip": flip, "source": src, "start": start, "index": index}

    def _read(self, src: int, frames: list[int]) -> torch.Tensor:
        """(n, 3, size, size) in [-1, 1]; frames are downscaled while decoding."""
        return to_tensor(read_frames(self.root / self.sources[src].path, frames, self.cfg.size), self.cfg.size)

    def _images(self, src: int, rng: np.random.Generator, which: str | None = "other") -> torch.Tensor:
        n = self.cfg.num_images
        if n == 0 or which is None:
            return torch.empty(0, 3, self.cfg.size, self.cfg.size)
        if which == "own":   # one chunk of the source's own frames (the cache's image chunk of this clip)
            count = self.sources[src].num_frames
            frames = rng.choice(count, size=n, replace=n > count)
            return self._read(src, sorted(int(f) for f in frames))
        out = []
        while len(out) < n:
            others = [i for i in range(len(self.sources)) if i != src and i not in self._bad] or [src]
            j = others[int(rng.integers(0, len(others)))]
            frame = int(rng.integers(0, self.sources[j].num_frames))
            try:
                out.append(self._read(j, [frame]))
            except VideoError as e:
                if j == src:
                    raise
                self._mark_bad(j, e)
        return torch.cat(out)

    def _mark_bad(self, src: int, err: Exception) -> None:
        self._bad.add(src)
        log.warning("skipping %s: %s (another clip is taken)", self.sources[src].path, err)

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.clips)):
            i = (index + attempt) % len(self.clips)
            if self.clips[i][0] in self._bad:
                continue
            try:
                item = self.load_clip(i)
                item["index"] = index
                return item
            except VideoError as e:
                self._mark_bad(self.clips[i][0], e)
        raise MedsoraError(f"every clip of {self.root} failed to decode; run `medsora data check {self.root}`")


class _Videos(torch.utils.data.Dataset):
    """The F video frames of each clip (without the extra flow frame): what the VAE sees."""

    def __init__(self, ds: ClipDataset, clips: list[int]):
        self.ds, self.clips = ds, clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ds[self.clips[i]]["video"][:-1]


def video_loader(root: str | Path, cfg: DataConfig, holdout: int = 0, heldout: bool = False, batch_size: int = 2,
                 shuffle: bool = True, seed: int = 0) -> torch.utils.data.DataLoader:
    """Batches (B, F, 3, S, S) of clips for VAE training/evaluation; the last `holdout` clips are held out
    (`heldout=True` gives exactly those)."""
    ds = ClipDataset(root, dataclasses.replace(cfg, num_images=0), seed=seed, progress=False)  # no joint images
    if holdout >= len(ds):
        raise ValueError(f"holdout={holdout} leaves no clip: {root} has {len(ds)} clips")
    n = len(ds) - holdout
    clips = list(range(n, len(ds))) if heldout else list(range(n))
    return torch.utils.data.DataLoader(_Videos(ds, clips), batch_size=batch_size, shuffle=shuffle,
                                       generator=torch.Generator().manual_seed(seed), num_workers=cfg.num_workers)
