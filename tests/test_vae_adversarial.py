"""Adversarial VAE training (medsora/vae/adversarial.py): losses against closed forms, and what each mode trains."""
import pytest
import torch

from medsora.vae.adversarial import (AdversarialConfig, PairDiscriminator, adaptive_weight, hinge_d_loss,
                                     train_adversarial)
from medsora.vae.autoencoder import VideoVAE
from medsora.vae.train import latent_scaling_factor
from test_vae_train import moving_clips


def test_hinge_d_loss_closed_form():
    confident = hinge_d_loss(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -2.0]))
    assert confident.item() == 0.0                                  # beyond both margins: nothing to learn
    # real 0.5 -> relu(0.5) = 0.5, real 2 -> 0 (mean 0.25); fake 0 -> 1, fake -3 -> 0 (mean 0.5)
    assert hinge_d_loss(torch.tensor([0.5, 2.0]), torch.tensor([0.0, -3.0])).item() == pytest.approx(0.75)


def test_adaptive_weight_is_the_gradient_norm_ratio():
    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(5, 3)
    y = x @ w.T
    rec, g = (y ** 2).mean(), -y.sum() * 0.1
    g_rec = 2 * (x @ w.T).T @ x / y.numel()                          # d mean(y^2) / dw by hand
    g_adv = -0.1 * torch.ones(4, 5) @ x
    expected = 0.5 * g_rec.norm() / (g_adv.norm() + 1e-4)
    torch.testing.assert_close(adaptive_weight(rec, g, w, scale=0.5), expected)
    assert not adaptive_weight(rec, g, w).requires_grad


def test_pair_discriminator_judges_each_consecutive_pair():
    torch.manual_seed(0)
    disc = PairDiscriminator()
    clips = torch.randn(2, 5, 3, 32, 32, requires_grad=True)
    logits = disc(clips)
    assert logits.shape == (2 * 4, 1, 8, 8)
    # logit of pair (t=1, t=2) of clip 0 depends on exactly frames 1 and 2 of clip 0
    logits[1].sum().backward()
    touched = clips.grad.abs().sum(dim=(2, 3, 4)) > 0
    assert touched.tolist() == [[False, True, True, False, False], [False] * 5]
    with pytest.raises(ValueError, match="at least 2 frames"):
        disc(torch.randn(1, 1, 3, 32, 32))


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _moved(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


def test_decoder_only_keeps_the_latent_space_and_trains_every_decoder_weight():
    vae = VideoVAE.tiny(seed=0)
    clips = [c for c in moving_clips(4, t=8, size=32).split(2)]
    enc, dec, scale = _snapshot(vae.vae.encoder), _snapshot(vae.vae.decoder), vae.scaling_factor
    z_before = vae.encode(clips[0])
    out = train_adversarial(vae, clips, AdversarialConfig(steps=4, d_warmup=1, lr=1e-3), progress=False)
    assert len(out["losses"]) == 4 and "weight" in out["losses"][-1] and "weight" not in out["losses"][0]
    assert not _moved(enc, vae.vae.encoder) and vae.scaling_factor == scale
    torch.testing.assert_close(vae.encode(clips[0]), z_before, rtol=0, atol=0)
    trainable = {k for k, _ in vae.vae.decoder.named_parameters()}
    assert trainable <= _moved(dec, vae.vae.decoder)               # every decoder weight learned
    assert not any(p.requires_grad for p in vae.vae.parameters())  # left frozen, in eval mode
    assert not vae.vae.training


def test_train_encoder_moves_it_and_measures_the_scaling_factor_again():
    vae = VideoVAE.tiny(seed=0)
    clips = [c for c in moving_clips(4, t=8, size=32).split(2)]
    enc = _snapshot(vae.vae.encoder)
    train_adversarial(vae, clips, AdversarialConfig(steps=3, d_warmup=1, lr=1e-3, train_encoder=True),
                      progress=False)
    assert {k for k, _ in vae.vae.encoder.named_parameters()} <= _moved(enc, vae.vae.encoder)
    assert vae.scaling_factor == pytest.approx(latent_scaling_factor(vae, clips))
