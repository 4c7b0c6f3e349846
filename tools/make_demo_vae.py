"""Train the demo's pretrained VAE (`medsora/assets/demo_vae/`), as CogVideoX's VAE is pretrained for the paper.

The demo cannot train a VAE that keeps texture in its 10-minute budget on a 2-core CPU (benchmarks/results/
demo_vae.md: 27 dB at best in 150 s). So, like the paper, it starts from a pretrained VAE and trains only the
frequency-compensation modules on top. This script makes that VAE: a `tiny` CogVideoX VAE (3D causal, 4x spatial,
4x temporal, 8 latent channels, widths 16/32/64) trained from scratch on synthetic clips of seeds disjoint from
the demo's (write_dataset seed 1000 vs the demo's 0), then measured on the demo's own held-out clips.

    python tools/make_demo_vae.py --steps 1500            # ~15-20 min on a 2-core CPU; writes medsora/assets/demo_vae
    python tools/make_demo_vae.py --init medsora/assets/demo_vae --steps 1000 --lr 1e-3   # train the packaged one on
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medsora.config import load_config  # noqa: E402
from medsora.data.clips import video_loader  # noqa: E402
from medsora.data.synth import write_dataset  # noqa: E402
from medsora.report import clip_stats, summarize  # noqa: E402
from medsora.vae.evaluate import evaluate_reconstruction  # noqa: E402
from medsora.vae.autoencoder import VideoVAE  # noqa: E402
from medsora.vae.train import train_tiny_vae  # noqa: E402

RECIPE = dict(latent_channels=8, block_out_channels=(16, 32, 64), lr=5e-3, mse_weight=1.0, min_lr_ratio=0.05)


def loader(root, holdout, heldout, shuffle, seed=0):
    cfg = load_config("tiny", overrides=[f"data.root={root}"])
    return video_loader(root, cfg.data, holdout, heldout, batch_size=2, shuffle=shuffle, seed=seed)


def motion_ratio(vae, clips) -> tuple[float, float]:
    to8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
    real, rec = [], []
    with torch.no_grad():
        for b in clips:
            r = vae.decode(vae.encode(b))
            real += [to8(c) for c in b]
            rec += [to8(c) for c in r]
    m_real, m_rec = summarize(clip_stats(real))["motion"], summarize(clip_stats(rec))["motion"]
    return m_real, m_rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--init", default="", help="continue training this VAE folder (made by this script) instead "
                                                "of starting from random weights; its record's steps are added")
    ap.add_argument("--lr", type=float, default=RECIPE["lr"], help="peak learning rate (cosine decay)")
    ap.add_argument("--motion-weight", type=float, default=0.0,
                    help="weight of the L1 between frame-to-frame differences of reconstruction and clip")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "medsora" / "assets" / "demo_vae"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    before = json.loads((Path(args.init) / "demo_vae.json").read_text()) if args.init else {}
    init = VideoVAE.from_pretrained(args.init).float() if args.init else None
    tmp = Path(tempfile.mkdtemp())
    write_dataset(tmp / "train", videos=args.videos, seed=1000, frames=100, size=64)
    write_dataset(tmp / "demo", videos=12, seed=0, frames=100, size=64)   # the demo's data, for measuring only
    clips = [half for b in loader(tmp / "train", 0, False, True) for half in (b[:, :8], b[:, 8:16])
             if half.shape[1] == 8]
    t0 = time.time()
    vae = train_tiny_vae(clips, steps=args.steps, out_dir=None, seed=0, vae=init,
                         **{**RECIPE, "lr": args.lr}, motion_weight=args.motion_weight)
    seconds = time.time() - t0
    vae.eval()
    held = list(loader(tmp / "demo", 4, True, False))
    metrics = evaluate_reconstruction(None, vae, held, tmp / "eval", progress=False)
    m_real, m_rec = motion_ratio(vae, held)
    out = Path(args.out)
    vae.vae.to(torch.float16)
    vae.save_pretrained(out)                    # fp16 on disk (half the size); loaded back as float32
    record = {"recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in RECIPE.items()}, "steps": before.get("steps", 0) + args.steps,
              "stages": before.get("stages", [{"steps": before["steps"], "lr": before["recipe"]["lr"]}] if before else [])
              + [{"steps": args.steps, "lr": args.lr, "motion_weight": args.motion_weight}],
              "train_videos": args.videos, "train_seed": 1000, "train_seconds": before.get("train_seconds", 0) + round(seconds),
              "demo_heldout_psnr": round(metrics["base"]["psnr"], 2), "demo_heldout_ssim": round(metrics["base"]["ssim"], 3),
              "motion_real": round(m_real, 3), "motion_reconstructed": round(m_rec, 3),
              "made_by": "tools/make_demo_vae.py", "torch": torch.__version__}
    (out / "demo_vae.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
