"""CPU seconds per clip of the flow-target cache, stage by stage, and the per-step cost of the alignment loss.

    python benchmarks/flow_cache.py [--clips 2] [--preset B] [--methods farneback,raft_small,raft_large]
                                    [--out benchmarks/results/flow_cache.md]

One clip = 17 frames at 128 px (a synthetic endoscopy video, every 3rd frame) -> 16 flows -> 16 flow images ->
DINO ViT-S/8 (12 layers, 256 tokens) for the clip and its flip -> Sampling() to (4, 64, 512) per used layer.
RAFT and DINO run with random weights: the arithmetic is the same as with the released weights.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from medsora.config import load_config
from medsora.data.synth import make_video
from medsora.flow.align import alignment_loss
from medsora.flow.dino import load_dino
from medsora.flow.flow import build_flow
from medsora.flow.targets import Sampling, flip_flow, flow_targets


def _clip(seed: int, frames: int, stride: int, size: int) -> torch.Tensor:
    video = make_video(seed=seed, frames=(frames - 1) * stride + 1, size=size)[::stride]   # (F+1, H, W, 3) uint8
    return torch.from_numpy(video).permute(0, 3, 1, 2).float() / 127.5 - 1                # (F+1, 3, H, W) in [-1, 1]


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--preset", default="B")
    p.add_argument("--methods", default="farneback,raft_small,raft_large")
    p.add_argument("--out", default="benchmarks/results/flow_cache.md")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = load_config(args.preset)
    frames, size = cfg.data.num_frames, cfg.data.size
    lat_frames = frames // 4                                          # the VAE's 4x temporal compression
    tokens = (cfg.model.input_size[0] // cfg.model.patch_size) * (cfg.model.input_size[1] // cfg.model.patch_size)
    layers = tuple(cfg.model.align_layers)
    sampling = Sampling(frames, lat_frames, size=(tokens, cfg.model.hidden_size))
    dino = load_dino(None, img_size=size)
    clips = [_clip(i, frames + 1, cfg.data.frame_stride, size) for i in range(args.clips)]

    def both_flips(flow: torch.Tensor):
        return flow_targets(flow, dino, layers, sampling), flow_targets(flip_flow(flow), dino, layers, sampling)

    rows = []
    for method in args.methods.split(","):
        est = build_flow(method, weights=None)
        est(clips[0][:2])                                               # warm-up, not counted
        t_flow = t_dino = 0.0
        for clip in clips:
            flow, dt = _timed(est, clip)
            t_flow += dt
            _, dt = _timed(both_flips, flow)
            t_dino += dt
        n = len(clips)
        rows.append((method, t_flow / n, t_dino / n, (t_flow + t_dino) / n))
        print(f"{method}: flow {t_flow / n:.2f}s + images/DINO/Sampling x2 flips {t_dino / n:.2f}s per clip")

    # the loss each training step: one (B, f, l, d) per aligned block, batch 2 (the paper's second phase)
    feats = [torch.randn(2, lat_frames, tokens, cfg.model.hidden_size, requires_grad=True) for _ in layers]
    targets = [torch.randn(2, lat_frames, tokens, cfg.model.hidden_size) for _ in layers]
    t = torch.tensor([10, 500])
    loss_ms = {}
    for variant in ("channel", "token"):
        alignment_loss(feats, targets, t, variant=variant).backward()  # warm-up
        t0 = time.perf_counter()
        for _ in range(5):
            alignment_loss(feats, targets, t, variant=variant).backward()
        loss_ms[variant] = (time.perf_counter() - t0) / 5 * 1000
        print(f"loss {variant}: {loss_ms[variant]:.1f} ms forward+backward")

    lines = [f"# Flow-target cache cost per clip on CPU (preset {args.preset})", "",
             f"torch threads {torch.get_num_threads()}, {n} clips of {frames + 1} frames at {size} px; "
             f"DINO layers {sorted(set(layers))}; targets ({lat_frames}, {tokens}, {cfg.model.hidden_size}) per layer, "
             "both flips. Shared, loaded machine: timings are noisy.", "",
             "| flow | flow s/clip | flow images + DINO + Sampling (2 flips) s/clip | total s/clip |",
             "|---|---:|---:|---:|"]
    lines += [f"| {m} | {a:.2f} | {b:.2f} | {c:.2f} |" for m, a, b, c in rows]
    lines += ["", f"Alignment loss, forward + backward, batch 2, {len(layers)} blocks of "
                  f"({lat_frames}, {tokens}, {cfg.model.hidden_size}): "
                  + ", ".join(f"{v} {ms:.1f} ms" for v, ms in loss_ms.items())]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
