"""`medsora train`: latent diffusion training of the MedSora backbone from a latent cache.

One step: x0 = [video latents ; joint-image latents] (B, f_v + f_i, C, h, w) -> diffusion loss (MSE + VB)
+ align_weight * L_align(block features of the video frames, cached flow targets). AdamW with the paper's
phases (warm_lr / warm_batch_size for `warm_epochs`, then lr / batch_size), EMA, gradient clipping from a
given epoch, NaN/inf steps skipped and counted, JSONL metrics, atomic safetensors checkpoints.

Determinism: the order of clips in epoch e comes from a generator seeded (seed, e); the noise, timesteps
and dropout of step s from (seed, s). A resumed run therefore continues exactly where it stopped.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from . import first_frame
from .cache import LatentDataset
from .checkpoint import list_checkpoints, load_checkpoint, newest_checkpoint, save_checkpoint, write_json_atomic
from .config import Config, from_dict, to_dict, to_yaml
from .diffusion import GaussianDiffusion
from .errors import MedsoraError
from .finetune import init_from
from .models.medsora import build_model
from .runlock import LOCK, folder_lock
from .runtime import compile_backbone, default_device, init_distributed

log = logging.getLogger(__name__)
EVAL_T = (100, 300, 500, 700, 900)  # fixed timesteps of the held-out denoising loss


class TrainError(MedsoraError, RuntimeError):
    pass


def make_diffusion(cfg: Config) -> GaussianDiffusion:
    d = cfg.diffusion
    return GaussianDiffusion(d.num_timesteps, d.beta_start, d.beta_end, learn_sigma=d.learn_sigma, channel_dim=2)


def phase(cfg: Config, epoch: int) -> tuple[float, int]:
    """(lr, batch size) of an epoch: the paper's warm phase, then the main phase."""
    t = cfg.train
    return (t.warm_lr, t.warm_batch_size) if epoch < t.warm_epochs else (t.lr, t.batch_size)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return [b.tolist() for b in torch.randperm(n, generator=g).split(batch_size)]


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _batch(ds: LatentDataset, ids: list[int], device) -> dict[str, torch.Tensor]:
    items = [ds[i] for i in ids]
    out = {k: torch.stack([it[k] for it in items]).to(device) for k in ("video", "images")}
    if "flow" in items[0]:
        out["flow"] = torch.stack([it["flow"] for it in items]).to(device)
    return out


def check_compatible(cfg: Config, ds: LatentDataset) -> None:
    """The cache's latents must fit the model; alignment needs the cached targets of every aligned layer."""
    v = ds[0]["video"]
    m = cfg.model
    if v.shape[1] != m.in_channels or tuple(v.shape[2:]) != tuple(m.input_size):
        raise TrainError(
            f"the cache {ds.cache_dir} holds latents of {v.shape[1]} channels at {tuple(v.shape[2:])}, the model expects "
            f"model.in_channels={m.in_channels} at model.input_size={tuple(m.input_size)}; set those fields to the cache's "
            f"values or build a cache with the matching VAE and data.size")
    if cfg.train.align and m.align_layers and cfg.train.align_weight > 0:
        missing = sorted(set(m.align_layers) - set(ds.layers))
        if missing:
            raise TrainError(f"alignment is on but the cache {ds.cache_dir} has no flow targets for DINO layers "
                             f"{missing}; run `medsora cache --flow` or set train.align=false")


