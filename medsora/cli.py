"""The `medsora` command. Thin: each subcommand parses its arguments and calls one library function.

Heavy imports (torch, av, diffusers) happen inside the handlers, so `medsora --help` is instant.
"""
from __future__ import annotations

import argparse
import logging
import sys


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
    paths = write_dataset(args.out, videos=args.videos, seed=args.seed, frames=args.frames, size=size, fmt=args.format)
    print(f"wrote {len(paths)} synthetic endoscopy videos to {args.out}")
    return 0


def cmd_model_summary(args) -> int:
    from .models.summary import summary_table

    cfg = _load(args)
    print(summary_table(cfg.model))
    return 0


def load_vae(cfg, device=None):
    from .vae.autoencoder import VideoVAE

    if not cfg.vae.path:
        raise ValueError("no VAE given: set vae.path=FOLDER (a CogVideoX `vae` folder, or a tiny VAE trained with "
                         "`medsora vae train-tiny`)")
    vae = VideoVAE.from_pretrained(cfg.vae.path, compensation=cfg.vae.compensation or None)
    if device:
        vae.to(device)
    if cfg.vae.tiling:
        vae.enable_tiling()
    return vae.eval()


def cmd_cache(args) -> int:
    from .cache import build_cache, flow_targets_from_config

    cfg = _load(args)
    if not cfg.data.root:
        raise ValueError("set data.root=FOLDER (the videos to encode)")
    vae = load_vae(cfg, args.device)
    flow = flow_targets_from_config(cfg, vae.device) if args.flow else None
    out = build_cache(cfg, vae, args.out, flow=flow)
    print(f"latent cache ready: {out}")
    return 0


def cmd_train(args) -> int:
    from .train import train

    cfg = _load(args)
    summary = train(cfg, args.cache, args.run_dir, resume=args.resume, device=args.device)
    print(f"trained {summary['steps']} steps ({summary['skipped']} skipped) in {summary['seconds']:.0f}s -> "
          f"{summary['run_dir']}")
    return 0


def cmd_sample(args) -> int:
    from .sample import resolve_checkpoint, sample
    from .checkpoint import verify
    from .config import from_dict

    ckpt_cfg = from_dict(verify(resolve_checkpoint(args.checkpoint))["config"])
    if args.vae:
        ckpt_cfg.vae.path = args.vae
    if args.compensation:
        ckpt_cfg.vae.compensation = args.compensation
    vae = load_vae(ckpt_cfg, args.device)
    paths = sample(args.checkpoint, vae, args.out, num=args.num, batch_size=args.batch_size, sampler=args.sampler,
                   steps=args.steps, seed=args.seed, png=args.png, device=args.device)
    print(f"wrote {len(paths)} videos (mp4 + gif) to {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------
# parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medsora", description="MedSora: train, sample and evaluate medical video "
                                "generators (Mamba diffusion + optical-flow alignment).")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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
    _config_args(cache)
    cache.set_defaults(func=cmd_cache)

    train = sub.add_parser("train", help="train the backbone from a latent cache")
    train.add_argument("--cache", required=True, help="latent cache folder (from `medsora cache`)")
    train.add_argument("--run-dir", default=None, help="run folder (default: train.out_dir)")
    train.add_argument("--resume", default=None, help="'auto' (newest complete checkpoint) or a checkpoint folder")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    _config_args(train)
    train.set_defaults(func=cmd_train)

    smp = sub.add_parser("sample", help="sample videos from a checkpoint's EMA weights")
    smp.add_argument("checkpoint", help="checkpoint folder or run folder (its newest checkpoint)")
    smp.add_argument("--out", required=True, help="output folder for mp4/gif")
    smp.add_argument("--num", type=int, default=8)
    smp.add_argument("--batch-size", type=int, default=4)
    smp.add_argument("--sampler", choices=["ddim", "ddpm"], default=None, help="default: the config's")
    smp.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--png", action="store_true", help="also write PNG frames")
    smp.add_argument("--vae", default=None, help="VAE folder (default: the one in the checkpoint's config)")
    smp.add_argument("--compensation", default=None, help="frequency-compensation weights for the VAE")
    smp.add_argument("--device", default=None)
    smp.set_defaults(func=cmd_sample)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if getattr(args, "preset_name", None):
        args.preset = args.preset_name
    if not hasattr(args, "func"):
        # `medsora`, `medsora data`, ...: show the relevant help
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    from .config import ConfigError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError, NotADirectoryError, ValueError) as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
