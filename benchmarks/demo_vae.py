"""One recipe for the demo's tiny VAE, trained and evaluated exactly on the demo's data; one row per run.

Data as `medsora demo` makes it (medsora/demo.py run_demo): write_dataset(videos=12, seed=0, frames=100,
size=64), the tiny preset with train.holdout_clips=4, video_loader(..., batch_size=2, seed=0); training on the
8-frame halves of the training clips (--frames 16: whole clips), evaluation on the held-out clips with
evaluate_reconstruction (PSNR, SSIM) and the motion of medsora.report.clip_stats (mean |frame_t+1 - frame_t|,
0-255) of the real held-out clips vs their reconstructions.

    python benchmarks/demo_vae.py --label today --steps 300                     # the demo's VAE today
    python benchmarks/demo_vae.py --label c16 --latent-channels 16 --steps 150 --png /tmp/demo_vae_best.png

Appends a row to benchmarks/results/demo_vae.md (--out); --load-note says how busy the machine was.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from medsora.config import load_config
from medsora.data.clips import video_loader
from medsora.data.synth import write_dataset
from medsora.report import clip_stats
from medsora.vae.evaluate import evaluate_reconstruction
from medsora.vae.train import train_tiny_vae

HEADER = ("| recipe | steps | train s | PSNR dB | SSIM | real motion | rec motion | ratio | latent (C, f, h, w) "
          "| load |\n|---|---|---|---|---|---|---|---|---|---|\n")


def to_uint8(clip: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [-1, 1] -> uint8 (T, H, W, 3), as the demo's videos are read back."""
    return ((clip.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def frame_strip(real: torch.Tensor, rec: torch.Tensor, path: str, frames: int = 8) -> None:
    """PNG: real frames on top, reconstructions below, `frames` frames spread over the clip."""
    import cv2

    idx = np.linspace(0, real.shape[0] - 1, frames).round().astype(int)
    top = np.concatenate([to_uint8(real)[i] for i in idx], axis=1)
    bottom = np.concatenate([to_uint8(rec)[i] for i in idx], axis=1)
    img = np.concatenate([top, bottom], axis=0)
    img = cv2.resize(img, (img.shape[1] * 3, img.shape[0] * 3), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(path, img[..., ::-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.0)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--latent-channels", type=int, default=4)
    ap.add_argument("--widths", default="", help="block_out_channels, e.g. 16,32,64,64 (default: TINY_CONFIG)")
    ap.add_argument("--layers", type=int, default=0, help="layers_per_block (0: TINY_CONFIG's)")
    ap.add_argument("--kl", type=float, default=1e-6)
    ap.add_argument("--ffl", type=float, default=0.1)
    ap.add_argument("--mse", type=float, default=0.0)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8, choices=(8, 16), help="training clip length: halves or whole")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--root", default="/tmp/demo_vae", help="data + VAE folder")
    ap.add_argument("--png", default="")
    ap.add_argument("--load-note", default="")
    ap.add_argument("--out", default="benchmarks/results/demo_vae.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    root = Path(args.root)
    data = root / "data"
    if not (root / "data.done").exists():
        write_dataset(data, videos=12, seed=0, frames=100, size=64)
        (root / "data.done").write_text("ok")
    cfg = load_config("tiny", overrides=[f"data.root={data}", "train.holdout_clips=4"])

    def loader(shuffle: bool, heldout: bool = False, batch: int = 2):
        return video_loader(cfg.data.root, cfg.data, cfg.train.holdout_clips, heldout, batch_size=batch,
                            shuffle=shuffle, seed=0)

    torch.manual_seed(0)
    if args.frames == 8:
        clips = [half for b in loader(True, batch=args.batch) for half in (b[:, :8], b[:, 8:16]) if half.shape[1] == 8]
    else:
        clips = [b for b in loader(True, batch=args.batch)]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    vae = train_tiny_vae(clips, steps=args.steps, out_dir=root / "vae" / args.label, seed=0, progress=False,
                         lr=args.lr, kl_weight=args.kl, ffl_weight=args.ffl, mse_weight=args.mse,
                         latent_channels=args.latent_channels,
                         block_out_channels=tuple(int(w) for w in args.widths.split(",")) if args.widths else None,
                         layers_per_block=args.layers or None, warmup_steps=args.warmup,
                         min_lr_ratio=args.min_lr_ratio)
    seconds = time.perf_counter() - t0
    load_after = os.getloadavg()

    metrics = evaluate_reconstruction(None, vae, loader(False, heldout=True), root / "vae" / args.label / "eval",
                                      progress=False)["base"]
    real, rec, first = [], [], None
    with torch.no_grad():
        for x in loader(False, heldout=True):
            z = vae.encode(x)
            y = vae.decode(z)[:, :x.shape[1]]
            real += [to_uint8(c) for c in x]
            rec += [to_uint8(c) for c in y]
            if first is None:
                first, latent = (x[0], y[0]), tuple(z.shape[1:])
    m_real, m_rec = np.array(clip_stats(real)["motion"]), np.array(clip_stats(rec)["motion"])
    f, c, h, w = latent
    n_params = sum(p.numel() for p in vae.vae.parameters())
    load = args.load_note or f"loadavg(1m) {load_before[0]:.1f} -> {load_after[0]:.1f}"
    recipe = (f"{args.label}: C={args.latent_channels}, widths={args.widths or '16,32,64,64'}, "
              f"layers={args.layers or 1}, lr={args.lr:g}" + (f"->{args.min_lr_ratio:g}x" if args.min_lr_ratio else "")
              + f", kl={args.kl:g}, ffl={args.ffl:g}"
              + (f", mse={args.mse:g}" if args.mse else "")
              + f", batch={args.batch}x{args.frames}f, {n_params / 1e6:.2f}M params")
    row = (f"| {recipe} | {args.steps} | {seconds:.0f} | {metrics['psnr']:.2f} | {metrics['ssim']:.3f} | "
           f"{m_real.mean():.2f} | {m_rec.mean():.2f} | {m_rec.mean() / m_real.mean():.2f} | "
           f"({c}, {f}, {h}, {w}) | {load} |\n")
    print(row, end="")
    print(json.dumps({"per_clip_motion_real": m_real.round(2).tolist(), "per_clip_motion_rec": m_rec.round(2).tolist(),
                      "clips": len(real)}))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        out.write_text("## Demo tiny VAE recipes (benchmarks/demo_vae.py), held-out clips of the demo's data\n\n"
                       + HEADER)
    with out.open("a") as fh:
        fh.write(row)
    if args.png:
        frame_strip(*first, args.png)


if __name__ == "__main__":
    main()
