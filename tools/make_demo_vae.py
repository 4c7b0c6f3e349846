"""Train the demo's pretrained VAE (`medsora/assets/demo_vae/`), as CogVideoX's VAE is pretrained for the paper.

The demo cannot train a VAE that keeps texture in its 10-minute budget on a 2-core CPU (benchmarks/results/
demo_vae.md: 27 dB at best in 150 s). So, like the paper, it starts from a pretrained VAE and trains only the
frequency-compensation modules on top. This script makes that VAE: a `tiny` CogVideoX VAE (3D causal, 4x spatial,
4x temporal, 8 latent channels, widths 16/32/64) trained from scratch on synthetic clips of seeds disjoint from
the demo's (write_dataset seed 1000 vs the demo's 0), then measured on the demo's own held-out clips.

    python tools/make_demo_vae.py --steps 1500            # ~15-20 min on a 2-core CPU; writes medsora/assets/demo_vae
    python tools/make_demo_vae.py --init medsora/assets/demo_vae --steps 1000 --lr 1e-3   # train the packaged one on
    python tools/make_demo_vae.py --init medsora/assets/demo_vae --steps 0 --adv-steps 1000   # + GAN loss (sharper)

`--adv-steps N` ends with N steps of adversarial training (medsora/vae/adversarial.py: reconstruction + hinge GAN
loss from a frame-pair discriminator, adaptively weighted), as CogVideoX's VAE is trained; L1/MSE alone leave it blurry.
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
from medsora.vae.adversarial import AdversarialConfig, train_adversarial  # noqa: E402
from medsora.vae.autoencoder import VideoVAE  # noqa: E402
from medsora.vae.train import train_tiny_vae  # noqa: E402

RECIPE = dict(latent_channels=8, block_out_channels=(16, 32, 64), lr=5e-3, mse_weight=1.0, min_lr_ratio=0.05)


def loader(root, holdout, heldout, shuffle, seed=0):
    cfg = load_config("tiny", overrides=[f"data.root={root}"])
    return video_loader(root, cfg.data, holdout, heldout, batch_size=2, shuffle=shuffle, seed=seed)


def real_and_reconstructed(vae, clips) -> tuple[dict, dict]:
    """The report's clip figures (medsora.report.clip_stats: motion, sharpness, ...) of the clips and of their
    reconstructions."""
    to8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
    real, rec = [], []
    with torch.no_grad():
        for b in clips:
            r = vae.decode(vae.encode(b))
            real += [to8(c) for c in b]
            rec += [to8(c) for c in r]
    return summarize(clip_stats(real)), summarize(clip_stats(rec))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--init", default="", help="continue training this VAE folder (made by this script) instead "
                                                "of starting from random weights; its record's steps are added")
    ap.add_argument("--lr", type=float, default=RECIPE["lr"], help="peak learning rate (cosine decay)")
    ap.add_argument("--motion-weight", type=float, default=0.0,
                    help="weight of the L1 between frame-to-frame differences of reconstruction and clip")
    ap.add_argument("--adv-steps", type=int, default=0, help="then this many steps with the adversarial loss")
    ap.add_argument("--adv-weight", type=float, default=AdversarialConfig.adv_weight,
                    help="adversarial / reconstruction gradient ratio at the decoder's last layer")
    ap.add_argument("--adv-lr", type=float, default=AdversarialConfig.lr)
    ap.add_argument("--adv-decoder-only", action="store_true", help="keep the encoder (and the latent space) as is")
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
    if args.steps <= 0 and (init is None or args.adv_steps <= 0):
        ap.error("--steps 0 needs --init and --adv-steps")
    t0 = time.time()
    stages, vae = [], init
    if args.steps > 0:
        vae = train_tiny_vae(clips, steps=args.steps, out_dir=None, seed=0, vae=init,
                             **{**RECIPE, "lr": args.lr}, motion_weight=args.motion_weight)
        stages.append({"steps": args.steps, "lr": args.lr, "motion_weight": args.motion_weight})
    if args.adv_steps > 0:
        adv = AdversarialConfig(steps=args.adv_steps, lr=args.adv_lr, adv_weight=args.adv_weight,
                                train_encoder=not args.adv_decoder_only)
        train_adversarial(vae, clips, adv)
        stages.append({"steps": args.adv_steps, "lr": args.adv_lr, "adversarial": {
            "weight": args.adv_weight, "train_encoder": adv.train_encoder, "d_warmup": adv.d_warmup}})
    seconds = time.time() - t0
    vae.eval()
    held = list(loader(tmp / "demo", 4, True, False))
    metrics = evaluate_reconstruction(None, vae, held, tmp / "eval", progress=False)
    real, rec = real_and_reconstructed(vae, held)
    out = Path(args.out)
    vae.vae.to(torch.float16)
    vae.save_pretrained(out)                    # fp16 on disk (half the size); loaded back as float32
    record = {"recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in RECIPE.items()}, "steps": before.get("steps", 0) + args.steps + args.adv_steps,
              "stages": before.get("stages", [{"steps": before["steps"], "lr": before["recipe"]["lr"]}] if before else [])
              + stages,
              "train_videos": args.videos, "train_seed": 1000, "train_seconds": before.get("train_seconds", 0) + round(seconds),
              "demo_heldout_psnr": round(metrics["base"]["psnr"], 2), "demo_heldout_ssim": round(metrics["base"]["ssim"], 3),
              "motion_real": round(real["motion"], 3), "motion_reconstructed": round(rec["motion"], 3),
              "sharpness_real": round(real["sharpness"], 1), "sharpness_reconstructed": round(rec["sharpness"], 1),
              "flow_jitter_real": round(real["flow_jitter"], 3), "flow_jitter_reconstructed": round(rec["flow_jitter"], 3),
              "made_by": "tools/make_demo_vae.py", "torch": torch.__version__}
    (out / "demo_vae.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
