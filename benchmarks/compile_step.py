"""Training step and sampling call of the backbone, eager vs `torch.compile` (inductor), on this machine.

    python benchmarks/compile_step.py [--presets tiny S] [--batches 1 2] [--steps 5] [--out benchmarks/results/compile.md]

A training step is the diffusion loss (learned variance) + backward + AdamW + EMA, as benchmarks/train_step.py;
a sampling call is one no-grad forward of the batch (one DDIM/DPM-Solver step). "compile s" is the wall time of
the first compiled call minus a steady one: what a run pays once (per shape: the warm phase's batch and the main
phase's batch each compile once). The step times are the median of `--steps` steady calls.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch

from medsora.config import latent_frames, load_config
from medsora.models.medsora import build_model
from medsora.train import make_diffusion, update_ema


def setup(preset: str, batch: int):
    cfg = load_config(preset, overrides=["model.attn_dropout=0"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    fv, fi = latent_frames(cfg.data.num_frames), latent_frames(cfg.data.num_images)
    x0 = torch.randn(batch, fv + fi, cfg.model.in_channels, *cfg.model.input_size)
    return cfg, model, x0, fv


def time_calls(fn, steps: int) -> tuple[float, float]:
    """(first call s, median of the next `steps` calls s)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def bench(preset: str, batch: int, steps: int, compiled: bool) -> dict:
    cfg, model, x0, fv = setup(preset, batch)
    net = torch.compile(model) if compiled else model
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    diffusion = make_diffusion(cfg)
    t = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(0))

    def train_step():
        loss = diffusion.training_losses(lambda x, tt: net(x, tt, num_video_frames=fv), x0, t)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_ema(ema, model, 0.9999)

    def sample_call():
        with torch.no_grad():
            net(x0, t, num_video_frames=fv)

    first_t, step_t = time_calls(train_step, steps)
    first_s, step_s = time_calls(sample_call, steps)
    return {"preset": preset, "batch": batch, "mode": "compiled" if compiled else "eager",
            "train_s": step_t, "train_compile_s": first_t - step_t if compiled else 0.0,
            "sample_s": step_s, "sample_compile_s": first_s - step_s if compiled else 0.0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="+", default=["tiny", "S"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/compile.md")
    args = p.parse_args()
    rows = []
    for preset in args.presets:
        for batch in args.batches:
            eager, comp = bench(preset, batch, args.steps, False), bench(preset, batch, args.steps, True)
            rows += [eager, comp]
            print(eager, comp, flush=True)
    load = os.getloadavg()[0]
    lines = ["# Backbone eager vs torch.compile (inductor) on CPU", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average (1 min) at the end {load:.1f}",
             "", "| preset | batch | mode | train step s | compile s (train) | sampling call s | compile s (sampling) |"
             " speed-up train / sampling |", "|---|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        eager = next(e for e in rows if e["preset"] == r["preset"] and e["batch"] == r["batch"] and e["mode"] == "eager")
        speed = (f"{eager['train_s'] / r['train_s']:.2f}x / {eager['sample_s'] / r['sample_s']:.2f}x"
                 if r["mode"] == "compiled" else "")
        lines.append(f"| {r['preset']} | {r['batch']} | {r['mode']} | {r['train_s']:.3f} | {r['train_compile_s']:.0f} "
                     f"| {r['sample_s']:.3f} | {r['sample_compile_s']:.0f} | {speed} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
