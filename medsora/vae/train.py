"""Training of the video VAE, two modes:

- `train_compensation(vae, clips, cfg, out_dir)`: the paper's frequency-compensation fine-tuning (Eq. 16).
  The base VAE is frozen; only the compensation modules train, with L1 + LPIPS + 0.1 * FFL, Adam
  (lr 2e-7, betas (0.5, 0.9)), 10 epochs. Writes `compensation.safetensors` (+ `.json`), a small file
  loaded on top of any copy of the base, and a resumable checkpoint at the end of each epoch.
- `train_tiny_vae(clips, steps, out_dir)`: trains a whole `tiny` VAE from scratch (all weights; L1 +
  0.1 * FFL + a small KL, LPIPS optional), for the demo and machines without the CogVideoX weights.
  Writes a VAE folder that `VideoVAE.from_pretrained(out_dir)` loads; its scaling factor is set to
  1 / std of the training latents, as latent diffusion does.

`clips` is any iterable (list, DataLoader, ...) re-iterated once per epoch, of tensors (B, T, 3, H, W)
in [-1, 1] (a (T, 3, H, W) clip or a dataset item dict with a "video" entry also works).
"""
from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import nn
from tqdm import tqdm

from medsora.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from medsora.vae.autoencoder import VideoVAE
from medsora.vae.ffl import FocalFrequencyLoss

log = logging.getLogger(__name__)


@dataclass
class CompensationConfig:
    """`medsora vae train` settings; defaults are the paper's (Sec. 4.1, Eq. 16)."""

    epochs: int = 10
    max_steps: int = 0                 # > 0: stop after this many steps (or at the end of the epochs)
    lr: float = 2e-7
    betas: tuple[float, float] = (0.5, 0.9)
    l1_weight: float = 1.0
    lpips_weight: float = 1.0          # 0 switches LPIPS off (no trunk weights needed)
    ffl_weight: float = 0.1            # lambda of Eq. 16
    lpips_net: str = "vgg"
    lpips_trunk: str = ""              # torchvision VGG16/AlexNet ImageNet weights; "" = torch hub cache
    width_ratio: float = 0.5           # hidden width of each compensation module / its channels
    log_every: int = 10
    seed: int = 0


class ReconstructionLoss(nn.Module):
    """l1 * |x_hat - x| + lp * LPIPS(x_hat, x) + lam * FFL(x_hat, x) on clips (B, T, 3, H, W) in [-1, 1].
    Returns the total and its parts (floats)."""

    def __init__(self, l1_weight: float = 1.0, lpips_weight: float = 0.0, ffl_weight: float = 0.1,
                 lpips_model: nn.Module | None = None):
        super().__init__()
        if lpips_weight > 0 and lpips_model is None:
            raise ValueError("lpips_weight > 0 needs an LPIPS model (medsora.vae.perceptual.load_lpips)")
        self.l1_weight, self.lpips_weight, self.ffl_weight = l1_weight, lpips_weight, ffl_weight
        self.lpips = lpips_model if lpips_weight > 0 else None
        self.ffl = FocalFrequencyLoss()

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {"l1": (x_hat - x).abs().mean(), "ffl": self.ffl(x_hat, x)}
        total = self.l1_weight * parts["l1"] + self.ffl_weight * parts["ffl"]
        if self.lpips is not None:
            frames = lambda v: rearrange(v, "b t c h w -> (b t) c h w")  # noqa: E731
            parts["lpips"] = self.lpips(frames(x_hat), frames(x)).mean()
            total = total + self.lpips_weight * parts["lpips"]
        return total, {k: v.item() for k, v in parts.items()}


def as_clip(item) -> torch.Tensor:
    """A batch (B, T, 3, H, W) from a tensor, a single (T, 3, H, W) clip or a dataset item dict."""
    if isinstance(item, Mapping):
        item = item["video"]
    if isinstance(item, (tuple, list)):
        item = item[0]
    if item.ndim == 4:
        item = item[None]
    if item.ndim != 5 or item.shape[2] != 3:
        raise ValueError(f"expected clips (B, T, 3, H, W), got shape {tuple(item.shape)}")
    return item


def _batches(clips: Iterable, max_steps: int, epochs: int):
    """Yield (epoch, clip) for `epochs` passes over `clips` (0 = no limit), stopping after `max_steps`
    steps (0 = no limit)."""
    if max_steps <= 0 and epochs <= 0:
        raise ValueError("give a number of epochs or of steps")
    steps = 0
    for epoch in range(epochs) if epochs > 0 else itertools.count():
        if hasattr(clips, "set_epoch"):
            clips.set_epoch(epoch)
        empty = True
        for item in clips:
            empty = False
            yield epoch, as_clip(item)
            steps += 1
            if 0 < max_steps <= steps:
                return
        if empty:
            raise ValueError("no clips to train on")


