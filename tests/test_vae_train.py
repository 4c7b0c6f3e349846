"""VAE training (compensation, tiny from scratch), LPIPS loader and reconstruction evaluation."""
import json

import pytest
import torch
import torchvision
from einops import rearrange
from safetensors.torch import load_file

from medsora.vae.autoencoder import VideoVAE
from medsora.vae.evaluate import evaluate_reconstruction, psnr, ssim
from medsora.vae.ffl import FocalFrequencyLoss
from medsora.vae.perceptual import load_lpips
from medsora.vae.train import CompensationConfig, ReconstructionLoss, motion_loss, train_compensation, train_tiny_vae


def moving_clips(n, t=8, size=32, seed=0):
    """Smooth coloured gratings drifting over time: (n, t, 3, size, size) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        f = torch.rand(3, 2, generator=g) * 4 + 1            # spatial frequency per colour channel
        v = torch.rand(3, 2, generator=g) * 0.1 - 0.05       # drift per frame
        ph = torch.rand(3, generator=g) * 6.28
        frames = [torch.stack([torch.sin(6.28 * (f[c, 0] * (xx + k * v[c, 0]) + f[c, 1] * (yy + k * v[c, 1])) + ph[c])
                               for c in range(3)]) for k in range(t)]
        out.append(torch.stack(frames) * 0.8)
    return torch.stack(out)


@pytest.fixture(scope="module")
def random_lpips():
    torch.manual_seed(0)
    return load_lpips("alex", pretrained=False)


def test_lpips_loader_reads_local_trunk(tmp_path):
    torch.manual_seed(0)
    alex = torchvision.models.alexnet()
    torch.save(alex.state_dict(), tmp_path / "alexnet.pth")
    model = load_lpips("alex", trunk_path=tmp_path / "alexnet.pth")
    torch.testing.assert_close(model.net.slice1[0].weight, alex.features[0].weight)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    scaled = model.scaling_layer(x)
    torch.testing.assert_close(model.net(scaled).relu5, alex.features[:12](scaled))   # the same trunk
    assert model(x, x).abs().max() == 0 and (model(x, x.flip(-1)) > 0).all()
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        load_lpips("alex", trunk_path=tmp_path / "alexnet-owt-7be5be79.pth")


def test_reconstruction_loss_is_the_weighted_sum(random_lpips):
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 3, 32, 32) * 2 - 1
    total, parts = ReconstructionLoss(1.0, 0.5, 0.1, random_lpips)(y, x)
    lp = random_lpips(rearrange(y, "b t c h w -> (b t) c h w"), rearrange(x, "b t c h w -> (b t) c h w")).mean()
    expected = (y - x).abs().mean() + 0.5 * lp + 0.1 * FocalFrequencyLoss()(y, x)
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"l1", "ffl", "lpips"}
    with pytest.raises(ValueError, match="LPIPS"):
        ReconstructionLoss(lpips_weight=1.0)


def test_train_compensation_trains_only_compensation(tmp_path, random_lpips):
    vae = VideoVAE.tiny(seed=0)
    base_before = {k: v.clone() for k, v in vae.vae.state_dict().items()}
    clips = list(moving_clips(4, t=8, size=32).split(2))          # 2 batches of 2
    cfg = CompensationConfig(epochs=2, lr=1e-3, lpips_weight=0.5, log_every=1)
    out = train_compensation(vae, clips, cfg, tmp_path, lpips_model=random_lpips, progress=False)
    assert out["steps"] == 4 and out["num_trainable"] == sum(p.numel() for p in vae.compensation.parameters())
    assert all(torch.equal(v, base_before[k]) for k, v in vae.vae.state_dict().items())   # base frozen
    assert any(v.abs().sum() > 0 for k, v in vae.compensation.state_dict().items() if "conv_b" in k)
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["config"]["betas"] == [0.5, 0.9] and {"l1", "ffl", "lpips"} <= set(log["losses"][0])
    # the saved file on a fresh copy of the base reproduces the trained VAE
    fresh = VideoVAE.tiny(seed=0)
    fresh.load_compensation(tmp_path / "compensation.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(fresh(clips[0]), vae(clips[0]), atol=0, rtol=0)


class Killed(Exception):
    pass


def test_compensation_training_resumes_exactly(tmp_path, random_lpips, monkeypatch):
    """Killed in the third of 3 epochs (shuffled DataLoader), resumed: the compensation weights and losses equal
    an uninterrupted run's, bit for bit; without --resume the folder is refused, untouched."""
    import medsora.vae.train as vt

    data = moving_clips(6, t=8, size=32)
    loader = lambda: torch.utils.data.DataLoader(data, batch_size=2, shuffle=True,   # noqa: E731
                                                 generator=torch.Generator().manual_seed(0))
    cfg = CompensationConfig(epochs=3, lr=1e-3, lpips_weight=0.5, log_every=1)
    ref = train_compensation(VideoVAE.tiny(seed=0), loader(), cfg, tmp_path / "ref", lpips_model=random_lpips,
                             progress=False)
    real, calls = vt.ReconstructionLoss.forward, []

    def dying(self, *a):
        calls.append(1)
        if len(calls) == 8:
            raise Killed                                             # step 8 of 9: inside the last epoch
        return real(self, *a)

    monkeypatch.setattr(vt.ReconstructionLoss, "forward", dying)
    with pytest.raises(Killed):
        train_compensation(VideoVAE.tiny(seed=0), loader(), cfg, tmp_path / "run", lpips_model=random_lpips,
                           progress=False)
    monkeypatch.setattr(vt.ReconstructionLoss, "forward", real)
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert before == ["step-00000006"]                                # the end of epoch 2, the newest kept
    with pytest.raises(ValueError, match="--resume"):
        train_compensation(VideoVAE.tiny(seed=0), loader(), cfg, tmp_path / "run", lpips_model=random_lpips,
                           progress=False)
    out = train_compensation(VideoVAE.tiny(seed=0), loader(), cfg, tmp_path / "run", lpips_model=random_lpips,
                             progress=False, resume=True)
    assert out["steps"] == 9 and [r["loss"] for r in out["losses"]] == [r["loss"] for r in ref["losses"]]
    a, b = (load_file(tmp_path / d / "compensation.safetensors") for d in ("ref", "run"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_paper_defaults():
    cfg = CompensationConfig()
    assert (cfg.lr, tuple(cfg.betas), cfg.epochs, cfg.ffl_weight) == (2e-7, (0.5, 0.9), 10, 0.1)


def test_train_tiny_vae_saves_a_loadable_vae_with_unit_latents(tmp_path):
    clips = list(moving_clips(4, t=8, size=32).split(2))
    vae = train_tiny_vae(clips, steps=3, out_dir=tmp_path / "tiny", progress=False)
    loaded = VideoVAE.from_pretrained(tmp_path / "tiny")
    assert loaded.name == "tiny" and loaded.fingerprint == vae.fingerprint
    with torch.no_grad():
        z = torch.cat([loaded.encode(c) for c in clips])
    assert abs(float(z.std()) - 1.0) < 1e-3                    # scaling factor = 1 / std of the latents
    assert json.loads((tmp_path / "tiny" / "train_log.json").read_text())["steps"] == 3


def test_motion_loss_is_blind_to_a_constant_error_and_sees_a_held_frame(tmp_path):
    x = moving_clips(2, t=8, size=16)
    assert motion_loss(x + 0.3, x).item() == pytest.approx(0.0, abs=1e-6)   # a constant offset moves as the clip does
    held = x.clone()
    held[:, 3] = held[:, 2]                                                # frame 3 repeats frame 2
    naive = sum((held[b, t + 1] - held[b, t] - x[b, t + 1] + x[b, t]).abs().mean().item()
                for b in range(2) for t in range(7)) / 14
    assert motion_loss(held, x).item() == pytest.approx(naive, rel=1e-5) and naive > 0.01
    json_log = tmp_path / "tiny" / "train_log.json"
    train_tiny_vae(list(x.split(1)), steps=2, out_dir=tmp_path / "tiny", progress=False, motion_weight=1.0)
    assert all(row["motion"] > 0 for row in json.loads(json_log.read_text())["losses"])


def test_evaluate_reconstruction_metrics_and_figure(tmp_path):
    vae = VideoVAE.tiny(seed=0)
    vae.add_compensation()
    clips = list(moving_clips(3, t=8, size=32, seed=5).split(2))  # batches of 2 and 1
    res = evaluate_reconstruction(None, vae, clips, tmp_path, progress=False)
    assert res["clips"] == 3 and res["base"] == res["compensated"]      # zero-init: same reconstructions
    with torch.no_grad():
        x = torch.cat(clips)
        rec = vae.decode(vae.encode(x))
    mse = (((rec - x) / 2) ** 2).flatten(1).mean(1)                     # PSNR by its definition
    assert abs(res["base"]["psnr"] - float((10 * torch.log10(1 / mse)).mean())) < 1e-3
    assert (tmp_path / "reconstruction.png").stat().st_size > 1000
    assert json.loads((tmp_path / "metrics.json").read_text())["clips"] == 3
    assert torch.allclose(ssim(x, x), torch.ones(3)) and (ssim(rec, x) < 1).all()
    assert torch.isinf(psnr(x, x)).sum() == 0 and (psnr(x, x) > 100).all()


def _heldout_l1(vae, clips):
    with torch.no_grad():
        return float(torch.stack([(vae(c) - c).abs().mean() for c in clips]).mean())


@pytest.mark.slow
def test_compensation_lowers_heldout_error_of_a_pretrained_tiny_vae(tmp_path, pre_steps=300, comp_steps=100):
    torch.manual_seed(0)
    train = list(moving_clips(4, t=8, size=32, seed=0).split(2))
    heldout = list(moving_clips(2, t=8, size=32, seed=1).split(2))
    vae = train_tiny_vae(train, steps=pre_steps, out_dir=None, progress=False)
    before = _heldout_l1(vae, heldout)
    cfg = CompensationConfig(epochs=100, max_steps=comp_steps, lr=1e-2, lpips_weight=0.0)
    train_compensation(vae, train, cfg, tmp_path, progress=False)
    after = _heldout_l1(vae, heldout)
    with vae.compensation_disabled():
        assert _heldout_l1(vae, heldout) == pytest.approx(before)     # the base itself is unchanged
    print(f"\nheld-out L1 of the tiny VAE ({pre_steps} steps): base {before:.4f} -> compensated {after:.4f} "
          f"after {comp_steps} compensation steps")
    assert after < before * 0.97
