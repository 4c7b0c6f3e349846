"""Long videos and first frames from a tiny first-frame model (issue #18), on CPU.

Synthetic endoscopy videos -> the packaged demo VAE -> latent cache -> a `tiny` MedSora trained with
model.first_frame=true for STEPS steps -> (1) image-conditioned samples: PSNR of their first decoded frame against
the conditioning frame, beside the VAE's own reconstruction PSNR of that frame; (2) long videos (FRAMES frames,
segments chained on their last frame): the frame-to-frame mean absolute difference at each segment boundary vs the
median inside segments (goal <= 1.5x). Writes benchmarks/results/long_video.md.

    OMP_NUM_THREADS=1 python benchmarks/long_video.py [--steps 400] [--out /tmp/long_video]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from medsora.assets import DEMO_VAE
from medsora.cache import build_cache
from medsora.config import load_config
from medsora.data.synth import write_dataset
from medsora.data.video import read_frames, write_frames
from medsora.demo import demo_vae_geometry
from medsora.first_frame_check import continuity, first_frame_fit, video_frames
from medsora.sample import sample
from medsora.train import train
from medsora.vae.autoencoder import VideoVAE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--frames", type=int, default=41, help="frames per long video (clips of 9: 5 segments)")
    ap.add_argument("--videos", type=int, default=4, help="long videos and conditioned samples")
    ap.add_argument("--out", default="/tmp/medsora-long-video")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "long_video.md"))
    args = ap.parse_args()
    out = Path(args.out)
    torch.manual_seed(0)
    vae = VideoVAE.from_pretrained(DEMO_VAE).eval()
    if not (out / "data").exists():
        write_dataset(out / "data", videos=8, seed=0, frames=60, size=64, fmt="mp4")
    cfg = load_config("tiny", overrides=[
        f"data.root={out / 'data'}", "data.size=64", "data.num_frames=9", "data.frame_stride=2", "data.num_images=0",
        "train.align=false", "model.first_frame=true", "train.first_frame_prob=0.9", f"train.max_steps={args.steps}",
        "train.epochs=100000", "train.log_every=50", f"train.ckpt_every={args.steps}", *demo_vae_geometry(DEMO_VAE, 64)])
    if not (out / "cache" / "manifest.json").exists():
        build_cache(cfg, vae, out / "cache", progress=False)
    t0 = time.perf_counter()
    run = out / f"run-{args.steps}"
    if not run.exists():
        train(cfg, out / "cache", run, progress=False)
        (run / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.0f}")
    train_s = (run / "train_seconds.txt").read_text().strip() if (run / "train_seconds.txt").exists() else "?"

    # (1) first frames: frame 0 of held-in videos at several points
    sources = sorted((out / "data").glob("*.mp4"))
    images = np.stack([read_frames(sources[k % len(sources)], [3 * k])[0] for k in range(args.videos)])
    write_frames(out / "firsts", images)
    rows = []
    for pin, guidance in ((False, 1.0), (False, 2.0), (True, 1.0), (True, 2.0)):
        paths = sample(run, vae, out / f"i2v-{guidance}-{pin}", num=None, first_frame=out / "firsts", guidance=guidance,
                       sampler="dpmpp-2m", steps=25, progress=False, overwrite=True, pin_first_frame=pin)
        fit = first_frame_fit(vae, paths, sorted((out / "firsts").glob("*.png")), 64)
        rows.append((pin, guidance, fit["sample_psnr"], fit["vae_psnr"]))

    # (2) long videos: boundary vs inside frame-to-frame differences
    clip = cfg.data.num_frames
    long_rows = []
    for pin in (False, True):
        paths = sample(run, vae, out / f"long-{pin}", num=args.videos, frames=args.frames, sampler="dpmpp-2m", steps=25,
                       progress=False, overwrite=True, pin_first_frame=pin)
        videos = [video_frames(p) for p in paths]
        assert all(len(v) == args.frames for v in videos)
        per = [continuity(v, clip, vae.temporal_factor) for v in videos]
        profile = np.mean([c["steps"] for c in per], axis=0)
        long_rows.append((pin, *(float(np.mean([c[k] for c in per])) for k in ("boundary", "inside_median",
                                                                              "between_groups", "ratio")), profile))

    text = "\n".join([
        "# Long videos and first frames (benchmarks/long_video.py)", "",
        f"A `tiny` MedSora (model.first_frame=true, train.first_frame_prob=0.9) trained {args.steps} steps "
        f"({train_s} s on this CPU) on 8 synthetic 64 px videos through the packaged demo VAE, clips of "
        f"{clip} frames; DPM-Solver++ 25 steps. {args.videos} videos per row.", "",
        "## First frame: PSNR of the sample's first decoded frame against the conditioning frame", "",
        "Frame 0 pinned: its eps set so that the predicted x_0 of frame 0 is the given latent at every step "
        "(`first_frame.pinned`, the default of `medsora sample`); free: the model's own prediction.", "",
        "| frame 0 | guidance | sample PSNR (dB) | VAE reconstruction PSNR (dB) | gap (dB) | goal (gap <= 1 dB) |",
        "|---|---|---|---|---|---|",
        *[f"| {'pinned' if pin else 'free'} | {g:g} | {s:.2f} | {r:.2f} | {r - s:.2f} | {'met' if r - s <= 1 else 'not met'} |"
          for pin, g, s, r in rows], "",
        f"## Long videos: {args.frames} frames, segments of {clip} chained on their last frame", "",
        "| frame 0 | boundary MAD (mean) | inside MAD (median) | ratio (per video, mean) | goal (<= 1.5x) | inside, between latent groups (mean) |",
        "|---|---|---|---|---|---|",
        *[f"| {'pinned' if pin else 'free'} | {b:.2f} | {i:.2f} | {r:.2f}x | {'met' if r <= 1.5 else 'not met'} "
          f"| {g:.2f} |" for pin, b, i, g, r, _ in long_rows], "",
        "MAD of each consecutive pair along the video (mean over the videos; segment boundaries after frames "
        f"{clip - 1}, {2 * (clip - 1)}, ...):", "",
        *[f"- {'pinned' if pin else 'free'}: " + " ".join(f"{d:.1f}" for d in prof) for pin, _, _, _, _, prof in long_rows], "",
        "Inside a segment the tiny VAE decodes each latent group of 4 frames as a burst whose last two frames nearly "
        "repeat (its reconstructions of real clips show the same pattern), so the median inside is well below the "
        "steps between groups.",
        "", "MAD: mean absolute difference of consecutive frames, grey levels (0-255), over all pixels and channels.", ""])
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