def _n_steps(clips, epochs: int, max_steps: int) -> int | None:
    try:
        per_epochs = epochs * len(clips) if epochs > 0 else None
    except TypeError:
        per_epochs = None
    if max_steps > 0:
        return min(max_steps, per_epochs) if per_epochs else max_steps
    return per_epochs


def train_compensation(vae: VideoVAE, clips: Iterable, cfg: CompensationConfig | None = None,
                       out_dir: str | Path = "runs/vae", lpips_model: nn.Module | None = None,
                       progress: bool = True, resume: bool = False) -> dict:
    """Train only the compensation modules of `vae` (added, zero-initialised, if it has none).

    Returns {"path", "steps", "num_trainable", "losses"} and writes out_dir/compensation.safetensors,
    its .json and out_dir/train_log.json. At the end of each epoch a checkpoint (compensation weights, Adam
    state, the loader's shuffling state) is written atomically to out_dir/checkpoints; `resume=True` continues
    from the newest one and ends where an uninterrupted run ends. Without `resume`, a folder that already holds
    checkpoints is refused.
    """
    cfg = cfg or CompensationConfig()
    if cfg.epochs <= 0 and cfg.max_steps <= 0:
        raise ValueError("give a number of epochs or of steps")
    torch.manual_seed(cfg.seed)
    out_dir = Path(out_dir)
    if not resume and list_checkpoints(out_dir):
        raise ValueError(f"{out_dir} already holds the checkpoints of a compensation run; continue it with --resume "
                         "or write to another --out. Nothing was changed.")
    out_dir.mkdir(parents=True, exist_ok=True)
    if vae.compensation is None:
        vae.add_compensation(width_ratio=cfg.width_ratio)
    params = vae.freeze_base()
    n_train = sum(p.numel() for p in params)
    log.info("training %d compensation parameters (base frozen: %d)", n_train,
             sum(p.numel() for p in vae.vae.parameters()))
    if cfg.lpips_weight > 0 and lpips_model is None:
        from medsora.vae.perceptual import load_lpips
        lpips_model = load_lpips(cfg.lpips_net, cfg.lpips_trunk or None)
    if lpips_model is not None:
        lpips_model = lpips_model.to(vae.device)
    loss_fn = ReconstructionLoss(cfg.l1_weight, cfg.lpips_weight, cfg.ffl_weight, lpips_model)
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))

    generator = getattr(clips, "generator", None)   # a shuffling DataLoader's: saved so a resume shuffles alike
    history, first_epoch = [], 0
    ckpt = latest_checkpoint(out_dir) if resume else None
    if ckpt is not None:
        meta = load_checkpoint(ckpt, vae.compensation, optimizer=opt)
        history, first_epoch = meta["extra"]["losses"], meta["epoch"] + 1
        if generator is not None and meta["extra"].get("generator"):
            generator.set_state(torch.tensor(meta["extra"]["generator"], dtype=torch.uint8))
        log.info("resuming from %s (epoch %d done, step %d)", ckpt, meta["epoch"], meta["step"])
    elif resume:
        log.info("no checkpoint in %s: starting from the beginning", out_dir)

    vae.vae.eval()
    vae.compensation.train()
    t0 = time.time()
    total = _n_steps(clips, cfg.epochs, cfg.max_steps)
    bar = tqdm(total=total, initial=len(history), desc="vae compensation", disable=not progress)
    epochs = range(first_epoch, cfg.epochs) if cfg.epochs > 0 else itertools.count(first_epoch)
    for epoch in epochs:
        if hasattr(clips, "set_epoch"):
            clips.set_epoch(epoch)
        done_before = len(history)
        for item in clips:
            x = as_clip(item).to(device=vae.device, dtype=vae.dtype)
            loss, parts = loss_fn(vae(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append({"step": len(history) + 1, "epoch": epoch, "loss": loss.item(), **parts})
            bar.update(1)
            if len(history) % cfg.log_every == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if 0 < cfg.max_steps <= len(history):
                break
        if len(history) == done_before:
            raise ValueError("no clips to train on")
        if 0 < cfg.max_steps <= len(history):
            break                                   # stopped inside the epoch: the final weights are written below
        save_checkpoint(out_dir, len(history), vae.compensation, None, opt, asdict(cfg), epoch=epoch, keep=1,
                        extra={"losses": history,
                               "generator": generator.get_state().tolist() if generator is not None else None})
    bar.close()
    vae.compensation.eval()

    path = vae.save_compensation(out_dir / "compensation.safetensors")
    summary = {"path": str(path), "steps": len(history), "num_trainable": n_train,
               "seconds": round(time.time() - t0, 1), "config": asdict(cfg), "losses": history}
    (out_dir / "train_log.json").write_text(json.dumps(summary, indent=1))
    return summary


def motion_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean |(x_hat[t+1] - x_hat[t]) - (x[t+1] - x[t])| over clips (B, T, 3, H, W): zero for a reconstruction that
    moves as the clip does (even with a constant error), large where it holds a frame the clip moves through."""
    return (x_hat.diff(dim=1) - x.diff(dim=1)).abs().mean()


def train_tiny_vae(clips: Iterable, steps: int, out_dir: str | Path | None = "runs/tiny_vae",
                   lr: float = 2e-3, kl_weight: float = 1e-6, ffl_weight: float = 0.1,
                   lpips_weight: float = 0.0, lpips_model: nn.Module | None = None,
                   vae: VideoVAE | None = None, seed: int = 0, progress: bool = True,
                   mse_weight: float = 0.0, latent_channels: int = 4,
                   block_out_channels: tuple[int, ...] | None = None, layers_per_block: int | None = None,
                   warmup_steps: int = 20, min_lr_ratio: float = 0.0, motion_weight: float = 0.0) -> VideoVAE:
    """Train a whole `tiny` VAE (random init unless `vae` is given) from scratch for `steps` steps.

    Adam with a linear warm-up over `warmup_steps` then a cosine decay of `lr` down to `min_lr_ratio * lr`; loss
    L1 + mse_weight * MSE + ffl_weight * FFL + kl_weight * KL (+ LPIPS if given) on a posterior sample, + motion_weight
    * L1 between the frame-to-frame differences of the reconstruction and of the clip (penalises decoded frames that
    repeat their neighbour where the clip moves).
    `latent_channels`, `block_out_channels`, `layers_per_block` shape the fresh VAE (`VideoVAE.tiny`; ignored
    when `vae` is given). The scaling factor is then set to 1 / std of the posterior means of up to 16 batches. Saves the VAE folder to
    `out_dir` (None: don't save) with `train_log.json`.
    """
    torch.manual_seed(seed)
    if vae is None:
        vae = VideoVAE.tiny(seed=seed, latent_channels=latent_channels, block_out_channels=block_out_channels,
                            layers_per_block=layers_per_block)
    vae.vae.requires_grad_(True).train()
    loss_fn = ReconstructionLoss(1.0, lpips_weight, ffl_weight, lpips_model)
    opt = torch.optim.Adam(vae.vae.parameters(), lr=lr)
    warm = max(warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (
            1 + torch.cos(torch.tensor(torch.pi * s / steps)).item())))
    history, t0 = [], time.time()
    for step, (_, x) in enumerate(tqdm(_batches(clips, steps, 0), total=steps, desc="tiny vae", disable=not progress), 1):
        x = x.to(device=vae.device, dtype=vae.dtype)
        posterior = vae.vae.encode(rearrange(x, "b t c h w -> b c t h w")).latent_dist
        x_hat = rearrange(vae.vae.decode(posterior.sample()).sample, "b c t h w -> b t c h w")
        rec, parts = loss_fn(x_hat, x)
        if mse_weight > 0:
            mse = ((x_hat - x) ** 2).mean()
            rec, parts["mse"] = rec + mse_weight * mse, mse.item()
        if motion_weight > 0:
            motion = motion_loss(x_hat, x)
            rec, parts["motion"] = rec + motion_weight * motion, motion.item()
        kl = posterior.kl().mean() / x[0].numel()  # per pixel, so kl_weight does not depend on the clip size
        loss = rec + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append({"step": step, "loss": loss.item(), "kl": kl.item(), **parts})
    vae.vae.eval().requires_grad_(False)
    vae.vae.register_to_config(scaling_factor=latent_scaling_factor(vae, clips))
    if out_dir is not None:
        vae.save_pretrained(out_dir)
        (Path(out_dir) / "train_log.json").write_text(json.dumps(
            {"steps": steps, "seconds": round(time.time() - t0, 1), "lr": lr, "kl_weight": kl_weight,
             "ffl_weight": ffl_weight, "mse_weight": mse_weight, "motion_weight": motion_weight,
             "scaling_factor": vae.scaling_factor,
             "losses": history}, indent=1))
    return vae


@torch.no_grad()
def latent_scaling_factor(vae: VideoVAE, clips: Iterable, max_batches: int = 16) -> float:
    """1 / std of the unscaled posterior means over up to `max_batches` batches of `clips`."""
    zs = []
    for x in itertools.islice(clips, max_batches):
        x = rearrange(as_clip(x).to(device=vae.device, dtype=vae.dtype), "b t c h w -> b c t h w")
        zs.append(vae.vae.encode(x).latent_dist.mode().flatten().float())
    return float(1.0 / torch.cat(zs).std().clamp_min(1e-6))