def denoising_loss(model, diffusion: GaussianDiffusion, ds: LatentDataset, num_video_frames: int, device,
                   seed: int = 1234, batch_size: int = 8) -> float:
    """Mean eps-MSE of `model` on every clip of `ds` at the fixed timesteps EVAL_T with fixed noise."""
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ds), batch_size):
            ids = list(range(start, min(start + batch_size, len(ds))))
            x0 = torch.stack([ds.get(i, 0)["video"] for i in ids]).to(device)
            for t_val in EVAL_T:
                g = torch.Generator().manual_seed(seed + t_val)
                noise = torch.randn(x0.shape, generator=g).to(device)
                t = torch.full((len(ids),), t_val, device=device, dtype=torch.long)
                out = model(diffusion.q_sample(x0, t, noise), t, num_video_frames=num_video_frames)
                eps = out.chunk(2, dim=2)[0] if out.shape[2] != x0.shape[2] else out
                total += (eps - noise).pow(2).mean(dim=(1, 2, 3, 4)).sum().item()
                n += len(ids)
    return total / max(n, 1)


def train(cfg: Config, cache_dir: str | Path, run_dir: str | Path | None = None, resume: str | None = None,
          progress: bool = True, device: str | None = None) -> dict:
    """Train from a latent cache into `run_dir` (default cfg.train.out_dir); returns a summary dict.

    `resume`: None (a folder with checkpoints is refused), "auto" (the newest checkpoint that verifies; refused
    when checkpoints exist and none does), a checkpoint folder, or "restart" (the folder's checkpoints and log
    are moved to RUN/previous-TIME/ and training starts over). The run folder is locked while training: a second
    `train` into it is refused, naming the holder.
    """
    run_dir = Path(run_dir or cfg.train.out_dir)
    start_from = None if resume == "restart" else resume
    if int(os.environ.get("RANK", "0")) != 0:   # torchrun: process 0 holds the lock (and moves a restart's files
        return _train(cfg, cache_dir, run_dir, start_from, progress, device)   # aside before the group starts)
    existed = run_dir.exists()
    try:
        with folder_lock(run_dir, "train"):
            if resume == "restart":
                _move_aside(run_dir)
            return _train(cfg, cache_dir, run_dir, start_from, progress, device)
    except BaseException:
        if not existed and {p.name for p in run_dir.iterdir()} <= {LOCK}:   # a refused run leaves no folder
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _move_aside(run_dir: Path) -> None:
    """--resume restart: the run's checkpoints, log and config go to RUN/previous-TIME/ (nothing is deleted)."""
    names = [n for n in ("checkpoints", "metrics.jsonl", "config.yaml", "alignment.json", "tb") if (run_dir / n).exists()]
    if not names:
        return
    dest = run_dir / time.strftime("previous-%Y%m%d-%H%M%S")
    dest.mkdir()
    for n in names:
        os.replace(run_dir / n, dest / n)
    log.info("--resume restart: the previous run's %s moved to %s", ", ".join(names), dest)


