"""What each extra start offset (`data.clip_offsets`) costs the latent cache: bytes and CPU encode time per clip.

    python benchmarks/cache_offsets.py [--repeats 5] [--no-cogvideox] [--colon-clips 4200]
                                       [--out benchmarks/results/cache_offsets.md]

`medsora cache` stores, per clip and per start offset, the VAE posterior mean + std of the clip's video latents in
both flips (and, with --flow, fp16 alignment targets per DINO layer in both flips); the image chunk is stored once
per clip. This script:

1. bytes: builds real caches with `build_cache` (flow off) on synthetic videos at clip_offsets=1 and 2 and takes the
   difference of the shard files per clip, for (a) the tiny preset with `VideoVAE.tiny(seed=0)` and (b) B data
   geometry (128 px, 16 frames) with a CogVideoX-2b-config VAE of random weights (16 latent channels). The flow
   targets of B are computed analytically, and checked on a real cache (tiny VAE at B geometry, random RAFT/DINO:
   the bytes do not depend on the weights).
2. time per offset per clip on this CPU: `_encode_clip` at offsets=1 vs 2 (tiny, median of --repeats), the
   CogVideoX-2b VAE's `encode_posterior` on both flips of a 16-frame 128 px clip (the calls the cache build makes;
   the offset-0 encode and the image chunk are not run twice: the K=2 build reuses the K=1 build's identical
   results), and the flow targets (RAFT large, random weights, 20 updates, 16 pairs at 128 px + DINO on both flips;
   likewise run once per offset, 2 runs). The CogVideoX encodes and the flow are ~5 CPU minutes on 2 cores.
3. extrapolates to Colonoscopic (210 videos, 768x576; their lengths are not known here, so the clip count is an
   assumption given by --colon-clips).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import struct
import tempfile
import time
from pathlib import Path

import torch

from medsora.cache import FlowTargets, _encode_clip, build_cache
from medsora.config import load_config
from medsora.data.clips import ClipDataset
from medsora.data.index import clip_span
from medsora.data.synth import write_dataset
from medsora.flow.dino import load_dino
from medsora.flow.flow import build_flow
from medsora.flow.targets import Sampling, clip_targets
from medsora.vae.autoencoder import VideoVAE

MiB, GiB = 2**20, 2**30


def load() -> str:
    return "load average %.2f, %.2f, %.2f" % os.getloadavg()


def shard_bytes(cache_dir: Path) -> dict:
    """File bytes of the shards, and tensor payload bytes by kind (video / images / flow) from their headers."""
    out = {"file": 0, "header": 0, "video": 0, "images": 0, "flow": 0}
    for path in sorted(cache_dir.glob("shard-*.safetensors")):
        out["file"] += path.stat().st_size
        with path.open("rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        out["header"] += 8 + n
        for key, info in header.items():
            if key == "__metadata__":
                continue
            kind = "flow" if ".flow." in key else "images" if ".images." in key else "video"
            begin, end = info["data_offsets"]
            out[kind] += end - begin
    return out


class MemoEncode:
    """vae.encode_posterior (or a flow-target fn) that remembers its results (same input -> the same tensors,
    computed once: both are deterministic) and times the calls it really runs: [(x.shape[1], seconds)]."""

    def __init__(self, fn):
        self.fn, self.memo, self.calls = fn, {}, []

    def __call__(self, x: torch.Tensor):
        key = (tuple(x.shape), hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest())
        if key not in self.memo:
            t0 = time.perf_counter()
            self.memo[key] = self.fn(x)
            self.calls.append((x.shape[1], time.perf_counter() - t0))
        return self.memo[key]


def caches(cfg, vae, root: Path, work: Path, tag: str, flow: FlowTargets | None = None) -> dict:
    """Build the K=1 and K=2 caches of `root`; bytes per clip and build seconds."""
    out = {}
    for k in (1, 2):
        cfg.data.clip_offsets = k
        t0 = time.perf_counter()
        d = build_cache(cfg, vae, work / f"{tag}-k{k}", flow=flow, progress=False)
        out[k] = {"seconds": time.perf_counter() - t0, **shard_bytes(d)}
        out["clips"] = json.loads((d / "manifest.json").read_text())["num_clips"]
    print(f"{tag}: {out}", flush=True)
    return out


def per_clip(c: dict, key: str, k: int) -> float:
    return c[k][key] / c["clips"]


def delta(c: dict, key: str) -> float:
    return (c[2][key] - c[1][key]) / c["clips"]


def median_times(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timing repeats of the tiny encode")
    p.add_argument("--no-cogvideox", action="store_true", help="skip the CogVideoX-2b-size VAE (~4 CPU minutes)")
    p.add_argument("--no-flow", action="store_true", help="skip the flow-target check and timing")
    p.add_argument("--colon-videos", type=int, default=210)
    p.add_argument("--colon-clips", type=int, default=4200,
                   help="ASSUMED number of clip windows of Colonoscopic (20 per video; the lengths are unknown here)")
    p.add_argument("--out", default="benchmarks/results/cache_offsets.md")
    args = p.parse_args()
    torch.manual_seed(0)
    load_start, t_start = load(), time.perf_counter()
    print(load_start, flush=True)
    work = Path(tempfile.mkdtemp(prefix="cache_offsets-"))
    rows_bytes, rows_time, notes = [], [], []

    # ---------------------------------------------------------------- (a) tiny preset, tiny VAE
    tiny_root = work / "tiny-data"
    write_dataset(tiny_root, videos=4, seed=0, frames=40, size=64, fmt="mp4")   # as tests/conftest.py: 1 clip each
    cfg = load_config("tiny", overrides=[f"data.root={tiny_root}"])
    vae = VideoVAE.tiny(seed=0)
    d = cfg.data
    tiny_shape = (vae.latent_frames(d.num_frames), vae.latent_channels, d.size // 8, d.size // 8)
    c = caches(cfg, vae, tiny_root, work, "tiny")
    analytic = 2 * 2 * 4 * torch.Size(tiny_shape).numel()
    rows_bytes.append(("tiny preset, `VideoVAE.tiny` (4 ch)", f"{d.size} px, {d.num_frames} fr", tiny_shape,
                       c["clips"], per_clip(c, "file", 1), per_clip(c, "file", 2), delta(c, "file"),
                       delta(c, "video"), analytic, per_clip(c, "images", 1)))
    ds = ClipDataset(tiny_root, cfg.data, seed=cfg.train.seed, progress=False)
    with torch.no_grad():
        _encode_clip(ds, 0, vae, None, 1)                                               # warm-up
        t1 = median_times(lambda: _encode_clip(ds, 0, vae, None, 1), args.repeats)
        t2 = median_times(lambda: _encode_clip(ds, 0, vae, None, 2), args.repeats)
        video = ds.load_clip(0, flip=False, offset=0, offsets=1)["video"]
        both = torch.stack([video, video.flip(-1)])[:, :-1]
        t_enc = median_times(lambda: vae.encode_posterior(both), args.repeats)
    rows_time.append(("tiny: `_encode_clip`, K=1 (read + video + image chunk, 2 flips)", t1, f"median of {args.repeats}"))
    rows_time.append(("tiny: `_encode_clip`, K=2", t2, f"median of {args.repeats}"))
    rows_time.append(("tiny: **per extra offset** (K=2 - K=1)", t2 - t1, "difference of medians"))
    rows_time.append((f"tiny: `encode_posterior`, 2 flips x {d.num_frames} fr at {d.size} px", t_enc,
                      f"median of {args.repeats}"))
    print(rows_time[-4:], flush=True)

    # ---------------------------------------------------------------- B data geometry
    b_root = work / "b-data"
    b_over = [f"data.root={b_root}", "data.size=128", "data.num_frames=16"]
    cfg_b = load_config("B", overrides=b_over)
    db, mb = cfg_b.data, cfg_b.model
    # 1 clip window, and room after it for every start offset (a source of exactly one window would clamp them
    # all to start 0: `ClipDataset.start` keeps the clip inside the source)
    write_dataset(b_root, videos=1, seed=0, frames=2 * clip_span(db.num_frames, db.frame_stride) - 1, size=db.size,
                  fmt="mp4")
    lat_frames, img_frames = vae.latent_frames(db.num_frames), vae.latent_frames(db.num_images)
    b_shape = (lat_frames, 16, db.size // 8, db.size // 8)
    tokens = (mb.input_size[0] // mb.patch_size) * (mb.input_size[1] // mb.patch_size)
    layers = tuple(sorted(set(mb.align_layers)))
    flow_shape = (lat_frames, tokens, mb.hidden_size)
    flow_analytic = 2 * len(layers) * 2 * torch.Size(flow_shape).numel()                 # 2 flips, fp16
    b_video_analytic = 2 * 2 * 4 * torch.Size(b_shape).numel()
    b_images_analytic = 2 * 2 * 4 * img_frames * 16 * (db.size // 8) ** 2
    b_video, b_images, b_flow = b_video_analytic, b_images_analytic, flow_analytic
    t_cog = t_cog_img = None

    if not args.no_cogvideox:
        cog = VideoVAE.from_config(seed=0)
        memo = MemoEncode(cog.encode_posterior)
        cog.encode_posterior = memo
        c = caches(cfg_b, cog, b_root, work, "B-cogvideox")
        rows_bytes.append(("B geometry, CogVideoX-2b config, random weights (16 ch)", f"{db.size} px, {db.num_frames} fr",
                           b_shape, c["clips"], per_clip(c, "file", 1), per_clip(c, "file", 2), delta(c, "file"),
                           delta(c, "video"), b_video_analytic, per_clip(c, "images", 1)))
        b_video, b_images = delta(c, "file"), per_clip(c, "file", 1) - delta(c, "file")   # K-independent rest
        vids = [s for n, s in memo.calls if n == db.num_frames]
        imgs = [s for n, s in memo.calls if n == db.num_images]
        if len(vids) != 2:
            notes.append(f"WARNING: {len(vids)} distinct CogVideoX video encodes, expected 2 (offsets 0 and 1)")
        t_cog, t_cog_img = statistics.median(vids), statistics.median(imgs) if imgs else 0.0
        rows_time.append((f"CogVideoX-2b (random): `encode_posterior`, 2 flips x {db.num_frames} fr at {db.size} px "
                          "= **per offset**", t_cog, f"median of {len(vids)} ({', '.join(f'{s:.1f}' for s in vids)})"))
        rows_time.append((f"CogVideoX-2b (random): image chunk, 2 flips x {db.num_images} fr (once per clip)",
                          t_cog_img, f"{len(imgs)} call"))
        notes.append(f"CogVideoX-2b cache builds (wall s, K=1 / K=2, the K=2 build reusing the K=1 build's offset-0 "
                     f"and image encodes): {c[1]['seconds']:.0f} / {c[2]['seconds']:.0f}.")
        del cog, memo
        print(rows_time[-2:], flush=True)

    t_raft = t_flow = None
    if not args.no_flow:
        est = build_flow("raft_large", weights=None, num_flow_updates=cfg_b.flow.raft_iters)
        dino = load_dino(None, img_size=db.size)
        sampling = Sampling(db.num_frames, lat_frames, (tokens, mb.hidden_size), grid=cfg_b.flow.resize == "grid")
        raft_times, fn_times = [], []

        def timed_est(x):
            t0 = time.perf_counter()
            out = est(x)
            raft_times.append(time.perf_counter() - t0)
            return out

        def fn(clip):
            t0 = time.perf_counter()
            out = clip_targets(clip, timed_est, dino, layers, sampling, cfg_b.flow.colour)
            fn_times.append(time.perf_counter() - t0)
            return out

        # the K=2 build reuses the K=1 build's offset-0 targets: 2 flow runs in all (offsets 0 and 1)
        flow = FlowTargets(MemoEncode(fn), layers, f"raft_large:random|iters:{cfg_b.flow.raft_iters}|dino:random")
        c = caches(cfg_b, VideoVAE.tiny(seed=0), b_root, work, "B-flow-tinyvae", flow=flow)
        if len(fn_times) != 2:
            notes.append(f"WARNING: {len(fn_times)} distinct flow-target runs, expected 2 (offsets 0 and 1)")
        t_raft, t_flow = statistics.median(raft_times), statistics.median(fn_times)
        meas = delta(c, "flow")
        if meas != flow_analytic:
            notes.append(f"WARNING: measured flow payload per offset {meas:.0f} B != analytic {flow_analytic} B")
        b_flow = meas + (delta(c, "file") - delta(c, "video") - delta(c, "flow"))   # payload + its header entries
        rows_bytes.append((f"B flow targets, {len(layers)} layers fp16 (**analytic**; check: real cache, tiny VAE, "
                           "random RAFT/DINO)", f"{db.size} px, {db.num_frames} fr", flow_shape, c["clips"],
                           per_clip(c, "flow", 1), per_clip(c, "flow", 2), delta(c, "file") - delta(c, "video"),
                           meas, flow_analytic, 0))
        rows_time.append((f"flow: RAFT large (random), {cfg_b.flow.raft_iters} updates, {db.num_frames} pairs at "
                          f"{db.size} px", t_raft, f"median of {len(raft_times)}"))
        rows_time.append((f"flow: RAFT + flow images + DINO ViT-S/8 (2 flips) + Sampling = **per offset**", t_flow,
                          f"median of {len(fn_times)}"))
        print(rows_time[-2:], flush=True)
    else:
        rows_bytes.append((f"B flow targets, {len(layers)} layers fp16 (**analytic**)", f"{db.size} px, "
                           f"{db.num_frames} fr", flow_shape, "-", None, None, None, None, flow_analytic, 0))

    # ---------------------------------------------------------------- report
    load_end, total = load(), time.perf_counter() - t_start
    fmt = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
    lines = ["# Cache cost of each start offset (`data.clip_offsets`) per clip", "",
             f"CPU {platform.machine()}, torch threads {torch.get_num_threads()}; {load_start} at the start, "
             f"{load_end} at the end (2 cores; other jobs shared the CPU when the load is above 2: times are upper "
             f"bounds). Whole run {total:.0f} s. Caches built with `build_cache`, flow off unless said, on synthetic "
             "mp4s (`write_dataset`). Bytes are per clip; \"per offset\" = K=2 minus K=1.", "",
             "## Bytes per clip", "",
             "| setup | clip | per-offset tensor (f, C/l, h/d, w) | clips | shard B/clip K=1 | shard B/clip K=2 "
             "| **Δ file B per extra offset** | Δ tensor payload | analytic payload | image chunk B (once per clip) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows_bytes:
        lines.append(f"| {r[0]} | {r[1]} | {tuple(r[2])} | {r[3]} | {fmt(r[4])} | {fmt(r[5])} | **{fmt(r[6])}** "
                     f"| {fmt(r[7])} | {fmt(r[8])} | {fmt(r[9])} |")
    lines += ["", "Per offset = mean + std (float32) x 2 flips of the video latents; the flow row = 2 flips x "
              f"{len(layers)} layers x {flow_shape} fp16 (its shard columns count only the flow tensors). "
              "Δ file - Δ payload is the safetensors header (key names, offsets, per-shard stats).", "",
              "## CPU seconds per clip", "", "| what | s | repeats |", "|---|---:|---|"]
    lines += [f"| {w} | {s:.2f} | {n} |" for w, s, n in rows_time]

    # ---------------------------------------------------------------- Colonoscopic extrapolation
    n = args.colon_clips
    span = clip_span(db.num_frames, db.frame_stride)
    lines += ["", f"## Extrapolation: Colonoscopic ({args.colon_videos} videos, 768x576), B geometry", "",
              f"Frames are resized (short side) and centre-cropped to {db.size} px before the VAE, so the bytes per clip "
              "do not depend on the 768x576 source size. A video of T frames gives floor(T / "
              f"{span}) clip windows ({db.num_frames} + 1 frames every {db.frame_stride}). The video lengths are not "
              f"known here: the totals **assume {n:,} clips** ({n / args.colon_videos:.0f} per video, i.e. ~"
              f"{n / args.colon_videos * span:,.0f} frames per video); scale them linearly to the real count.", "",
              f"Per clip: bytes(K) = K x {fmt(b_video)} (latents per offset) + {fmt(b_images)} (image chunk + the shard "
              f"header's K-independent part) [+ K x {fmt(b_flow)} flow targets with --flow]"
              + (" — latent bytes measured with the random CogVideoX-2b config" if not args.no_cogvideox else
                 " — latent bytes analytic (CogVideoX skipped)")
              + ("; flow bytes analytic, confirmed on a real cache." if not args.no_flow else "; flow bytes analytic."),
              ""]
    header = "| K | per clip, latents | per clip, + flow | total, latents | total, + flow |"
    time_cols = t_cog is not None and t_flow is not None
    if time_cols:
        header += " CPU encode, latents (this machine) | CPU encode, + flow (this machine) |"
    lines += [header, "|---:" * (7 if time_cols else 5) + "|"]
    for k in (1, 2, 4):
        lat = k * b_video + b_images
        wf = lat + k * b_flow
        row = f"| {k} | {lat / MiB:.2f} MiB | {wf / MiB:.2f} MiB | {n * lat / GiB:.2f} GiB | {n * wf / GiB:.1f} GiB |"
        if time_cols:
            t_lat = k * t_cog + t_cog_img
            t_wf = t_lat + k * t_flow
            row += f" {n * t_lat / 3600:.0f} h | {n * t_wf / 3600:.0f} h |"
        lines.append(row)
    if time_cols:
        lines += ["", "CPU hours = clips x (K x per-offset encode + image chunk [+ K x flow]) with the medians above, "
                      "decoding the mp4s not counted; a GPU is orders of magnitude faster, the ratio between K's holds."]
    lines += [""] + notes + ["", "Command: `python benchmarks/cache_offsets.py" + (" --no-cogvideox" if args.no_cogvideox
                                                                                 else "")
                             + (" --no-flow" if args.no_flow else "") + "`"]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
