"""Adversarial training of a video VAE: the hinge GAN loss with an adaptive weight that video VAEs add to their
reconstruction losses (CogVideoX's VAE trains with MSE + LPIPS + a hinge loss from a 3D discriminator, weighted by
the ratio of gradient norms at the decoder's last layer, as taming-transformers' VQGAN does).

Why: a VAE trained on L1 / MSE alone decodes what its latent cannot place exactly as the average of the
possibilities, i.e. blur. The demo VAE (tools/make_demo_vae.py) keeps 0.15x of the clips' fine-texture energy that
way, and an ideal 2x / 4x bicubic down/up-sampling of the same clips keeps only 0.18x / 0.04x: at that compression no
faithful reconstruction is sharp, the texture has to be drawn, and a discriminator is what teaches a decoder to draw
it. The price is distortion (the perception-distortion trade-off, Blau & Michaeli 2018): 500 steps on the demo VAE
took it from 0.15x to 0.51x sharpness and from 30.4 to 29.5 dB (benchmarks/results/demo_vae.md).

`PairDiscriminator` judges consecutive frame pairs, not single frames, so texture that flickers from frame to frame
looks as fake as texture that is missing. Written here (small) because diffusers' autoencoder classes come without
a training loss or discriminator.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchvision.transforms.functional import gaussian_blur
from tqdm import tqdm

from medsora.vae.autoencoder import VideoVAE
from medsora.vae.train import ReconstructionLoss, _batches, latent_scaling_factor


class PairDiscriminator(nn.Module):
    """PatchGAN on (frame t, frame t+1) stacked as 6 channels: clips (B, T, 3, H, W) -> logits (B(T-1), 1, H/4, W/4),
    each judging a ~22-pixel patch of a frame pair."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(6, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.GroupNorm(8, 2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 3, 1, 1), nn.GroupNorm(8, 4 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * w, 1, 3, 1, 1))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.shape[1] < 2:
            raise ValueError(f"PairDiscriminator needs clips of at least 2 frames, got {clips.shape[1]}")
        pairs = torch.cat([clips[:, :-1], clips[:, 1:]], dim=2)
        return self.net(rearrange(pairs, "b t c h w -> (b t) c h w"))


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: mean relu(1 - D(real)) + mean relu(1 + D(fake))."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    scale: float = 1.0, max_weight: float = 1e4) -> torch.Tensor:
    """scale * |grad rec| / |grad g| at `last_layer` (detached): the adversarial gradient is `scale` times the
    reconstruction's at the decoder's output, whatever the losses' raw magnitudes."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0].norm()
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0].norm()
    return (scale * g_rec / (g_adv + 1e-4)).clamp(0, max_weight).detach()


@dataclass
class AdversarialConfig:
    steps: int = 500
    lr: float = 1e-4                 # cosine-decayed to 0 over the steps (GAN training oscillates; this lets it settle)
    betas: tuple[float, float] = (0.5, 0.9)
    adv_weight: float = 0.5          # adversarial / reconstruction gradient ratio at the decoder's last layer
    d_warmup: int = 50               # discriminator-only steps first (the generator term starts after)
    train_encoder: bool = False      # False: decoder only, so the latent space (and the scaling factor) stay as they are
    mse_weight: float = 1.0          # reconstruction: L1 + mse_weight * MSE + ffl_weight * FFL
    ffl_weight: float = 0.1          #   + lowpass_weight * MSE of the frames blurred (Gaussian, lowpass_sigma px):
    lowpass_weight: float = 10.0     #   the GAN may draw fine texture but not move what the blur keeps (colour,
    lowpass_sigma: float = 1.0       #   shading, edges), which halved its PSNR cost per unit of sharpness
    seed: int = 0


def train_adversarial(vae: VideoVAE, clips, cfg: AdversarialConfig, progress: bool = True) -> dict:
    """Train `vae` (its decoder, and its encoder if cfg.train_encoder) with reconstruction + adaptive-weighted hinge
    GAN loss for cfg.steps steps over `clips` (re-iterated as needed; see medsora.vae.train._batches). Returns
    {"losses": per-step rows, "seconds": ...}. With the encoder trained, the scaling factor is measured again."""
    torch.manual_seed(cfg.seed)
    model = vae.vae
    model.requires_grad_(False)
    parts = [model.decoder] + ([model.encoder] if cfg.train_encoder else [])
    for p in parts:
        p.requires_grad_(True).train()
    params = [p for p in model.parameters() if p.requires_grad]
    disc = PairDiscriminator().to(device=vae.device, dtype=vae.dtype)
    opt_g = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
    sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, max(cfg.steps - cfg.d_warmup, 1))
    sched_d = torch.optim.lr_scheduler.CosineAnnealingLR(opt_d, cfg.steps)
    reconstruction, last = ReconstructionLoss(1.0, 0.0, cfg.ffl_weight), model.decoder.conv_out.conv.weight
    lowpass = lambda v: gaussian_blur(rearrange(v, "b t c h w -> (b t) c h w"), 5, cfg.lowpass_sigma)  # noqa: E731
    history, t0 = [], time.time()
    for step, (_, x) in enumerate(tqdm(_batches(clips, cfg.steps, 0), total=cfg.steps, desc="vae gan",
                                       disable=not progress), 1):
        x = x.to(device=vae.device, dtype=vae.dtype)
        with torch.set_grad_enabled(cfg.train_encoder):
            z = model.encode(rearrange(x, "b t c h w -> b c t h w")).latent_dist.mode()
        x_hat = rearrange(model.decode(z).sample, "b c t h w -> b t c h w")
        rec = reconstruction(x_hat, x)[0] + cfg.mse_weight * ((x_hat - x) ** 2).mean()
        if cfg.lowpass_weight > 0:
            rec = rec + cfg.lowpass_weight * ((lowpass(x_hat) - lowpass(x)) ** 2).mean()
        row = {"step": step, "rec": rec.item()}
        if step > cfg.d_warmup:
            g = -disc(x_hat).mean()
            weight = adaptive_weight(rec, g, last, cfg.adv_weight)
            opt_g.zero_grad(set_to_none=True)
            (rec + weight * g).backward()
            opt_g.step()
            sched_g.step()
            row.update(g=g.item(), weight=weight.item())
        d_loss = hinge_d_loss(disc(x), disc(x_hat.detach()))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        sched_d.step()
        history.append({**row, "d": d_loss.item()})
    model.eval().requires_grad_(False)
    if cfg.train_encoder:
        model.register_to_config(scaling_factor=latent_scaling_factor(vae, clips))
    return {"losses": history, "seconds": round(time.time() - t0, 1)}