def resume_point(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint a run continues from; refuses to start over a folder whose checkpoints would be replaced."""
    found = list_checkpoints(run_dir)
    if resume is None:
        if found:   # never train over another run's checkpoints and log
            raise TrainError(f"{run_dir} already holds the checkpoints of a run (newest {found[-1].name}); continue "
                             "it with --resume auto, or train into another --run-dir. Nothing was changed.")
        return None
    if resume != "auto":
        if not (Path(resume) / "meta.json").exists():
            raise TrainError(f"--resume {resume}: no checkpoint there (expected a folder with meta.json)")
        return Path(resume)
    reasons: list[str] = []
    newest = newest_checkpoint(run_dir, failures=reasons)   # each checkpoint checksummed once
    if newest is None and found:
        raise TrainError(f"none of the {len(found)} checkpoints in {run_dir} verifies ({'; '.join(reasons)}). "
                         "Nothing was changed: restore the files, or start over with --resume restart (the old "
                         "checkpoints and log are moved aside, not deleted)")
    return newest[0] if newest else None


def _train(cfg: Config, cache_dir: str | Path, run_dir: Path, resume: str | None, progress: bool,
           device: str | None) -> dict:
    """The training loop of `train` (the run folder is already locked).

    Under torchrun (WORLD_SIZE > 1) each process takes its share of every global batch (DistributedDataParallel,
    gloo on CPU, nccl on GPUs); the noise and timesteps are drawn for the global batch, so N processes compute
    what one process with the same global batch computes. Only rank 0 writes logs and checkpoints.
    """
    t = cfg.train
    rank, world, _, started_pg = init_distributed()
    main = rank == 0
    for name in ("batch_size", "warm_batch_size"):
        if getattr(t, name) % (world * t.grad_accum):
            raise TrainError(f"train.{name}={getattr(t, name)} is the global batch and must be divisible by the "
                             f"{world} processes x train.grad_accum={t.grad_accum} micro-batches")
    ckpt = resume_point(run_dir, resume)
    device = default_device(device)
    torch.manual_seed(t.seed)

    full = LatentDataset(cache_dir, seed=t.seed, hflip=cfg.data.hflip, posterior=t.posterior)
    if not cfg.vae.path and full.manifest.get("vae_source"):   # the run records the cache's VAE for `sample`
        cfg = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, **full.manifest["vae_source"]))
    n_all = len(full)
    if t.holdout_clips >= n_all:
        raise TrainError(f"train.holdout_clips={t.holdout_clips} leaves no training clip (the cache has {n_all})")
    n_train = n_all - t.holdout_clips
    ds = full.subset(range(n_train))
    held = full.subset(range(n_train, n_all), hflip=False) if t.holdout_clips else None
    check_compatible(cfg, ds)
    run_dir.mkdir(parents=True, exist_ok=True)   # only once the cache is known to fit
    align = bool(t.align and cfg.model.align_layers and t.align_weight > 0)
    joint = bool(t.joint_images and cfg.data.num_images)
    layer_slot = {layer: k for k, layer in enumerate(ds.layers)}
    aligned_blocks = [(i, layer_slot[layer]) for i, layer in enumerate(cfg.model.align_layers)] if align else []

    model = build_model(cfg.model).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    diffusion = make_diffusion(cfg)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    net = compile_backbone(net, t.compile)
    opt = torch.optim.AdamW(model.parameters(), lr=phase(cfg, 0)[0], weight_decay=t.weight_decay)
    step, epoch, batch_in_epoch, skipped = 0, 0, 0, 0
    precision = t.precision if device.type == "cuda" else "fp32"
    if precision != t.precision:
        log.info("train.precision=%s applies to CUDA only; on %s everything stays float32", t.precision, device.type)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast():
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()

    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")   # a no-op pass-through otherwise

    if ckpt is not None:
        meta = load_checkpoint(ckpt, model, ema, opt)
        saved, now = to_dict(from_dict(meta["config"]))["model"], to_dict(cfg)["model"]   # keys added since: defaults
        if saved != now:
            diff = {k: (v, now[k]) for k, v in saved.items() if now.get(k) != v}
            raise TrainError(f"checkpoint {ckpt} was trained with another model config (checkpoint vs now: {diff}); "
                             "resume with the same preset/overrides or start a new run_dir")
        step, epoch = meta["step"], meta["epoch"]
        batch_in_epoch, skipped = meta["extra"]["batch_in_epoch"], meta["extra"]["skipped"]
        if meta["extra"].get("grad_scaler"):
            scaler.load_state_dict(meta["extra"]["grad_scaler"])
        log.info("resumed from %s (step %d, epoch %d)", ckpt, step, epoch)
    elif t.init_from:   # a new run from another's weights (medsora.finetune); a resumed one continues its own
        log.info("weights from %s (step 0, fresh optimizer)", init_from(cfg, model, ema, full.norm))
    if main:
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        write_json_atomic(run_dir / "alignment.json", alignment_record(align, full.manifest, cfg))
    metrics_file = open(run_dir / "metrics.jsonl", "a") if main else None
    tb = _tensorboard(run_dir) if main else None

    def log_row(row: dict) -> None:
        if not main:
            return
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        if tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    tb.add_scalar(k, v, row["step"])

    fv = ds[0]["video"].shape[0]
    if held is not None and step == 0 and main:
        log_row({"step": 0, "eval_mse": denoising_loss(ema, diffusion, held, fv, device)})
    total_steps = sum(math.ceil(n_train / phase(cfg, e)[1]) for e in range(t.epochs))
    if t.max_steps:
        total_steps = min(total_steps, t.max_steps)
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not (progress and main))
    started, last = time.perf_counter(), None
    steps_this_run = 0

    def checkpoint() -> None:
        failed = torch.zeros(1)
        if main:
            try:
                save_checkpoint(run_dir, step, model, ema, opt, to_dict(cfg), epoch=epoch, keep=t.keep_checkpoints,
                                extra={"batch_in_epoch": batch_in_epoch, "skipped": skipped,
                                   "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
                                       "cache": str(Path(cache_dir).resolve()), "vae": full.manifest["vae"],
                                       "latent_norm": full.norm.to_dict()})
            except OSError as e:  # disk full, permissions: the previous checkpoints are intact
                log.error("could not write the checkpoint of step %d in %s: %s", step, run_dir, e)
                failed[0] = 1
        if world > 1:
            dist.all_reduce(failed)
        if failed.item() and t.on_checkpoint_error == "stop":
            raise TrainError(f"checkpoint of step {step} could not be written in {run_dir / 'checkpoints'} (see the "
                             "log); the previous checkpoints are intact: free space and `--resume auto`, or set "
                             "train.on_checkpoint_error=continue")

    while epoch < t.epochs and step < total_steps:
        lr, bs = phase(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        ds.set_epoch(epoch)
        batches = epoch_batches(n_train, bs, t.seed, epoch)
        clip = t.grad_clip if (epoch >= t.grad_clip_from_epoch and t.grad_clip > 0) else math.inf
        while batch_in_epoch < len(batches) and step < total_steps:
            model.train()
            ids = batches[batch_in_epoch]
            parts_per_batch = world * t.grad_accum
            n = len(ids) - len(ids) % parts_per_batch   # a last partial batch is trimmed to a multiple of them
            if n == 0:
                batch_in_epoch += 1
                continue
            mine = slice(rank * n // world, (rank + 1) * n // world)
            batch = _batch(ds, ids[:n][mine], device)
            x0 = torch.cat([batch["video"], batch["images"]], dim=1) if joint else batch["video"]
            g = torch.Generator().manual_seed(t.seed * 1_000_003 + step)   # drawn for the global batch
            tt = torch.randint(0, diffusion.num_timesteps, (n,), generator=g)[mine].to(device)
            noise = torch.randn((n, *x0.shape[1:]), generator=g)[mine].to(device)
            cond = first_frame.training_condition(x0, g, n, mine, t.first_frame_prob) if cfg.model.first_frame else None
            torch.manual_seed(t.seed * 7_919 + step)  # dropout of this step

            def model_fn(x_t, ts, cond=None):
                return net(x_t, ts, num_video_frames=fv, return_features=align, cond=cond)

            opt.zero_grad(set_to_none=True)
            grad_norm = None
            sums = torch.zeros(4, device=device)        # loss, mse, vb, align (means over micro-batches)
            finite = torch.ones(1, device=device)
            micro = x0.shape[0] // t.grad_accum
            for k in range(t.grad_accum):               # gradient accumulation; DDP syncs on the last one only
                mb = slice(k * micro, (k + 1) * micro)
                sync = world == 1 or k == t.grad_accum - 1
                with (contextlib.nullcontext() if sync else net.no_sync()), autocast():
                    fn = first_frame.bind(model_fn, cond, mb)
                    losses = diffusion.training_losses(fn, x0[mb], tt[mb], noise=noise[mb])
                    loss = losses["loss"].mean()
                    l_align = torch.zeros((), device=device)
                    if align:
                        feats = losses["extra"]                    # one (B, f_v, l, d) per block
                        l_align = alignment_loss_of(feats, batch["flow"][mb], aligned_blocks, tt[mb], cfg)
                        loss = loss + t.align_weight * l_align
                    # a NaN loss still goes through backward (so DDP's collectives stay matched); the step is dropped
                    scaler.scale(loss / t.grad_accum).backward()
                finite *= torch.isfinite(loss.detach()).float()
                sums += torch.stack([loss.detach(), losses["mse"].detach().mean(), losses["vb"].detach().mean(),
                                     l_align.detach()]).float() / t.grad_accum
            if world > 1:                                # every process skips the same steps
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if not finite.item():
                skipped += 1
                opt.zero_grad(set_to_none=True)
                log.warning("step %d: loss is not finite; step skipped (%d so far)", step, skipped)
            else:
                scaler.unscale_(opt)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip).item()
                if math.isfinite(grad_norm):
                    scaler.step(opt)
                    update_ema(ema, model, t.ema_decay)
                else:
                    skipped += 1
                    log.warning("step %d: gradient norm is %s; step skipped", step, grad_norm)
                scaler.update()
            step += 1
            steps_this_run += 1
            batch_in_epoch += 1
            bar.update(1)
            if step % t.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                its = t.log_every / (now - last) if last else steps_this_run / (now - started)
                last = now
                parts = sums
                if world > 1:
                    dist.all_reduce(parts)
                    parts /= world
                row = {"step": step, "epoch": epoch, "loss": parts[0].item(), "mse": parts[1].item(),
                       "vb": parts[2].item(), "align": parts[3].item(), "lr": lr, "batch": n, "grad_norm": grad_norm,
                       "grad_clip": clip if math.isfinite(clip) else None, "it_s": its, "skipped": skipped}
                log_row(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", it_s=f"{its:.2f}")
            if held is not None and main and (step % t.eval_every == 0 or step == total_steps):
                log_row({"step": step, "eval_mse": denoising_loss(ema, diffusion, held, fv, device)})
            if step % t.ckpt_every == 0 and step < total_steps:
                checkpoint()
        if batch_in_epoch >= len(batches):
            epoch, batch_in_epoch = epoch + 1, 0
    bar.close()
    checkpoint()
    if main:
        metrics_file.close()
    if tb is not None:
        tb.close()
    if started_pg:
        dist.destroy_process_group()
    return {"run_dir": str(run_dir), "steps": step, "epochs": epoch, "skipped": skipped,
            "seconds": time.perf_counter() - started}


def _tensorboard(run_dir: Path):
    """A TensorBoard writer in run_dir/tb when the `tensorboard` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


def alignment_record(align: bool, manifest: dict, cfg: Config) -> dict:
    """What this run aligned with, for the report and the reader: on/off, and the cache's flow targets by name
    (DINO ViT-S/8, the paper's, or the weight-free flow patches, which are not)."""
    targets = manifest.get("flow") or ""
    features = ("DINO ViT-S/8 (the paper's)" if "|dino:" in targets else
                "flow patches (weight-free, NOT the paper's DINO features)" if "|patches:" in targets else None)
    return {"align": align, "features": features if align else None, "targets": targets if align else None,
            "weight": cfg.train.align_weight if align else 0.0, "layers": list(cfg.model.align_layers) if align else []}


def alignment_loss_of(feats: list[torch.Tensor], flow: torch.Tensor, aligned_blocks: list[tuple[int, int]],
                      t: torch.Tensor, cfg: Config) -> torch.Tensor:
    """L_align over the aligned blocks: block i's features vs the cached targets of its DINO layer."""
    from .flow.align import alignment_loss

    features = [feats[i] for i, _ in aligned_blocks]
    targets = [flow[:, slot] for _, slot in aligned_blocks]                 # (B, f_v, l, d) each
    return alignment_loss(features, targets, t, margin=cfg.train.align_margin, variant=cfg.flow.variant)
