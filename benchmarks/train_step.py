"""Time and peak memory of one training step (diffusion loss + backward + AdamW + EMA) on CPU.

    python benchmarks/train_step.py [--presets tiny S] [--steps 3] [--out benchmarks/results/train_step.md]

Batch: the preset's batch size of video latents + joint-image latents (tiny: 4 x (4 + 1) frames of 8x8x4;
S: 2 x (4 + 2) frames of 16x16x16), with and without the alignment loss on every aligned block.
Peak memory is the process's peak RSS growth during the steps (resource.getrusage), so run presets separately
for a clean figure.
"""
from __future__ import annotations

import argparse
import copy
import resource
import time
from pathlib import Path

import torch

from medsora.config import latent_frames, load_config
from medsora.flow.align import alignment_loss
from medsora.models.medsora import build_model
from medsora.train import make_diffusion, update_ema


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(preset: str, steps: int, align: bool) -> dict:
    cfg = load_config(preset)
    model = build_model(cfg.model)
    for p in model.parameters():  # non-zero weights, so no branch is trivially zero
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    diffusion = make_diffusion(cfg)
    fv, fi = latent_frames(cfg.data.num_frames), latent_frames(cfg.data.num_images)
    b, c, (h, w) = cfg.train.batch_size, cfg.model.in_channels, cfg.model.input_size
    x0 = torch.randn(b, fv + fi, c, h, w)
    tokens = (h // cfg.model.patch_size) * (w // cfg.model.patch_size)
    targets = [torch.randn(b, fv, tokens, cfg.model.hidden_size) for _ in cfg.model.align_layers]
    times = []
    start_rss = rss_mib()
    for s in range(steps + 1):
        t = torch.randint(0, 1000, (b,))
        t0 = time.perf_counter()
        losses = diffusion.training_losses(lambda x, tt: model(x, tt, num_video_frames=fv, return_features=align),
                                           x0, t)
        loss = losses["loss"].mean()
        if align:
            loss = loss + 0.01 * alignment_loss(list(losses["extra"]), targets, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_ema(ema, model, 0.9999)
        if s:  # the first step warms up allocators
            times.append(time.perf_counter() - t0)
    return {"preset": preset, "align": align, "batch": b, "frames": f"{fv}+{fi}", "s_per_step": min(times),
            "it_s": 1 / min(times), "peak_rss_mib": rss_mib(), "rss_growth_mib": rss_mib() - start_rss}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="+", default=["tiny", "S"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/train_step.md")
    args = p.parse_args()
    rows = []
    for preset in args.presets:
        for align in (False, True):
            r = bench(preset, args.steps, align)
            rows.append(r)
            print(r)
    lines = ["# Training step on CPU (best of steps; loss + backward + AdamW + EMA)", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads", "",
             "| preset | alignment | batch | latent frames (video+images) | s/step | it/s | peak RSS MiB |",
             "|---|---|---:|---|---:|---:|---:|"]
    lines += [f"| {r['preset']} | {'on' if r['align'] else 'off'} | {r['batch']} | {r['frames']} | "
              f"{r['s_per_step']:.3f} | {r['it_s']:.2f} | {r['peak_rss_mib']:.0f} |" for r in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
