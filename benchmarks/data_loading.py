"""Clips/s of the data pipeline from 768x576 mp4 (the Colonoscopic size) to 128x128 clips.

    python benchmarks/data_loading.py [--videos 4] [--frames 150] [--clips 24] [--out benchmarks/results/data_loading.md]

Measures ClipDataset with the paper's clip geometry (16+1 frames every 3rd, 8 joint images from other videos)
through a torch DataLoader with 0 and 2 workers, with and without the joint images (these cost one seek each).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medsora.config import load_config
from medsora.data.clips import ClipDataset
from medsora.data.synth import make_video
from medsora.data.video import write_video


def make_corpus(root: Path, videos: int, frames: int) -> None:
    for i in range(videos):
        v = make_video(seed=i, frames=frames, size=(576, 768))
        write_video(root / f"colon_{i:02d}.mp4", np.ascontiguousarray(v), fps=30)


def clips_per_second(root: Path, workers: int, num_images: int, clips: int) -> float:
    cfg = load_config("B", overrides=[f"data.num_images={num_images}"]).data
    ds = ClipDataset(root, cfg, seed=0, progress=False)
    idx = [i % len(ds) for i in range(clips)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=1, num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up and first decode are not counted
    t0 = time.perf_counter()
    n = 1 + sum(1 for _ in it)
    return (n - 1) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--out", default="benchmarks/results/data_loading.md")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t0 = time.perf_counter()
        make_corpus(root, args.videos, args.frames)
        print(f"corpus: {args.videos} x {args.frames} frames 768x576 mp4 in {time.perf_counter() - t0:.1f}s")
        rows = []
        for images in (0, 8):
            for workers in (0, 2):
                cps = clips_per_second(root, workers, images, args.clips)
                rows.append((workers, images, cps))
                print(f"workers={workers} images={images}: {cps:.2f} clips/s")
    lines = ["# Data loading: 768x576 mp4 -> 128x128 clips (17 frames every 3rd)", "",
             f"torch threads {torch.get_num_threads()}, {args.videos} videos x {args.frames} frames, {args.clips} clips",
             "", "| workers | joint images | clips/s | ms/clip |", "|---:|---:|---:|---:|"]
    lines += [f"| {w} | {i} | {c:.2f} | {1000 / c:.0f} |" for w, i, c in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
