"""The `medsora` command. Thin: each subcommand parses its arguments and calls one library function.

Heavy imports (torch, av, diffusers) happen inside the handlers, so `medsora --help` is instant.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__


def _config_args(p: argparse.ArgumentParser, default_preset: str = "tiny") -> None:
    p.add_argument("--preset", default=default_preset, choices=["tiny", "S", "B", "L"],
                   help=f"named preset (default: {default_preset})")
    p.add_argument("--config", metavar="FILE", help="YAML file (sections model/data/diffusion/train; may set preset:)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="overrides applied last, e.g. train.lr=1e-4 data.root=/data/colon")


def _load(args):
    from .config import load_config

    return load_config(args.preset, args.config, args.overrides)


# ----------------------------------------------------------------------------------------------
# handlers

def cmd_config_show(args) -> int:
    from .config import to_yaml

    print(to_yaml(_load(args)), end="")
    return 0


def cmd_data_check(args) -> int:
    from .data.check import check_dataset

    cfg = _load(args)
    report = check_dataset(args.dir, cfg.data)
    print(report.format())
    return 0 if report.ok else 1


def cmd_synth(args) -> int:
    from .data.synth import write_dataset

    w, _, h = args.size.partition("x")
    size = (int(h), int(w)) if h else int(w)
    paths = write_dataset(args.out, videos=args.videos, seed=args.seed, frames=args.frames, size=size, fmt=args.format,
                          labels=args.labels)
    print(f"wrote {len(paths)} synthetic endoscopy videos to {args.out}"
          + (f" and their labels (polyp / normal) to {os.path.join(args.out, 'labels.csv')}" if args.labels else ""))
    return 0


def cmd_model_summary(args) -> int:
    from .models.summary import summary_table

    cfg = _load(args)
    print(summary_table(cfg.model))
    return 0


def _require_root(cfg, what: str) -> None:
    if not cfg.data.root:
        raise ValueError(f"set data.root=FOLDER ({what})")


def _say(message: str) -> None:
    """Print once: under torchrun, only process 0 speaks."""
    if os.environ.get("RANK", "0") == "0":
        print(message)


def cmd_cache(args) -> int:
    from .cache import build_cache, flow_targets_from_config
    from .runtime import default_device
    from .vae.autoencoder import load_vae

    cfg = _load(args)
    _require_root(cfg, "the videos to encode")
    vae = load_vae(cfg.vae, default_device(args.device))
    flow = flow_targets_from_config(cfg, vae.device) if args.flow else None
    out = build_cache(cfg, vae, args.out, flow=flow, shard_size=args.shard_size)
    _say(f"latent cache ready: {out}")
    return 0


def cmd_train(args) -> int:
    from .train import train

    cfg = _load(args)
    summary = train(cfg, args.cache, args.run_dir, resume=args.resume, device=args.device)
    _say(f"trained {summary['steps']} steps ({summary['skipped']} skipped) in {summary['seconds']:.0f}s -> "
         f"{summary['run_dir']}")
    return 0


def cmd_sample(args) -> int:
    from .config import from_dict
    from .runtime import default_device
    from .sample import resolve_checkpoint, sample
    from .vae.autoencoder import load_vae

    ckpt, meta = resolve_checkpoint(args.checkpoint)   # a run folder's newest complete checkpoint, checksummed
    ckpt_cfg = from_dict(meta["config"])
    if args.vae:
        ckpt_cfg.vae.path = args.vae
    if args.compensation:
        ckpt_cfg.vae.compensation = args.compensation
    if not ckpt_cfg.vae.path:
        raise ValueError(f"the checkpoint of {args.checkpoint} does not say which VAE its latents came from; pass "
                         "--vae FOLDER (the VAE its latent cache was built with)")
    vae = load_vae(ckpt_cfg.vae, default_device(args.device))
    if args.reconstruct:
        from .sample import reconstruct

        paths = reconstruct(ckpt, vae, args.out, num=args.reconstruct, batch_size=args.batch_size, png=args.png)
        _say(f"wrote {len(paths)} real clips through the VAE (mp4 + gif) to {args.out}")
        return 0
    paths = sample(ckpt, vae, args.out, num=args.num, batch_size=args.batch_size, sampler=args.sampler,
                   steps=args.steps, seed=args.seed, png=args.png, device=args.device, overwrite=args.overwrite,
                   compile=args.compile, first_frame=args.first_frame, guidance=args.guidance, frames=args.frames)
    _say(f"wrote {len(paths)} videos (mp4 + gif) to {args.out}")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate, format_table, table2_row

    res = evaluate(args.real, args.fake, num=args.num, metrics=args.metrics, weights_dir=args.weights, out=args.out,
                   real_stride=args.real_stride, device=args.device, real_clips=args.real_clips)
    _say(format_table(res).rstrip("\n") + "\n\n" + table2_row(res).rstrip("\n"))
    if all(r["value"] is None for r in res.values()):
        print("error: no metric was computed; the table says why for each", file=sys.stderr)
        return 2
    return 0


def cmd_vae_train(args) -> int:
    from .data.clips import video_loader
    from .runtime import default_device
    from .vae.autoencoder import VideoVAE
    from .vae.train import CompensationConfig, train_compensation

    cfg = _load(args)
    _require_root(cfg, "the videos to train on")
    clips = video_loader(cfg.data.root, cfg.data, args.holdout, batch_size=args.batch_size, seed=cfg.train.seed)
    vae = VideoVAE.from_pretrained(args.base).to(default_device(args.device))
    ccfg = CompensationConfig(epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
                              lpips_weight=args.lpips_weight, lpips_trunk=args.lpips_trunk or "", seed=cfg.train.seed)
    res = train_compensation(vae, clips, ccfg, out_dir=args.out, resume=args.resume)
    print(f"trained {res['num_trainable']:,} compensation parameters for {res['steps']} steps -> {res['path']}")
    return 0


def cmd_vae_train_tiny(args) -> int:
    from .data.clips import video_loader
    from .vae.train import train_tiny_vae

    cfg = _load(args)
    _require_root(cfg, "the videos to train on")
    clips = video_loader(cfg.data.root, cfg.data, batch_size=args.batch_size, seed=cfg.train.seed)
    train_tiny_vae(clips, steps=args.steps, out_dir=args.out, seed=cfg.train.seed)
    print(f"tiny VAE (trained from scratch) written to {args.out}; use it with vae.path={args.out}")
    return 0


def cmd_vae_eval(args) -> int:
    import json

    from .data.clips import video_loader
    from .runtime import default_device
    from .vae.autoencoder import VideoVAE
    from .vae.evaluate import evaluate_reconstruction

    cfg = _load(args)
    _require_root(cfg, "the held-out videos")
    clips = video_loader(cfg.data.root, cfg.data, args.holdout, heldout=args.holdout > 0, batch_size=1,
                         shuffle=False)
    vae = VideoVAE.from_pretrained(args.base, compensation=args.compensation).to(default_device(args.device))
    res = evaluate_reconstruction(None, vae, clips, args.out, max_clips=args.max_clips)
    print(json.dumps(res, indent=1))
    return 0


def cmd_weights(args) -> int:
    from .inventory import format_inventory, inventory

    words = [o for o in args.overrides if "=" not in o]   # `weights download NAME ...` arrives as positionals
    if words and words[0] == "download":
        args.names, args.overrides = words[1:], [o for o in args.overrides if "=" in o]
        return cmd_weights_download(args)
    if words:
        raise ValueError(f"unknown weights action {words[0]!r}: use `medsora weights` (what is found) or "
                         "`medsora weights download [NAME ...]`")
    print(format_inventory(inventory(_load(args), args.weights)))
    return 0


def cmd_weights_download(args) -> int:
    from .weights_download import CATALOG, default_dir, download

    folder = default_dir(args.dir or args.weights)
    got = download(args.names or None, folder, mirror=args.mirror)
    for name, path in got.items():
        use = CATALOG[name].use
        _say(f"{name:14s} {path}" + (f"   (use: {use}={path})" if use and "=" not in use and " " not in use
                                      else f"   (use: {use})" if use else ""))
    _say(f"{len(got)} network(s) ready in {folder}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    s = run_demo(args.out, videos=args.videos, frames=args.frames, vae_steps=args.vae_steps, train_steps=args.train_steps,
                 samples=args.samples, dino_weights=args.dino_weights or "", raft_weights=args.raft_weights or "",
                 weights_dir=args.weights, seed=args.seed, overrides=args.overrides, align=not args.no_align,
                 first_frame=not args.no_first_frame, lpips_trunk=args.lpips_trunk or "")
    met = [t for t in s["targets"] if t["met"]]
    print(f"demo done in {s['timings']['total']:.0f}s: {s['headline']}\n"
          f"targets met: {len(met)} of {len(s['targets'])}"
          + "".join(f"\n  {'met    ' if t['met'] else 'NOT met'}  {t['target']}: {t['measured']}" for t in s["targets"])
          + "".join(f"\n  {'met    ' if t['met'] else 'NOT met'}  (beyond the paper) {t['target']}: {t['measured']}"
                    for t in s.get("first_frame", {}).get("rows", []))
          + f"\nreport: {s['report']}")
    return 0


def cmd_downstream(args) -> int:
    from .downstream import DownstreamConfig, run_downstream
    from .runtime import default_device

    data = _load(args).data   # clip geometry of the training config unless given
    cfg = DownstreamConfig(arch=args.arch, weights=args.weights or "", frames=args.frames or data.num_frames,
                           stride=args.stride or data.frame_stride, size=args.size or data.size, epochs=args.epochs,
                           batch_size=args.batch_size, mu=args.mu, threshold=args.threshold, lambda_u=args.lambda_u,
                           lr=args.lr, weight_decay=args.weight_decay)
    res = run_downstream(args.train, args.test, args.unlabeled, args.out, cfg, seeds=args.seeds,
                         device=default_device(args.device))
    print(res["table"] + f"({res['f1']}; mean ± std over seeds {args.seeds}) -> {os.path.join(args.out, 'results.json')}")
    return 0


def cmd_report(args) -> int:
    from .report import build_report

    print(build_report(args.run_dir, samples_dir=args.samples, real_dir=args.real, out=args.out,
                       recon_dir=args.reconstructions))
    return 0


# ----------------------------------------------------------------------------------------------
# parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medsora", description="MedSora: train, sample and evaluate medical video "
                                "generators (Mamba diffusion + optical-flow alignment).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"medsora {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    cfg = sub.add_parser("config", help="show the resolved configuration").add_subparsers(dest="sub", metavar="ACTION")
    show = cfg.add_parser("show", help="print the resolved config of a preset (+ YAML + overrides)")
    show.add_argument("preset_name", nargs="?", metavar="PRESET", help="tiny, S, B or L")
    _config_args(show)
    show.set_defaults(func=cmd_config_show)

    data = sub.add_parser("data", help="inspect a dataset folder").add_subparsers(dest="sub", metavar="ACTION")
    check = data.add_parser("check", help="list usable videos/clips and every skipped file with its reason")
    check.add_argument("dir", help="dataset folder (videos and/or folders of frame images, nested)")
    _config_args(check)
    check.set_defaults(func=cmd_data_check)

    synth = sub.add_parser("synth", help="write synthetic endoscopy-like videos")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--videos", type=int, default=8, help="number of videos (default 8)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--frames", type=int, default=64, help="frames per video (default 64)")
    synth.add_argument("--size", default="128", help="frame size: S (square) or WxH, e.g. 768x576 (default 128)")
    synth.add_argument("--format", choices=["mp4", "frames"], default="mp4")
    synth.add_argument("--labels", action="store_true",
                       help="draw even videos with a polyp, odd ones without, and write OUT/labels.csv (path,label)")
    synth.set_defaults(func=cmd_synth)

    model = sub.add_parser("model", help="inspect the backbone").add_subparsers(dest="sub", metavar="ACTION")
    summ = model.add_parser("summary", help="parameters per component of a preset")
    summ.add_argument("preset_name", nargs="?", metavar="PRESET", help="tiny, S, B or L")
    _config_args(summ, default_preset="B")
    summ.set_defaults(func=cmd_model_summary)
    cache = sub.add_parser("cache", help="encode every clip once (VAE latents, optional flow targets)")
    cache.add_argument("--out", required=True, help="cache folder (resumes if it exists)")
    cache.add_argument("--flow", action="store_true", help="also compute the optical-flow alignment targets")
    cache.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    cache.add_argument("--shard-size", type=int, default=32,
                       help="clips per shard file: what a resume redoes at most, and what torchrun processes share")
    _config_args(cache)
    cache.set_defaults(func=cmd_cache)

    train = sub.add_parser("train", help="train the backbone from a latent cache")
    train.add_argument("--cache", required=True, help="latent cache folder (from `medsora cache`)")
    train.add_argument("--run-dir", default=None, help="run folder (default: train.out_dir)")
    train.add_argument("--resume", default=None,
                       help="'auto' (newest checkpoint that verifies), a checkpoint folder, or 'restart' (start over: "
                            "the run folder's checkpoints and log are moved to RUN/previous-TIME/, nothing is deleted)")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    _config_args(train)
    train.set_defaults(func=cmd_train)

    smp = sub.add_parser("sample", help="sample videos from a checkpoint's EMA weights")
    smp.add_argument("checkpoint", help="checkpoint folder or run folder (its newest checkpoint)")
    smp.add_argument("--out", required=True, help="output folder for mp4/gif")
    smp.add_argument("--num-videos", "--num", dest="num", type=int, default=None,
                     help="videos to write (default 8, with --first-frame one per image; under torchrun spell it "
                          "--num-videos: torchrun reads --num as its own)")
    smp.add_argument("--batch-size", type=int, default=4)
    smp.add_argument("--sampler", choices=["ddim", "ddpm", "dpmpp-2m", "dpmpp-2m-sde", "unipc"], default=None,
                     help="default: the config's (ddim); dpmpp-2m at 20 steps: see README 'Sampling'")
    smp.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--png", action="store_true", help="also write PNG frames")
    smp.add_argument("--overwrite", action="store_true",
                     help="replace the samples of another run or other settings found in --out (refused otherwise)")
    smp.add_argument("--vae", default=None, help="VAE folder (default: the one in the checkpoint's config)")
    smp.add_argument("--compensation", default=None, help="frequency-compensation weights for the VAE")
    smp.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    smp.add_argument("--compile", action="store_true",
                     help="torch.compile the backbone (pays off on GPUs and for many videos; same samples)")
    smp.add_argument("--reconstruct", type=int, default=0, metavar="N",
                     help="instead of sampling, decode N real clips of the run's latent cache: what the VAE alone "
                          "keeps, the reference to compare samples with (medsora report --reconstructions)")
    smp.add_argument("--first-frame", default=None, metavar="PATH",
                     help="start each video from a given frame: an image, a video (its first frame) or a folder of "
                          "them, one video per image; needs a model.first_frame checkpoint (docs/first_frame.md)")
    smp.add_argument("--guidance", type=float, default=1.0, metavar="S",
                     help="guidance on the first frame: eps_u + S (eps_c - eps_u); 1 = the conditional model alone")
    smp.add_argument("--frames", type=int, default=None, metavar="N",
                     help="frames per video (default: one clip); beyond one clip, segments chained on their last "
                          "frame (needs a model.first_frame checkpoint)")
    smp.set_defaults(func=cmd_sample)
    ev = sub.add_parser("eval", help="FVD, CD-FVD, FID, IS and frame consistency of generated vs real videos")
    ev.add_argument("--real", required=True, help="folder of real videos / frame folders")
    ev.add_argument("--fake", required=True, help="folder of generated videos")
    ev.add_argument("--num-clips", "--num", dest="num", type=int, default=2048,
                    help="clips per set (default 2048, the paper's; under torchrun spell it --num-clips)")
    ev.add_argument("--metrics", default="fvd,cdfvd,fid,isv,is,fc",
                    help="comma-separated subset (isv: the tables' video IS, C3D; is: IS of the frames)")
    ev.add_argument("--real-clips", choices=["per-video", "fill"], default="per-video",
                    help="per-video: one clip per real video (StyleGAN-V, the published tables); fill: seeded random "
                         "clips of the videos in turn until --num-clips")
    ev.add_argument("--weights", default=None, help="folder holding the metric networks' weight files")
    ev.add_argument("--out", default=None, help="JSON path for the results (a .md table is written beside it)")
    ev.add_argument("--real-stride", type=int, default=3, help="frame stride of real clips (1 for pre-cut clips)")
    ev.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ev.set_defaults(func=cmd_eval)
    wts = sub.add_parser("weights", help="which pretrained weights are on this machine; `weights download` fetches them",
                         usage="medsora weights [--weights DIR] [section.key=value ...]\n"
                               "       medsora weights download [NAME ...] [--dir DIR] [--mirror URL]",
                         epilog="NAME: i3d c3d inception videomae clip raft dino cogvideox-vae lpips-vgg (default: all "
                                "missing). Files are verified (sha256) and written atomically; a partial download "
                                "resumes. --mirror (or $MEDSORA_WEIGHTS_MIRROR) fetches file F from URL/F; hub folders "
                                "follow HF_ENDPOINT.")
    wts.add_argument("--weights", default=None, help="folder of the metric networks' weights (as `medsora eval`)")
    wts.add_argument("--dir", default=None, help="download: target folder (default: --weights, $MEDSORA_WEIGHTS, "
                                                 "else ~/.cache/medsora/weights)")
    wts.add_argument("--mirror", default=None, help="download: base URL standing in for the published sources")
    _config_args(wts)
    wts.set_defaults(func=cmd_weights)
    vae = sub.add_parser("vae", help="frequency-compensation VAE: train, evaluate, or train a tiny VAE from scratch")
    vae_sub = vae.add_subparsers(dest="sub", metavar="ACTION")
    vt = vae_sub.add_parser("train", help="train the compensation modules on a frozen base VAE (Eq. 16)")
    vt.add_argument("--base", required=True, help="base VAE folder (CogVideoX-2b `vae`, or a tiny VAE folder)")
    vt.add_argument("--out", required=True, help="output folder (compensation.safetensors + log)")
    vt.add_argument("--epochs", type=int, default=10)
    vt.add_argument("--max-steps", type=int, default=0)
    vt.add_argument("--lr", type=float, default=2e-7)
    vt.add_argument("--batch-size", type=int, default=1)
    vt.add_argument("--holdout", type=int, default=0, help="last clips kept out for `vae eval`")
    vt.add_argument("--lpips-weight", type=float, default=1.0, help="0 switches LPIPS off (no VGG weights needed)")
    vt.add_argument("--lpips-trunk", default=None, help="torchvision VGG16 ImageNet weights file for LPIPS")
    vt.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    vt.add_argument("--resume", action="store_true",
                    help="continue from the newest end-of-epoch checkpoint in --out (after a stop or a kill)")
    _config_args(vt)
    vt.set_defaults(func=cmd_vae_train)
    vtt = vae_sub.add_parser("train-tiny", help="train a whole tiny VAE from scratch (demo / no CogVideoX weights)")
    vtt.add_argument("--out", required=True, help="VAE folder to write")
    vtt.add_argument("--steps", type=int, default=300)
    vtt.add_argument("--batch-size", type=int, default=2)
    _config_args(vtt)
    vtt.set_defaults(func=cmd_vae_train_tiny)
    ve = vae_sub.add_parser("eval", help="PSNR / SSIM and a temporal figure: base vs compensated")
    ve.add_argument("--base", required=True)
    ve.add_argument("--compensation", default=None, help="compensation.safetensors (default: none = base only)")
    ve.add_argument("--out", required=True)
    ve.add_argument("--holdout", type=int, default=0, help="evaluate on the last N clips only")
    ve.add_argument("--max-clips", type=int, default=0)
    ve.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    _config_args(ve)
    ve.set_defaults(func=cmd_vae_eval)

    demo = sub.add_parser("demo", help="synthetic data -> tiny VAE -> cache -> tiny MedSora -> samples -> report")
    demo.add_argument("--out", default="runs/demo", help="run folder (re-running skips finished stages)")
    demo.add_argument("--videos", type=int, default=12, help="synthetic videos (default 12)")
    demo.add_argument("--frames", type=int, default=100, help="frames per synthetic video (default 100)")
    demo.add_argument("--vae-steps", type=int, default=40,
                      help="steps of frequency-compensation training on the packaged pretrained VAE (0: none)")
    demo.add_argument("--train-steps", type=int, default=1700)
    demo.add_argument("--samples", type=int, default=8)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--dino-weights", default=None,
                      help="DINO ViT-S/8 weights: align with the paper's DINO features (default: weight-free "
                           "flow-patch features, not the paper's)")
    demo.add_argument("--no-align", action="store_true", help="train without optical-flow alignment (the ablation)")
    demo.add_argument("--no-first-frame", action="store_true",
                      help="train the paper's unconditional model only (default: with model.first_frame on, clips of "
                           "17 frames, and the report shows an image-conditioned sample and a long video)")
    demo.add_argument("--raft-weights", default=None, help="RAFT-large weights (default: Farneback flow)")
    demo.add_argument("--lpips-trunk", default=None, help="torchvision VGG16 ImageNet weights (vgg16-397923af.pth): "
                      "the compensation modules then train with the paper's whole loss, L1 + LPIPS + 0.1 FFL "
                      "(default: LPIPS off)")
    demo.add_argument("--weights", default=None, help="folder of metric network weights (I3D, Inception, ...)")
    demo.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides (tiny preset)")
    demo.set_defaults(func=cmd_demo)

    _downstream_parser(sub)

    rep = sub.add_parser("report", help="build report.html for a run folder")
    rep.add_argument("run_dir")
    rep.add_argument("--samples", default=None, help="generated videos (default: RUN_DIR/samples)")
    rep.add_argument("--real", default=None, help="real videos (default: the config's data.root)")
    rep.add_argument("--reconstructions", default=None,
                     help="real clips through the VAE, from `medsora sample --reconstruct N` (default: "
                          "RUN_DIR/reconstructions if present)")
    rep.add_argument("--out", default=None, help="HTML path (default: RUN_DIR/report.html)")
    rep.set_defaults(func=cmd_report)
    return p


def _downstream_parser(sub) -> None:
    ds = sub.add_parser("downstream", help="Table 4: a video classifier supervised-only vs + generated videos "
                                           "as unlabeled data (FixMatch); F1 and accuracy")
    ds.add_argument("--train", required=True, metavar="CSV", help="labelled training videos: lines of path,label")
    ds.add_argument("--test", required=True, metavar="CSV", help="labelled test videos: lines of path,label")
    ds.add_argument("--unlabeled", metavar="DIR", help="unlabeled (generated) videos; without it: supervised only")
    ds.add_argument("--out", required=True, help="output folder (re-running resumes / skips finished runs)")
    ds.add_argument("--arch", default="tiny", choices=["tiny", "r3d_18", "mc3_18", "r2plus1d_18"],
                    help="torchvision VideoResNet classifier (default tiny; the paper's setting: r3d_18)")
    ds.add_argument("--weights", metavar="FILE", help="initial classifier weights (.pth state dict or .safetensors)")
    ds.add_argument("--frames", type=int, help="frames per clip (default: data.num_frames)")
    ds.add_argument("--stride", type=int, help="take every k-th frame (default: data.frame_stride)")
    ds.add_argument("--size", type=int, help="clip size in px (default: data.size)")
    ds.add_argument("--epochs", type=int, default=30)
    ds.add_argument("--batch-size", type=int, default=8, help="labelled clips per step")
    ds.add_argument("--mu", type=int, default=2, help="unlabeled clips per labelled clip in a step")
    ds.add_argument("--threshold", type=float, default=0.95, help="confidence a pseudo-label needs")
    ds.add_argument("--lambda-u", type=float, default=1.0, help="weight of the unlabeled loss")
    ds.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (cosine to 0)")
    ds.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    ds.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ds.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _config_args(ds)
    ds.set_defaults(func=cmd_downstream)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # overrides (section.key=value) may stand anywhere on the line, also after an option
    args, unknown = parser.parse_known_args(argv)
    stray = [u for u in unknown if u.startswith("-") or "=" not in u or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if unknown:
        args.overrides = [*args.overrides, *unknown]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if getattr(args, "preset_name", None) and "=" in args.preset_name:  # an override, not a preset name
        args.overrides.insert(0, args.preset_name)
    elif getattr(args, "preset_name", None):
        args.preset = args.preset_name
    if not hasattr(args, "func"):
        # `medsora`, `medsora data`, ...: show the relevant help
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    from .errors import MedsoraError

    try:
        return int(args.func(args) or 0)
    except (MedsoraError, OSError, ValueError) as e:  # bad input, files or settings: one line, no traceback
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl-C: every command writes atomically, so what finished is kept
        if args.verbose:
            raise
        print("\ninterrupted; rerun the same command to resume (train: add --resume auto)", file=sys.stderr)  # below a bar
        return 130


if __name__ == "__main__":
    sys.exit(main())
