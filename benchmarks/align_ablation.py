"""The alignment ablation at demo scale: the demo with optical-flow alignment on and off, same seed, same steps.

    python benchmarks/align_ablation.py --seeds 0 1 --variants on off alpha0.1 --out /tmp/ablation   # ~5 min a run

For each seed it runs `medsora demo --no-first-frame` (the paper's unconditional model) with alignment on (weight-free flow-patch features: no DINO weights here),
then a copy of that folder with its data, VAE and latent cache kept and only training, sampling and the figures
redone with alignment off, so the two differ in the alignment loss alone. Writes benchmarks/results/align_ablation.md:
the EMA model's held-out denoising MSE at the end, and of the generated clips the motion (mean |frame difference|),
the flow jitter (mean end-point difference of consecutive Farnebäck flows: temporal consistency) and the sharpness,
with the real clips' values for reference.
"""
from __future__ import annotations

import argparse
import json
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


VARIANTS = {"on": ("on", True, []), "off": ("off", False, []),     # name: (label, alignment, config overrides)
            "alpha0.1": ("on, alpha 0.1 (the authors' code)", True, ["train.align_weight=0.1"])}


def hinge_active(run: Path) -> str:
    """Logged steps whose alignment term passed the hinge (Eq. 15's margin), of all logged steps."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "align" in r]
    return f"{sum(r['align'] > 0 for r in rows)}/{len(rows)}"


def row(label: str, seed: int, summary: dict, folder: Path) -> str:
    gen, real = summary["clip_stats"]["generated"], summary["clip_stats"]["real"]
    mse = summary["eval_mse"][-1][1]
    return (f"| {seed} | {label} | {mse:.4f} | {gen['motion']:.2f} ({real['motion']:.2f}) | "
            f"{gen['flow_jitter']:.3f} ({real['flow_jitter']:.3f}) | {gen['sharpness']:.1f} ({real['sharpness']:.1f}) | "
            f"{hinge_active(folder / 'run')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--train-steps", type=int, default=None, help="default: the demo's")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "align_ablation.md"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS)[:2], choices=list(VARIANTS))
    args = ap.parse_args()
    kw = {"train_steps": args.train_steps} if args.train_steps else {}
    lines = ["# Alignment ablation at demo scale (benchmarks/align_ablation.py)", "",
             "Same seed, data, VAE, cache and steps; alignment on uses the weight-free flow-patch features (not "
             "the paper's DINO features). Generated-clip figures over the demo's 8 samples; real clips in brackets.",
             "", "| seed | alignment | held-out MSE (EMA, end) | motion (real) | flow jitter (real) | sharpness (real) "
             "| hinge active (logged steps) |", "|---|---|---|---|---|---|---|"]
    for seed in args.seeds:
        first = None
        for name in args.variants:
            folder = Path(args.out) / f"seed{seed}-{name}"
            if first is not None:
                off_copy(first, folder)     # the same data, VAE and cache: only training onwards differs
            label, align, overrides = VARIANTS[name]
            summary = run_demo(folder, seed=seed, align=align, progress=False, overrides=overrides, first_frame=False,
                               **kw)   # the paper's unconditional model
            first = first or folder
            lines.append(row(label, seed, summary, folder))
            Path(args.results).write_text("\n".join(lines) + "\n")
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
