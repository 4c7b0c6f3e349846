"""The demo report's generated-clip figures with DPM-Solver++ at 20 steps vs DDIM at 250 (the paper's setting).

    medsora demo --out runs/demo && python benchmarks/sampler_clips.py runs/demo [--num 8]

Samples `--num` videos from the demo run's EMA weights with each setting (same seed, so the same initial noise),
measures them with the report's clip statistics against the demo's real clips, and appends the table to
benchmarks/results/samplers.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medsora.config import from_dict  # noqa: E402
from medsora.demo_targets import demo_targets  # noqa: E402
from medsora.report import clip_sets, clip_stats, summarize  # noqa: E402
from medsora.sample import resolve_checkpoint, sample  # noqa: E402
from medsora.vae.autoencoder import load_vae  # noqa: E402

SETTINGS = (("dpmpp-2m", 20), ("ddim", 250))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", help="a `medsora demo` output folder")
    ap.add_argument("--num", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "samplers.md"))
    args = ap.parse_args()
    demo = Path(args.demo)
    ckpt, meta = resolve_checkpoint(demo / "run")
    cfg = from_dict(meta["config"])
    vae = load_vae(cfg.vae)
    data = {"data": {"num_frames": cfg.data.num_frames, "frame_stride": cfg.data.frame_stride, "size": cfg.data.size}}
    rows = []
    for sampler, steps in SETTINGS:
        folder = demo / f"samples-{sampler}-{steps}"
        t0 = time.perf_counter()
        sample(ckpt, vae, folder, num=args.num, batch_size=4, sampler=sampler, steps=steps, seed=0, progress=False,
               overwrite=True)
        seconds = (time.perf_counter() - t0) / args.num
        sets = clip_sets(data, folder, demo / "data", demo / "no-reconstructions", args.num)
        means = {name: summarize(clip_stats(vids)) for name, vids in sets.items()}
        rows.append((sampler, steps, seconds, means["real"], means["generated"], demo_targets(means, None)))
    real = rows[0][3]
    lines = ["", f"## Generated-clip figures of the demo's model: DPM-Solver++ 20 vs DDIM 250 ({ckpt}, {args.num} "
             "videos, seed 0)", "",
             f"Real clips: motion {real['motion']:.2f} grey levels, sharpness {real['sharpness']:.1f}, flow jitter "
             f"{real['flow_jitter']:.3f} px, mean colour {', '.join(f'{c:.1f}' for c in real['rgb_mean'])}.", "",
             "| sampler | steps | s / video (CPU) | motion (x real) | sharpness (x real) | flow jitter px | colour off "
             "R/G/B | demo targets met |", "|---|---|---|---|---|---|---|---|"]
    for sampler, steps, seconds, r, g, targets in rows:
        off = " / ".join(f"{abs(a - b):.1f}" for a, b in zip(g["rgb_mean"], r["rgb_mean"]))
        lines.append(f"| {sampler} | {steps} | {seconds:.2f} | {g['motion']:.2f} ({g['motion'] / r['motion']:.2f}x) | "
                     f"{g['sharpness']:.1f} ({g['sharpness'] / r['sharpness']:.2f}x) | {g['flow_jitter']:.3f} | {off} | "
                     f"{sum(t['met'] for t in targets)} of {len(targets)} |")
    with open(args.out, "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
