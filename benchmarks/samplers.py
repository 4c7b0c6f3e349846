"""Accuracy vs steps of the samplers on a trained model: from the same initial noise, the distance of each
sampler's final latents to a 1000-step DDIM (eta = 0) solution of the same probability-flow ODE.

    python benchmarks/samplers.py runs/demo/run          # a run folder (its newest checkpoint's EMA) or a checkpoint

Writes benchmarks/results/samplers.md: relative L2 distance ||z - z_ref|| / ||z_ref|| over N samples, and wall
seconds per sample on this machine. The goal of the issue: a setting with <= 25 steps no farther than DDIM-250.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medsora.checkpoint import load_weights  # noqa: E402
from medsora.config import from_dict, latent_frames  # noqa: E402
from medsora.diffusion import ddim_sample, solver_sample  # noqa: E402
from medsora.models.medsora import build_model  # noqa: E402
from medsora.sample import resolve_checkpoint  # noqa: E402
from medsora.train import make_diffusion  # noqa: E402

STEPS = (10, 15, 20, 25, 50, 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--num", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "samplers.md"))
    args = ap.parse_args()
    ckpt, meta = resolve_checkpoint(args.checkpoint)
    cfg = from_dict(meta["config"])
    model = build_model(cfg.model)
    load_weights(ckpt / "ema.safetensors", model, "EMA model")
    model.eval()
    fv = latent_frames(cfg.data.num_frames)
    diffusion = make_diffusion(cfg)
    noise = torch.randn(args.num, fv, cfg.model.in_channels, *cfg.model.input_size,
                        generator=torch.Generator().manual_seed(args.seed))
    fn = lambda x, t: model(x, t, num_video_frames=fv)  # noqa: E731

    def timed(run):
        t0 = time.perf_counter()
        z = run()
        return z, (time.perf_counter() - t0) / args.num

    ref, ref_s = timed(lambda: ddim_sample(diffusion, fn, noise.shape, steps=1000, noise=noise, progress=False))
    dist = lambda z: ((z - ref).norm() / ref.norm()).item()  # noqa: E731
    rows = [("ddim", 1000, 0.0, ref_s)]
    for steps in (*STEPS, 250):
        z, s = timed(lambda: ddim_sample(diffusion, fn, noise.shape, steps=steps, noise=noise, progress=False))
        rows.append(("ddim", steps, dist(z), s))
    for solver in ("dpmpp-2m", "unipc"):
        for steps in STEPS:
            z, s = timed(lambda: solver_sample(diffusion, fn, noise.shape, steps=steps, solver=solver, noise=noise,
                                               progress=False))
            rows.append((solver, steps, dist(z), s))
    ddim250 = next(d for name, n, d, _ in rows if name == "ddim" and n == 250)
    lines = [f"# Samplers: distance to a 1000-step DDIM solution ({ckpt}, {args.num} samples, seed {args.seed})", "",
             f"Model: preset {cfg.preset}, latents {fv}x{cfg.model.in_channels}x{tuple(cfg.model.input_size)}. "
             f"Relative L2 distance of the final latents to DDIM-1000 (eta 0) from the same noise; seconds per "
             f"sample on this machine (CPU). DDIM-250 (the paper's setting): {ddim250:.4f}.", "",
             "| sampler | steps | distance to DDIM-1000 | s / sample | <= DDIM-250 |", "|---|---|---|---|---|"]
    for name, n, d, s in rows:
        lines.append(f"| {name} | {n} | {d:.4f} | {s:.3f} | {'yes' if d <= ddim250 else 'no'} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
