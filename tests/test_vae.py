"""VideoVAE wrapper, compensation modules and focal frequency loss."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from medsora.vae.autoencoder import COGVIDEOX_2B_CONFIG, TINY_CONFIG, VideoVAE
from medsora.vae.compensation import Residual2d, ResidualCausal3d
from medsora.vae.ffl import FocalFrequencyLoss


def clip(b=1, t=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, size, size, generator=g) * 2 - 1


def perturb(module, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="module")
def tiny():
    return VideoVAE.tiny(seed=0)


# ------------------------------------------------------------------------------------------------
# wrapper


@torch.no_grad()
def test_latent_frames_match_encoder_and_decoder(tiny):
    assert [tiny.latent_frames(t) for t in (16, 17, 8, 1)] == [4, 5, 2, 1]
    assert (tiny.spatial_factor, tiny.temporal_factor, tiny.latent_channels) == (8, 4, 4)
    for t in (1, 5, 8, 9, 16, 17):
        z = tiny.encode(clip(t=t, size=16))
        assert z.shape == (1, tiny.latent_frames(t), 4, 2, 2), t
        if t != 5:  # 1, 9, 17 (1 + 8k) and 8, 16 (8k) frames decode back to the same length
            assert tiny.decode(z).shape == (1, t, 3, 16, 16), t


@torch.no_grad()
def test_encode_is_scaled_posterior_mean_and_decode_inverts_scaling(tiny):
    tiny.vae.register_to_config(scaling_factor=0.7)
    try:
        x = clip(b=2, t=9, size=16)
        h, _ = tiny.vae.encoder(rearrange(x, "b t c h w -> b c t h w")[:, :, :9])  # one chunk: 9 < 16 frames
        mean = h[:, :4]                                                          # moments = (mean, logvar)
        z = tiny.encode(x)
        torch.testing.assert_close(z, rearrange(mean, "b c f h w -> b f c h w") * 0.7, atol=1e-5, rtol=1e-5)
        direct = tiny.vae.decode(rearrange(z, "b f c h w -> b c f h w") / 0.7).sample
        torch.testing.assert_close(tiny.decode(z, clamp=False), rearrange(direct, "b c t h w -> b t c h w"))
        assert tiny.decode(z).abs().max() <= 1
        s1, s2 = tiny.encode(x, sample=True), tiny.encode(x, sample=True)
        assert not torch.equal(s1, s2) and not torch.equal(s1, z)
    finally:
        tiny.vae.register_to_config(scaling_factor=1.0)


def test_from_pretrained_errors_name_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        VideoVAE.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        VideoVAE.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLCogVideoX"}))
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        VideoVAE.from_pretrained(tmp_path)


@torch.no_grad()
def test_save_pretrained_roundtrip_and_fingerprint(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "root" / "vae")
    for folder in (tmp_path / "root" / "vae", tmp_path / "root"):  # the vae folder or the folder holding it
        loaded = VideoVAE.from_pretrained(folder)
        assert loaded.name == "tiny" and loaded.fingerprint == tiny.fingerprint
        x = clip(t=8, size=16)
        torch.testing.assert_close(loaded.encode(x), tiny.encode(x), atol=0, rtol=0)
    assert VideoVAE.tiny(seed=1).fingerprint != tiny.fingerprint
    assert VideoVAE.tiny(seed=0).fingerprint == tiny.fingerprint


# ------------------------------------------------------------------------------------------------
# compensation


def _identity_then_live(vae, x):
    """Compensated == base at init; after perturbing the modules the output changes (hooks are live);
    `compensation_disabled` gives the base back."""
    with torch.no_grad():
        z0 = vae.encode(x)
        y0 = vae.decode(z0, clamp=False)
        comp = vae.add_compensation()
        z1 = vae.encode(x)
        y1 = vae.decode(z0, clamp=False)
        assert (z1 - z0).abs().max() <= 1e-6 and (y1 - y0).abs().max() <= 1e-6
        perturb(comp.encoder)
        assert (vae.encode(x) - z0).abs().max() > 1e-3
        perturb(comp.decoder)
        assert (vae.decode(z0, clamp=False) - y0).abs().max() > 1e-3
        with vae.compensation_disabled():
            assert torch.equal(vae.encode(x), z0) and torch.equal(vae.decode(z0, clamp=False), y0)
        vae.remove_compensation()
        assert torch.equal(vae.encode(x), z0)
    return comp


def test_identity_at_init_tiny():
    _identity_then_live(VideoVAE.tiny(seed=0), clip(t=9, size=32))


def _expected_count(cfg, ratio=0.5):
    """Closed form: 2D module = two 3x3 convs c->h->c, 3D module = two 3x3x3 convs, h = c * ratio."""
    boc, n = cfg["block_out_channels"], 0
    for c in boc[:-1]:                      # one before each encoder down-sampler (all blocks but the last)
        h = round(c * ratio)
        n += c * h * 9 + h + h * c * 9 + c
    for c in reversed(boc):                 # one in every decoder up block
        h = round(c * ratio)
        n += c * h * 27 + h + h * c * 27 + c
    return n


@pytest.mark.slow  # ~60 s on the shared 2-core machine (215M-parameter init + forward)
def test_identity_at_init_cogvideox_sized():
    vae = VideoVAE.from_config(COGVIDEOX_2B_CONFIG, seed=0)
    comp = _identity_then_live(vae, clip(t=1, size=16))
    n = sum(p.numel() for p in comp.parameters())
    print(f"\ncompensation parameters, CogVideoX-2b-sized VAE: {n:,} "
          f"(base: {sum(p.numel() for p in vae.vae.parameters()):,})")
    assert n == _expected_count(COGVIDEOX_2B_CONFIG)
    assert sum(p.numel() for p in VideoVAE.tiny().add_compensation().parameters()) == _expected_count(TINY_CONFIG)


def test_only_compensation_parameters_get_gradients():
    torch.manual_seed(0)
    vae = VideoVAE.tiny(seed=0)
    vae.add_compensation()
    params = vae.freeze_base()
    opt = torch.optim.Adam(params, lr=1e-3)
    x = clip(t=8, size=16)
    for step in range(2):
        opt.zero_grad()
        (vae(x) - x).abs().mean().backward()
        assert all(p.grad is None for p in vae.vae.parameters())
        grads = {k: p.grad for k, p in vae.compensation.named_parameters()}
        assert all(g is not None for g in grads.values())
        # at init only the zero-initialised output convs see a gradient; after a step, all of them
        nonzero = {k for k, g in grads.items() if g.abs().sum() > 0}
        assert nonzero == set(grads) if step else nonzero == {k for k in grads if "conv_b" in k}
        opt.step()
    assert {id(p) for p in params} == {id(p) for p in vae.parameters() if p.requires_grad}


@torch.no_grad()
def test_residual2d_is_per_frame_conv():
    m = Residual2d(6, 3)
    perturb(m)
    x = torch.randn(2, 6, 4, 8, 8)
    ref = torch.stack([x[:, :, t] + m.conv_b(F.silu(m.conv_a(x[:, :, t]))) for t in range(4)], dim=2)
    torch.testing.assert_close(m(x), ref)


@torch.no_grad()
def test_residual_causal3d_chunks_equal_full_and_causal():
    torch.manual_seed(0)
    m = ResidualCausal3d(4, 2)
    perturb(m, scale=0.2)
    x = torch.randn(1, 4, 7, 6, 6)
    full, _ = m(x)
    out, cache = [], None
    for chunk in (x[:, :, :3], x[:, :, 3:5], x[:, :, 5:]):   # the decoder's chunked loop
        y, cache = m(chunk, cache)
        out.append(y)
    torch.testing.assert_close(torch.cat(out, 2), full)
    x2 = x.clone()
    x2[:, :, 5:] += 1.0                                      # changing the future ...
    torch.testing.assert_close(m(x2)[0][:, :, :5], full[:, :, :5])   # ... leaves the past unchanged


@torch.no_grad()
def test_compensation_file_roundtrip(tmp_path):
    vae = VideoVAE.tiny(seed=0)
    perturb(vae.add_compensation())
    path = vae.save_compensation(tmp_path / "comp.safetensors")
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["num_parameters"] == sum(p.numel() for p in vae.compensation.parameters())
    assert path.stat().st_size < 4 * side["num_parameters"] + 64 * 1024   # the modules only, not the base
    other = VideoVAE.tiny(seed=0)                                         # another copy of the base
    other.load_compensation(path)
    x = clip(t=8, size=32)
    torch.testing.assert_close(other.decode(other.encode(x)), vae.decode(vae.encode(x)), atol=0, rtol=0)
    assert other.fingerprint == vae.fingerprint != VideoVAE.tiny(seed=0).fingerprint
    vae.save_pretrained(tmp_path / "base")
    again = VideoVAE.from_pretrained(tmp_path / "base", compensation=path)
    assert again.fingerprint == vae.fingerprint


def test_compensation_for_another_size_fails_naming_shapes(tmp_path):
    vae = VideoVAE.tiny(seed=0)
    vae.add_compensation()
    path = vae.save_compensation(tmp_path / "comp.safetensors")
    bigger = VideoVAE.from_config({**TINY_CONFIG, "block_out_channels": (16, 32, 32, 64)})
    with pytest.raises(ValueError) as err:
        bigger.load_compensation(path)
    msg = str(err.value)
    assert "file (32, 64, 3, 3) vs this VAE (16, 32, 3, 3)" in msg     # encoder.down2.conv_a.weight
    assert "block_out_channels" in msg and bigger.compensation is None
    with pytest.raises(FileNotFoundError):
        vae.load_compensation(tmp_path / "missing.safetensors")


@torch.no_grad()
def test_tiling_keeps_shapes_and_identity():
    vae = VideoVAE.tiny(seed=0)
    x = clip(b=2, t=1, size=256)
    z_full = vae.encode(x)
    vae.enable_tiling(tile_size=240)               # 256 px frames -> 2 x 2 overlapping tiles of 240 px
    z = vae.encode(x)
    assert z.shape == z_full.shape == (2, 1, 4, 32, 32)
    assert not torch.allclose(z, z_full)         # it did tile (GroupNorm statistics are per tile)
    assert vae.decode(z).shape == x.shape
    vae.add_compensation()
    assert (vae.encode(x) - z).abs().max() <= 1e-6
    vae.enable_tiling(tile_size=32)                # 64 px with 32 px tiles: diffusers' tiles do not fit
    with pytest.raises(ValueError, match="tile"):
        vae.encode(clip(t=1, size=64))


# ------------------------------------------------------------------------------------------------
# focal frequency loss


def naive_ffl(pred, target, alpha):
    """FFL by its definition with an explicit DFT sum, in float64 numpy."""
    p, q = pred.double().numpy(), target.double().numpy()
    *lead, H, W = p.shape
    p, q = p.reshape(-1, H, W), q.reshape(-1, H, W)
    total = 0.0
    for n in range(p.shape[0]):
        d = np.zeros((H, W))
        for u in range(H):
            for v in range(W):
                e = np.exp(-2j * np.pi * (u * np.arange(H)[:, None] / H + v * np.arange(W)[None, :] / W))
                d[u, v] = abs(((p[n] - q[n]) * e).sum() / np.sqrt(H * W))
        w = d ** alpha / (d ** alpha).max()
        total += (w * d ** 2).mean()
    return total / p.shape[0]


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_ffl_matches_its_formula(alpha):
    torch.manual_seed(0)
    pred, target = torch.randn(2, 2, 3, 5, 6), torch.randn(2, 2, 3, 5, 6)
    got = FocalFrequencyLoss(alpha)(pred, target)
    assert abs(float(got) - naive_ffl(pred, target, alpha)) < 1e-5


def test_ffl_zero_for_identical_and_weight_has_no_gradient():
    x = torch.randn(1, 2, 3, 8, 8)
    assert float(FocalFrequencyLoss()(x, x.clone())) == 0.0
    # with w treated as a constant, dFFL/dpred = w * 2 * (F_p - F_t) mapped back: for a single non-zero
    # frequency the weight is 1 and FFL = |d|^2 / (H W), so the gradient is that of an MSE over the spectrum
    pred = torch.zeros(1, 1, 4, 4, requires_grad=True)
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0] = 1.0                      # only the DC component differs: |d| = 4 (ortho), w = 1
    loss = FocalFrequencyLoss()(pred, target)
    loss.backward()
    assert abs(loss.item() - 16 / 16) < 1e-6
    torch.testing.assert_close(pred.grad, torch.full_like(pred, -2 / 16))


def test_vae_folder_whose_weights_do_not_fit_its_config_is_refused_by_name(tmp_path):
    import json

    VideoVAE.tiny(seed=0).save_pretrained(tmp_path / "vae")
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    cfg["block_out_channels"] = [32, 32, 64, 64]
    (tmp_path / "vae" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"the VAE in .*vae could not be loaded: .*size mismatch"):
        VideoVAE.from_pretrained(tmp_path / "vae")


def test_tiny_widths_set_the_spatial_factor():
    """Three widths give a 4x spatial VAE (the demo's), four the default 8x; latent channels as asked."""
    import torch

    from medsora.vae.autoencoder import VideoVAE

    four = VideoVAE.tiny(seed=0, latent_channels=8, block_out_channels=(16, 32, 64)).eval()
    with torch.no_grad():
        z = four.encode(torch.zeros(1, 8, 3, 32, 32))
    assert four.spatial_factor == 4 and z.shape[-3:] == (8, 8, 8)
    assert VideoVAE.tiny(seed=0).spatial_factor == 8


def test_the_packaged_demo_vae_loads_and_reconstructs():
    """medsora/assets/demo_vae (made by tools/make_demo_vae.py) loads as float32 and keeps a synthetic clip."""
    import torch

    from medsora.assets import DEMO_VAE
    from medsora.data.synth import make_video
    from medsora.vae.autoencoder import VideoVAE
    from medsora.vae.evaluate import psnr

    vae = VideoVAE.from_pretrained(DEMO_VAE)
    assert vae.dtype == torch.float32 and vae.latent_channels == 8 and vae.spatial_factor == 4
    x = torch.from_numpy(make_video(7, frames=8, size=64)).permute(0, 3, 1, 2)[None].float() / 127.5 - 1
    with torch.no_grad():
        assert psnr(vae.decode(vae.encode(x)), x).item() > 25      # measured 29.8 dB on the demo's held-out clips
