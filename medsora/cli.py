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

    paths = write_dataset(args.out, videos=args.videos, seed=args.seed, frames=args.frames, size=args.size,
                          fmt=args.format)
    print(f"wrote {len(paths)} synthetic endoscopy videos to {args.out}")
    return 0


def cmd_model_summary(args) -> int:
    from .models.summary import summary_table

    cfg = _load(args)
    print(summary_table(cfg.model))
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
    synth.add_argument("--size", type=int, default=128, help="frame size in pixels (default 128)")
    synth.add_argument("--format", choices=["mp4", "frames"], default="mp4")
    synth.set_defaults(func=cmd_synth)

    model = sub.add_parser("model", help="inspect the backbone").add_subparsers(dest="sub", metavar="ACTION")
    summ = model.add_parser("summary", help="parameters per component of a preset")
    summ.add_argument("preset_name", nargs="?", metavar="PRESET", help="tiny, S, B or L")
    _config_args(summ, default_preset="B")
    summ.set_defaults(func=cmd_model_summary)
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
