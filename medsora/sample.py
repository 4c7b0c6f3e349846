"""`medsora sample`: videos from a checkpoint's EMA weights (DDIM or DDPM), decoded by the VAE.

Writes `sample_000.mp4` + `sample_000.gif` (and PNG frames on request) and `latents.safetensors`
(the sampled latents, for statistics) into the output folder. `reconstruct` writes real clips of the run's
latent cache decoded by the VAE (`recon_000.mp4`, ...): the reference that shows what the VAE alone loses.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import long_video
from .cache import LatentDataset
from .checkpoint import load_weights, newest_checkpoint, verify, write_json_atomic
from .config import from_dict, latent_frames
from .data.video import write_frames, write_gif, write_video
from .diffusion import SOLVERS, sample_with
from .latent_norm import LatentNorm
from .models.medsora import build_model
from .runtime import compile_backbone, default_device, init_distributed
from .train import make_diffusion

log = logging.getLogger(__name__)


def resolve_checkpoint(path: str | Path) -> tuple[Path, dict]:
    """(checkpoint folder, its verified meta) for a checkpoint folder, or a run folder (its newest complete
    checkpoint). Each file is checksummed once."""
    path = Path(path)
    if (path / "meta.json").exists():
        return path, verify(path)
    found = newest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path} is neither a checkpoint folder (with meta.json) nor a run folder with "
                                "a complete checkpoint under checkpoints/")
    return found


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def sample(checkpoint: str | Path, vae, out_dir: str | Path, num: int | None = 8, batch_size: int = 4,
           sampler: str | None = None, steps: int | None = None, seed: int = 0, png: bool = False,
           fps: float = 8.0, device: str | None = None, progress: bool = True, overwrite: bool = False,
           compile: bool = False, first_frame: str | Path | None = None, guidance: float = 1.0,
           frames: int | None = None, pin_first_frame: bool = True) -> list[Path]:
    """Sample `num` videos from the checkpoint's EMA weights into `out_dir`; returns the mp4 paths. Under torchrun
    the processes share the batches and write what one process would. A folder holding the samples of another
    checkpoint or other settings is refused unless `overwrite` (then its old samples are removed first).
    `compile` runs the backbone through torch.compile (same samples within float tolerance).
    First-frame checkpoints (docs/first_frame.md): `first_frame` (an image, a video or a folder of them; one video
    per image, num=None: as many as images) with `guidance` on it, and `frames` beyond one clip (long videos); a
    conditioned segment's frame 0 is the given latent (`first_frame.pinned`) unless `pin_first_frame` is False."""
    num = num if num is not None else 8 if first_frame is None else len(long_video.first_frame_files(first_frame))
    for name, value in (("num", num), ("batch_size", batch_size), ("steps", 1 if steps is None else steps)):
        if value < 1:
            raise ValueError(f"sample: {name}={value} must be at least 1")
    ckpt, meta = resolve_checkpoint(checkpoint)
    cfg = from_dict(meta["config"])
    trained_on = meta.get("extra", {}).get("vae")
    if trained_on and trained_on != vae.fingerprint:   # allowed (e.g. decoding with a compensated decoder), but said
        log.warning("the VAE given (%s) is not the one whose latents %s was trained on (%s); the samples are decoded "
                    "by another VAE", vae.fingerprint, ckpt, trained_on)
    device = default_device(device)
    model = build_model(cfg.model)
    load_weights(ckpt / "ema.safetensors", model, "EMA model")
    model.to(device).eval()
    if vae.latent_channels != cfg.model.in_channels:
        raise ValueError(f"the VAE has {vae.latent_channels} latent channels, the checkpoint {ckpt} was trained on "
                         f"{cfg.model.in_channels}; use the VAE the latent cache was built with")
    diffusion = make_diffusion(cfg)
    sampler = sampler or cfg.diffusion.sampler
    if sampler not in ("ddim", "ddpm", *SOLVERS):
        raise ValueError(f"sampler must be one of ddim, ddpm, {', '.join(SOLVERS)}; got {sampler!r}")
    steps = steps or cfg.diffusion.sample_steps
    fv = latent_frames(cfg.data.num_frames)
    _check_first_frame(cfg, ckpt, first_frame, frames, guidance)
    norm = LatentNorm.from_dict(meta.get("extra", {}).get("latent_norm"), cfg.model.in_channels)
    shape = (fv, cfg.model.in_channels, *cfg.model.input_size)
    firsts = None if first_frame is None else long_video.first_frame_latents(vae, norm, first_frame, cfg.data.size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    net = compile_backbone(model, compile)

    def model_fn(x, t, cond=None):
        return net(x, t, num_video_frames=fv, cond=None if cond is None else cond.to(x))

    # batch b always has the noise of seed (seed, b): N processes (torchrun) each take every N-th batch and
    # write exactly the videos one process would. Each finished batch leaves its latents in .batches/, written
    # after its videos, so a killed run resumes at the first batch without them.
    rank, world, _, started_pg = init_distributed()
    starts = list(range(0, num, batch_size))
    key = {"checkpoint": str(ckpt), "sampler": sampler, "steps": steps, "seed": seed, "batch_size": batch_size,
           "num": num}
    if first_frame is not None or frames is not None:   # recorded only when used: older records stay valid
        key.update(first_frame=str(first_frame), guidance=guidance, frames=frames)
    if not pin_first_frame:
        key.update(pin_first_frame=False)
    if rank == 0:
        _claim_folder(out_dir, key, overwrite)
    parts = _batch_folder(out_dir, key, rank, world)
    mine = [b for b in range(rank, len(starts), world) if not (parts / f"{b:05d}.safetensors").exists()]
    if world > 1 or len(mine) < len(starts):
        log.info("process %d of %d samples batches %s of %d", rank, world, mine, len(starts))
    for b in tqdm(mine, desc="sampling", unit="batch", disable=not (progress and rank == 0)):
        n = min(batch_size, num - starts[b])
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        noise = torch.randn((n, *shape), generator=g)

        def draw(fn, x_T):
            return sample_with(sampler, diffusion, fn, x_T, g, steps, cfg.diffusion.eta, device)

        if firsts is None and frames is None:
            z = norm.denormalize(draw(model_fn, noise))   # the VAE's latents
            _decode_and_write(vae, z, out_dir, "sample", starts[b], fps, png)
        else:                                             # image-conditioned and/or long: medsora.long_video
            first = None if firsts is None else firsts[[(starts[b] + k) % len(firsts) for k in range(n)]]
            z, videos = long_video.generate(draw, model_fn, vae, norm, noise, g, first, frames, guidance,
                                            diffusion.alphas_cumprod if pin_first_frame else None)
            _write_videos(videos, out_dir, "sample", starts[b], fps, png)
        save_file({"latents": z.cpu().contiguous()}, str(parts / f"{b:05d}.tmp"))
        os.replace(parts / f"{b:05d}.tmp", parts / f"{b:05d}.safetensors")
    if world > 1:
        dist.barrier()
    if rank == 0:   # every batch's latents, in sample order, in one file
        latents = torch.cat([load_file(str(parts / f"{b:05d}.safetensors"))["latents"] for b in range(len(starts))])
        save_file({"latents": latents}, str(out_dir / "latents.safetensors"),
                  metadata={"checkpoint": str(ckpt), "sampler": sampler, "steps": str(steps), "seed": str(seed)})
        shutil.rmtree(parts)
    if world > 1:
        dist.barrier()
        if started_pg:
            dist.destroy_process_group()
    return [out_dir / f"sample_{i:03d}.mp4" for i in range(num)]


SAMPLES_RECORD = "samples.json"


def _claim_folder(out_dir: Path, key: dict, overwrite: bool) -> None:
    """Never mix two sets of samples: a folder with samples whose record (checkpoint and settings) differs from
    `key` is refused, or with `overwrite` emptied of them first; the record of this set is written before any video."""
    record = out_dir / SAMPLES_RECORD
    old = sorted(out_dir.glob("sample_*")) + [p for p in (out_dir / "latents.safetensors",) if p.exists()]
    try:
        theirs = json.loads(record.read_text()) if record.exists() else None
    except ValueError:   # a damaged record: no record of their settings
        theirs = None
    if old and theirs != key:
        if not overwrite:
            what = (f"checkpoint {theirs.get('checkpoint')}, seed {theirs.get('seed')}, {theirs.get('num')} videos"
                    if isinstance(theirs, dict) else "no record of their settings")
            raise ValueError(f"{out_dir} already holds {len(old)} sample files of another sampling run ({what}); pass "
                             "--overwrite to replace them, or choose another --out. Nothing was changed.")
        log.info("removing %d sample files of another run from %s (--overwrite)", len(old), out_dir)
        for p in old:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        shutil.rmtree(out_dir / ".batches", ignore_errors=True)
    write_json_atomic(record, key)


def _batch_folder(out_dir: Path, key: dict, rank: int, world: int) -> Path:
    """out_dir/.batches, holding the finished batches of a run with these settings; a folder left by a run with
    other settings is cleared first (its batches would not match)."""
    parts = out_dir / ".batches"
    if rank == 0:
        if parts.exists() and (not (parts / "key.json").exists() or
                               json.loads((parts / "key.json").read_text()) != key):
            log.info("%s holds the batches of a sampling run with other settings; starting over", parts)
            shutil.rmtree(parts)
        parts.mkdir(parents=True, exist_ok=True)
        (parts / "key.json").write_text(json.dumps(key))
    if world > 1:
        dist.barrier()
    return parts


def _check_first_frame(cfg, ckpt: Path, first_frame, frames: int | None, guidance: float) -> None:
    """--first-frame and --frames beyond one clip need a checkpoint trained with model.first_frame."""
    if frames is not None and frames < 1:
        raise ValueError(f"sample: frames={frames} must be at least 1")
    if first_frame is not None and not 0 <= guidance < float("inf"):
        raise ValueError(f"sample: guidance={guidance} must be a finite number >= 0 (1: the conditional model alone)")
    if cfg.model.first_frame:
        return
    if first_frame is not None:
        raise ValueError(f"the checkpoint {ckpt} was trained without model.first_frame, so it cannot start from a "
                         "given first frame; train with model.first_frame=true, or sample without --first-frame")
    if frames is not None and frames > cfg.data.num_frames:
        raise ValueError(f"--frames {frames} is longer than one clip ({cfg.data.num_frames} frames) and the "
                         f"checkpoint {ckpt} was trained without model.first_frame (segments are chained on their "
                         f"last frame); train with model.first_frame=true, or ask for at most {cfg.data.num_frames}")


def _decode_and_write(vae, z: torch.Tensor, out_dir: Path, prefix: str, start: int, fps: float, png: bool) -> None:
    """Decode latents (n, f, C, h, w) and write `{prefix}_{k:03d}` .mp4 + .gif (+ PNG frames) from index `start`."""
    _write_videos(vae.decode(z.to(vae.device, vae.dtype)).float().cpu(), out_dir, prefix, start, fps, png)


def _write_videos(videos: torch.Tensor, out_dir: Path, prefix: str, start: int, fps: float, png: bool) -> None:
    """Videos (n, T, 3, H, W) in [-1, 1] -> `{prefix}_{k:03d}` .mp4 + .gif (+ PNG frames) from index `start`."""
    for k, v in enumerate(videos):
        frames = to_uint8(v)
        name = f"{prefix}_{start + k:03d}"
        write_video(out_dir / f"{name}.mp4", frames, fps=fps)
        write_gif(out_dir / f"{name}.gif", frames, fps=fps)
        if png:
            write_frames(out_dir / name, frames)


@torch.no_grad()
def reconstruct(checkpoint: str | Path, vae, out_dir: str | Path, num: int = 8, batch_size: int = 4,
                cache_dir: str | Path | None = None, png: bool = False, fps: float = 8.0,
                progress: bool = True) -> list[Path]:
    """Real clips through the VAE alone: decode `num` unflipped clips of the run's latent cache (spread evenly
    over it) into `recon_000.mp4` ... What the VAE keeps of real videos bounds what any sample can show, so
    comparing samples with these (not only with the raw videos) separates the VAE's losses from the model's."""
    if num < 1 or batch_size < 1:
        raise ValueError(f"reconstruct: num={num} and batch_size={batch_size} must be at least 1")
    ckpt, meta = resolve_checkpoint(checkpoint)
    cache_dir = cache_dir or meta.get("extra", {}).get("cache")
    if not cache_dir:
        raise ValueError(f"the checkpoint {ckpt} does not record its latent cache; pass cache_dir")
    ds = LatentDataset(cache_dir, hflip=False)
    if ds.manifest["vae"] != vae.fingerprint:   # other latents would decode to noise: refused, not warned
        raise ValueError(f"the cache {cache_dir} was encoded by the VAE {ds.manifest['vae']}, the VAE given is "
                         f"{vae.fingerprint}; pass the VAE the cache was built with")
    if num > len(ds):
        log.warning("the cache holds %d clips; reconstructing all of them, not %d", len(ds), num)
    ids = sorted(set(np.linspace(0, len(ds) - 1, min(num, len(ds))).round().astype(int).tolist()))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world, _, started_pg = init_distributed()   # under torchrun each process takes every N-th batch
    batches = range(0, len(ids), batch_size)[rank::world]
    for start in tqdm(batches, desc="reconstructing", unit="batch", disable=not (progress and rank == 0)):
        z = torch.stack([ds.get(i, 0, raw=True)["video"] for i in ids[start:start + batch_size]])
        _decode_and_write(vae, z, out_dir, "recon", start, fps, png)
    if world > 1:
        dist.barrier()
        if started_pg:
            dist.destroy_process_group()
    return [out_dir / f"recon_{k:03d}.mp4" for k in range(len(ids))]
