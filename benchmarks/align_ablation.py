"""The alignment ablation at demo scale: the demo with optical-flow alignment on and off, same seed, same steps.

    python benchmarks/align_ablation.py --seeds 0 1 --out /tmp/ablation      # ~2 x 8 min per seed on a 2-core CPU

For each seed it runs `medsora demo` with alignment on (weight-free flow-patch features: no DINO weights here),
then a copy of that folder with its data, VAE and latent cache kept and only training, sampling and the figures
redone with alignment off, so the two differ in the alignment loss alone. Writes benchmarks/results/align_ablation.md:
the EMA model's held-out denoising MSE at the end, and of the generated clips the motion (mean |frame difference|),
the flow jitter (mean end-point difference of consecutive Farnebäck flows: temporal consistency) and the sharpness,
with the real clips' values for reference.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medsora.demo import run_demo  # noqa: E402

KEEP = ("data", "vae", "cache")


def off_copy(on: Path, off: Path) -> None:
    """`off` = `on`'s data, VAE and cache (and their stage markers); everything after them is redone."""
    off.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if not (off / name).exists():
            shutil.copytree(on / name, off / name, symlinks=True)
    (off / ".done").mkdir(exist_ok=True)
    for name in KEEP:
        shutil.copy(on / ".done" / name, off / ".done" / name)


def row(label: str, seed: int, summary: dict) -> str:
    gen, real = summary["clip_stats"]["generated"], summary["clip_stats"]["real"]
    mse = summary["eval_mse"][-1][1]
    return (f"| {seed} | {label} | {mse:.4f} | {gen['motion']:.2f} ({real['motion']:.2f}) | "
            f"{gen['flow_jitter']:.3f} ({real['flow_jitter']:.3f}) | {gen['sharpness']:.1f} ({real['sharpness']:.1f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--train-steps", type=int, default=None, help="default: the demo's")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "align_ablation.md"))
    args = ap.parse_args()
    kw = {"train_steps": args.train_steps} if args.train_steps else {}
    lines = ["# Alignment ablation at demo scale (benchmarks/align_ablation.py)", "",
             "Same seed, data, VAE, cache and steps; alignment on uses the weight-free flow-patch features (not "
             "the paper's DINO features). Generated-clip figures over the demo's 8 samples; real clips in brackets.",
             "", "| seed | alignment | held-out MSE (EMA, end) | motion (real) | flow jitter (real) | sharpness (real) |",
             "|---|---|---|---|---|---|"]
    for seed in args.seeds:
        on = Path(args.out) / f"seed{seed}-on"
        s_on = run_demo(on, seed=seed, align=True, progress=False, **kw)
        off = Path(args.out) / f"seed{seed}-off"
        off_copy(on, off)
        s_off = run_demo(off, seed=seed, align=False, progress=False, **kw)
        lines += [row("on", seed, s_on), row("off", seed, s_off)]
        Path(args.results).write_text("\n".join(lines) + "\n")
        print("\n".join(lines[-2:]), flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
