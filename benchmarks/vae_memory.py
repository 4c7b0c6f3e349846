"""Peak memory and time to encode + decode one clip with the CogVideoX-2b-sized VAE on CPU.

Random weights (the architecture is what costs memory), compensation modules attached, tiling and
slicing on. diffusers encodes 8 frames at a time (9 for the first chunk) and decodes 2 latent frames at
a time (3 for the first), with a causal conv cache, so the working set is bounded by one chunk; the
number of frames mostly changes the time.

    python benchmarks/vae_memory.py --frames 49 --size 256          # the question of the issue
    python benchmarks/vae_memory.py --frames 9 --size 256           # one encoder chunk (the largest)
"""
from __future__ import annotations

import argparse
import platform
import resource
import time
from pathlib import Path

import torch

from medsora.vae.autoencoder import COGVIDEOX_2B_CONFIG, VideoVAE


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--no-tiling", action="store_true")
    ap.add_argument("--no-compensation", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/vae_memory.md")
    args = ap.parse_args()

    torch.manual_seed(0)
    rows = [("torch threads", str(torch.get_num_threads())), ("machine", platform.processor() or platform.machine())]
    t0 = time.time()
    vae = VideoVAE.from_config(COGVIDEOX_2B_CONFIG, seed=0)
    if not args.no_compensation:
        vae.add_compensation()
    if not args.no_tiling:
        vae.enable_tiling()
    n_base = sum(p.numel() for p in vae.vae.parameters())
    n_comp = sum(p.numel() for p in vae.compensation.parameters()) if vae.compensation else 0
    rows += [("base parameters", f"{n_base:,}"), ("compensation parameters", f"{n_comp:,}"),
             ("peak RSS after building the model", f"{peak_rss_gib():.2f} GiB ({time.time() - t0:.0f} s)")]
    print(rows, flush=True)

    x = torch.rand(1, args.frames, 3, args.size, args.size) * 2 - 1
    with torch.inference_mode():
        t = time.time()
        z = vae.encode(x)
        t_enc = time.time() - t
        rows += [("latents", str(tuple(z.shape))), ("encode time", f"{t_enc:.0f} s"),
                 ("peak RSS after encode", f"{peak_rss_gib():.2f} GiB")]
        print(rows[-3:], flush=True)
        t = time.time()
        y = vae.decode(z)
        t_dec = time.time() - t
        rows += [("decoded", str(tuple(y.shape))), ("decode time", f"{t_dec:.0f} s"),
                 ("peak RSS after decode (whole run)", f"{peak_rss_gib():.2f} GiB")]
        print(rows[-3:], flush=True)

    title = (f"CogVideoX-2b-sized VAE (random weights{', + compensation' if n_comp else ''}), one clip of "
             f"{args.frames} x {args.size} x {args.size}, tiling {'off' if args.no_tiling else 'on'}, CPU float32")
    md = [f"## {title}", "", "| quantity | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    md += ["", f"Command: `python benchmarks/vae_memory.py --frames {args.frames} --size {args.size}"
               f"{' --no-tiling' if args.no_tiling else ''}{' --no-compensation' if args.no_compensation else ''}`", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
