"""`medsora vae eval`: reconstruction quality of the base vs the compensated VAE on held-out clips.

    metrics = evaluate_reconstruction(None, vae, clips, "runs/vae/eval")   # base = vae without compensation

PSNR (dB, on [0, 1] pixels, per clip), SSIM (torchmetrics, Gaussian 11x11, per frame) and LPIPS (if a
model is given), averaged over clips; writes metrics.json and reconstruction.png, a temporal figure
(frames left to right; rows: original, base, compensated, and both absolute errors).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from einops import rearrange
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure
from tqdm import tqdm

from medsora.vae.autoencoder import VideoVAE
from medsora.vae.train import as_clip


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-clip PSNR in dB of clips (B, T, 3, H, W) in [-1, 1] (peak 1 on the [0, 1] scale)."""
    mse = (((x_hat - x) / 2) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-clip SSIM (mean over frames) of clips (B, T, 3, H, W) in [-1, 1]."""
    b = x.shape[0]
    frames = lambda v: rearrange((v + 1) / 2, "b t c h w -> (b t) c h w").float()  # noqa: E731
    per_frame = structural_similarity_index_measure(frames(x_hat), frames(x), data_range=1.0, reduction="none")
    return rearrange(per_frame, "(b t) -> b t", b=b).mean(1)


def lpips_distance(model: nn.Module, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-clip LPIPS (mean over frames)."""
    b = x.shape[0]
    d = model(rearrange(x_hat, "b t c h w -> (b t) c h w"), rearrange(x, "b t c h w -> (b t) c h w"))
    return rearrange(d.flatten(), "(b t) -> b t", b=b).mean(1)


@torch.no_grad()
def evaluate_reconstruction(vae_base: VideoVAE | None, vae_comp: VideoVAE, clips: Iterable,
                            out_dir: str | Path | None = "runs/vae/eval", lpips_model: nn.Module | None = None,
                            max_clips: int = 0, figure_frames: int = 8, progress: bool = True) -> dict:
    """Reconstruct every clip with both VAEs; return {"base": {...}, "compensated": {...}, "clips": n}.

    `vae_base=None` uses `vae_comp` with its compensation switched off (the same base weights).
    """
    sums = {"base": {}, "compensated": {}}
    n, first = 0, None
    for item in tqdm(clips, desc="vae eval", disable=not progress):
        x = as_clip(item).to(device=vae_comp.device, dtype=vae_comp.dtype)
        if vae_base is None:
            with vae_comp.compensation_disabled():
                rec_base = vae_comp.decode(vae_comp.encode(x))
        else:
            rec_base = vae_base.decode(vae_base.encode(x))
        rec_comp = vae_comp.decode(vae_comp.encode(x))
        t = min(x.shape[1], rec_base.shape[1], rec_comp.shape[1])
        x, rec_base, rec_comp = x[:, :t], rec_base[:, :t], rec_comp[:, :t]
        for name, rec in (("base", rec_base), ("compensated", rec_comp)):
            scores = {"psnr": psnr(rec, x), "ssim": ssim(rec, x)}
            if lpips_model is not None:
                scores["lpips"] = lpips_distance(lpips_model, rec, x)
            for k, v in scores.items():
                sums[name][k] = sums[name].get(k, 0.0) + float(v.sum())
        if first is None:
            first = (x[0].cpu(), rec_base[0].cpu(), rec_comp[0].cpu())
        n += x.shape[0]
        if 0 < max_clips <= n:
            break
    if n == 0:
        raise ValueError("no clips to evaluate")
    result = {name: {k: v / n for k, v in s.items()} for name, s in sums.items()}
    result["clips"] = n
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        save_figure(*first, out_dir / "reconstruction.png", frames=figure_frames, metrics=result)
    return result


def save_figure(x: torch.Tensor, rec_base: torch.Tensor, rec_comp: torch.Tensor, path: str | Path,
                frames: int = 8, metrics: dict | None = None) -> Path:
    """Temporal figure of one clip (T, 3, H, W): columns are frames, rows original / base / compensated /
    |base - original| / |compensated - original|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = torch.linspace(0, x.shape[0] - 1, min(frames, x.shape[0])).round().long().tolist()
    img = lambda v: ((v.float() + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()  # noqa: E731  c h w -> h w c
    err = lambda a: (a - x).abs().mean(1).float().numpy()                            # noqa: E731  t h w
    label = lambda name: name if not metrics else (                                  # noqa: E731
        f"{name}\n{metrics[name]['psnr']:.2f} dB, SSIM {metrics[name]['ssim']:.3f}")
    rows = [("original", [img(x[i]) for i in idx]),
            (label("base"), [img(rec_base[i]) for i in idx]),
            (label("compensated"), [img(rec_comp[i]) for i in idx]),
            ("|base - orig|", [err(rec_base)[i] for i in idx]),
            ("|comp - orig|", [err(rec_comp)[i] for i in idx])]
    vmax = max(float(err(rec_base).max()), float(err(rec_comp).max()), 1e-6)
    fig, axes = plt.subplots(len(rows), len(idx), figsize=(1.6 * len(idx), 1.7 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c, im in enumerate(images):
            ax = axes[r][c]
            ax.imshow(im, cmap="magma", vmin=0, vmax=vmax) if im.ndim == 2 else ax.imshow(im)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {idx[c]}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
