"""First-frame conditioning (image-to-video) and long videos, beyond the paper (docs/first_frame.md)."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_helpers import params, tiny_cfg

from medsora.config import model_preset
from medsora.data.video import probe, read_frames, write_frames, write_video
from medsora.first_frame import guided, make_condition, training_condition
from medsora.models.medsora import build_model
from medsora.sample import sample
from medsora.train import train


def _pair(name="tiny", **kw):
    """The same seed, the option off and on."""
    torch.manual_seed(0)
    off = build_model(name, **kw).eval()
    torch.manual_seed(0)
    on = build_model(name, first_frame=True, **kw).eval()
    return off, on


def test_option_off_is_the_papers_model_and_on_starts_from_it():
    """Off: no new module (the S preset keeps the paper's 43,758,784 parameters), a `cond` is refused. On: the same
    other weights for the same seed, the cond_embedder is zero and its output equals the unconditional model's
    whatever the condition, so a fine-tune from an unconditional checkpoint starts where the checkpoint was."""
    s_off = build_model("S")
    assert sum(p.numel() for p in s_off.parameters()) == 43_758_784
    assert not any("cond_embedder" in k for k in s_off.state_dict())
    off, on = _pair()
    d, c, p = off.cfg.hidden_size, off.cfg.in_channels, off.cfg.patch_size
    extra = {k: v for k, v in on.state_dict().items() if k not in off.state_dict()}
    assert set(extra) == {"cond_embedder.proj.weight", "cond_embedder.proj.bias"}
    assert sum(v.numel() for v in extra.values()) == (c + 1) * p * p * d + d
    assert all(v.abs().max() == 0 for v in extra.values())                       # zero init, kept by dit_init
    assert all(torch.equal(v, on.state_dict()[k]) for k, v in off.state_dict().items())
    x, t = torch.randn(2, 3, c, 8, 8), torch.tensor([10, 700])
    first = make_condition(torch.randn(2, c, 8, 8), 3)
    ref = off(x, t, num_video_frames=2)
    assert torch.equal(on(x, t, num_video_frames=2, cond=first), ref)
    assert torch.equal(on(x, t, num_video_frames=2), ref)                          # no condition = all zeros
    with pytest.raises(ValueError, match="without model.first_frame"):
        off(x, t, num_video_frames=2, cond=first)
    with pytest.raises(ValueError, match="mask channel"):
        on(x, t, num_video_frames=2, cond=first[:, :, :c])


def test_condition_layout_and_dropout_draws():
    first = torch.randn(4, 3, 2, 2)
    cond = make_condition(first, 5, keep=torch.tensor([True, False, True, True]))
    assert cond.shape == (4, 5, 4, 2, 2)
    assert torch.equal(cond[0, 0, :3], first[0]) and (cond[0, 0, 3] == 1).all() and (cond[:, 1:] == 0).all()
    assert (cond[1] == 0).all()                                                  # dropped: all zeros
    x0 = torch.randn(6, 3, 3, 2, 2)
    full = training_condition(x0, torch.Generator().manual_seed(7), 6, slice(None), 0.5)
    kept = full[:, 0, -1, 0, 0]
    assert 0 < kept.sum() < 6 and torch.equal(full[kept == 1, 0, :3], x0[kept == 1, 0])
    # two processes, each with its half of the global batch, draw what one process draws
    halves = [training_condition(x0[s], torch.Generator().manual_seed(7), 6, s, 0.5) for s in (slice(0, 3), slice(3, 6))]
    assert torch.equal(torch.cat(halves), full)
    for prob, expected in ((0.0, 0), (1.0, 6)):
        got = training_condition(x0, torch.Generator().manual_seed(7), 6, slice(None), prob)[:, 0, -1, 0, 0].sum()
        assert got == expected


def test_guidance_scale_one_is_the_conditional_call_and_s_follows_the_formula():
    _, on = _pair()
    for prm in on.parameters():                              # a trained model: non-zero outputs, branches differ
        torch.nn.init.normal_(prm, std=0.2 if prm.ndim == 4 else 0.02)
    x, t = torch.randn(2, 2, 4, 8, 8), torch.tensor([300, 800])
    cond = make_condition(torch.randn(2, 4, 8, 8), 2)

    def model_fn(x, t, cond=None):
        return on(x, t, cond=cond)

    assert torch.equal(guided(model_fn, cond, 1.0, 4)(x, t), on(x, t, cond=cond))
    c, u = on(x, t, cond=cond), on(x, t)
    assert not torch.allclose(c[:, :, :4], u[:, :, :4], atol=1e-3)
    got = guided(model_fn, cond, 3.0, 4)(x, t)
    torch.testing.assert_close(got[:, :, :4], u[:, :, :4] + 3.0 * (c[:, :, :4] - u[:, :, :4]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[:, :, 4:], c[:, :, 4:], atol=1e-5, rtol=1e-4)   # the conditional variance


def test_every_new_parameter_learns(cache):  # noqa: F811
    """A zero-initialised patch embedding still gets gradients (its input is not zero): a few AdamW steps move it."""
    from medsora.cache import LatentDataset
    from medsora.diffusion import GaussianDiffusion
    from medsora.first_frame import bind

    torch.manual_seed(0)
    model = build_model(model_preset("tiny"), first_frame=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    diffusion = GaussianDiffusion()
    ds = LatentDataset(cache)
    x0 = torch.stack([ds.get(i, 0)["video"] for i in range(4)])
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        t, noise = torch.randint(0, 1000, (4,), generator=g), torch.randn(x0.shape, generator=g)
        cond = training_condition(x0, g, 4, slice(None), 1.0)
        fn = bind(lambda x, tt, cond=None: model(x, tt, cond=cond), cond)
        opt.zero_grad()
        diffusion.training_losses(fn, x0, t, noise=noise)["loss"].mean().backward()
        if step == 0:
            assert model.cond_embedder.proj.weight.grad.abs().sum() == 0   # the final layer is zero at step 0 too
        opt.step()
    assert model.cond_embedder.proj.weight.abs().min() > 0 and model.cond_embedder.proj.bias.abs().min() > 0


def test_resume_equals_uninterrupted_with_the_option_on(cache, synth_mp4, tmp_path):  # noqa: F811
    opts = ["train.batch_size=3", "train.epochs=2", "train.ckpt_every=2", "model.first_frame=true",
            "train.first_frame_prob=0.5"]
    train(tiny_cfg(synth_mp4, *opts), cache, tmp_path / "full", progress=False)
    train(tiny_cfg(synth_mp4, *opts, "train.max_steps=4"), cache, tmp_path / "part", progress=False)
    assert train(tiny_cfg(synth_mp4, *opts), cache, tmp_path / "part", resume="auto", progress=False)["steps"] == 6
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = params(tmp_path / "full", name), params(tmp_path / "part", name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert params(tmp_path / "full")["cond_embedder.proj.weight"].abs().max() > 0


def _frames(vae, path):
    """uint8 (T, H, W, 3) of a written sample."""
    return read_frames(path, range(probe(path).num_frames)).astype(np.float64)


def test_sample_from_first_frames_and_long_videos(cache, synth_mp4, vae, tmp_path):  # noqa: F811
    train(tiny_cfg(synth_mp4, "train.max_steps=2", "model.first_frame=true"), cache, tmp_path / "run", progress=False)
    images = read_frames(sorted(synth_mp4.glob("*.mp4"))[0], [0, 30])              # two different frames
    write_frames(tmp_path / "firsts", images)
    opts = dict(steps=3, progress=False, sampler="ddim")
    paths = sample(tmp_path / "run", vae, tmp_path / "two", num=None, first_frame=tmp_path / "firsts", **opts)
    assert len(paths) == 2                                                          # one video per image
    a, b = (_frames(vae, p) for p in paths)
    assert a.shape == (8, 64, 64, 3) and np.abs(a - b).mean() > 1                   # different first frames
    # a video as PATH: its first frame; a single image: guidance 1 is the plain conditional call
    write_video(tmp_path / "clip.mp4", images)
    sample(tmp_path / "run", vae, tmp_path / "vid", num=1, first_frame=tmp_path / "clip.mp4", **opts)
    sample(tmp_path / "run", vae, tmp_path / "img", num=1, first_frame=tmp_path / "firsts" / "00000.png",
           guidance=1.0, **opts)
    zs = [load_file(tmp_path / d / "latents.safetensors")["latents"] for d in ("two", "img", "vid")]
    # the same video alone and in a batch of two; frame 0 to float rounding: the pinned frame is x_t minus its noise,
    # a cancellation that turns the vectorised kernels' batch-size-dependent last bit into ~3e-6 (measured)
    assert torch.equal(zs[0][:1, 1:], zs[1][:, 1:])
    torch.testing.assert_close(zs[0][:1], zs[1], atol=2e-5, rtol=0)
    assert zs[2].shape == zs[1].shape and not torch.equal(zs[1], zs[2])            # the mp4's frame went through a codec
    # frame 0 is pinned to the given frame's latent: the sample's first decoded frame is as close to the given frame
    # as the VAE's own reconstruction of it (issue #18: within 1 dB), whatever the (2-step) model predicts
    from medsora.long_video import read_first_frame

    def psnr(a, b):
        return (10 * torch.log10(4 / ((a.clamp(-1, 1) - b) ** 2).mean())).item()

    for k in range(2):
        x = read_first_frame(tmp_path / "firsts" / f"{k:05d}.png", 64)
        with torch.no_grad():
            own = vae.decode(vae.encode(x[None, None]))[0, 0]
            got = vae.decode(zs[0][k:k + 1])[0, 0]
        assert psnr(got, x) > psnr(own, x) - 1.0, (psnr(got, x), psnr(own, x))
    # a long video, from an image and without one: exactly N frames, segments of 8 frames (7 new each)
    for first in (tmp_path / "firsts" / "00000.png", None):
        out = tmp_path / f"long-{first is None}"
        paths = sample(tmp_path / "run", vae, out, num=1, first_frame=first, frames=20, guidance=2.0, **opts)
        assert probe(paths[0]).num_frames == 20
        assert load_file(out / "latents.safetensors")["latents"].shape == (1, 6, 4, 8, 8)   # 3 segments x 2
        assert json.loads((out / "samples.json").read_text())["frames"] == 20


def test_cli_refuses_first_frame_on_an_unconditional_checkpoint(cache, synth_mp4, vae, tmp_path, capsys):  # noqa: F811
    from medsora.cli import main

    vae.save_pretrained(tmp_path / "vae")
    train(tiny_cfg(synth_mp4, "train.max_steps=1"), cache, tmp_path / "run", progress=False)
    write_frames(tmp_path / "f", read_frames(sorted(synth_mp4.glob("*.mp4"))[0], [0]))
    base = ["sample", str(tmp_path / "run"), "--out", str(tmp_path / "s"), "--vae", str(tmp_path / "vae"), "--steps", "2"]
    for extra, what in ((["--first-frame", str(tmp_path / "f")], "model.first_frame=true"),
                        (["--frames", "20"], "longer than one clip")):
        capsys.readouterr()
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and what in err[0], err
    assert not (tmp_path / "s").exists()


def test_conditioned_first_frame_approaches_the_given_frame_as_training_proceeds(synth_mp4, tmp_path):
    """The model's own prediction of frame 0 (not pinned), at test scale (the 1 dB PSNR goal needs more training than a test affords: 1,500 steps reach
    24.8 dB vs the VAE's 31.3 dB, benchmarks/results/long_video.md). Through the packaged demo VAE, clips of 9 frames:
    after 300 steps the sampled first latent frame is far closer to the conditioning latent than after 25. This proves
    that training with the option converges and that conditioned sampling runs end to end; it does NOT prove that the
    condition is used yet: at 300 steps an unconditional sample's first latent frame is as close (measured: mean
    abs. error 2.4 conditioned vs 1.9 unconditional, 52 at step 25)."""
    from medsora.assets import DEMO_VAE
    from medsora.cache import build_cache
    from medsora.demo import demo_vae_geometry
    from medsora.latent_norm import LatentNorm
    from medsora.long_video import encode_first_frames, read_first_frame
    from medsora.vae.autoencoder import VideoVAE

    vae = VideoVAE.from_pretrained(DEMO_VAE).eval()
    cfg = tiny_cfg(synth_mp4, "data.num_frames=9", "data.num_images=0", "model.first_frame=true", "train.max_steps=300",
                   "train.epochs=10000", "train.ckpt_every=25", "train.keep_checkpoints=20", "train.log_every=50",
                   *demo_vae_geometry(DEMO_VAE, 64))
    build_cache(cfg, vae, tmp_path / "c", progress=False)
    train(cfg, tmp_path / "c", tmp_path / "run", progress=False)
    write_frames(tmp_path / "f", read_frames(sorted(synth_mp4.glob("*.mp4"))[1], [4]))
    x = read_first_frame(tmp_path / "f" / "00000.png", 64)
    norm = LatentNorm.from_dict(json.loads((tmp_path / "c" / "manifest.json").read_text())["latent_norm"])
    target = norm.denormalize(encode_first_frames(vae, x[None], norm))[0]          # the conditioning latent
    opts = dict(num=2, sampler="dpmpp-2m", steps=10, progress=False)
    err = {}
    for step in (25, 300):
        ckpt = tmp_path / "run" / "checkpoints" / f"step-{step:08d}"
        sample(ckpt, vae, tmp_path / f"s{step}", first_frame=tmp_path / "f", pin_first_frame=False, **opts)
        z = load_file(tmp_path / f"s{step}" / "latents.safetensors")["latents"]
        err[step] = (z[:, 0] - target).abs().mean().item()
    assert err[300] < 0.5 * err[25], err


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp-2m", "dpmpp-2m-sde", "unipc"])
def test_pinned_frame_zero_ends_as_the_given_latent_and_the_rest_follows_it(sampler):
    """`pinned` sets frame 0's eps from the closed form; every sampler then ends with frame 0 = the given latent,
    and the other frames (which the stand-in model mixes with frame 0) come out different from the free run."""
    from medsora.diffusion.samplers import sample_with
    from medsora.diffusion.schedule import GaussianDiffusion
    from medsora.first_frame import pinned

    d = GaussianDiffusion(channel_dim=2)                       # learned variance: eps + v halves on the channel axis
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(3, 3, generator=g) * 0.3                 # frames (3) -> frames, like a temporal layer would

    def model_fn(x, t):
        eps = torch.einsum("gf,bfchw->bgchw", mix, x) + 0.1 * torch.tanh(x)
        return torch.cat([eps, torch.zeros_like(eps)], dim=2)

    first = torch.randn(2, 4, 5, 5, generator=g)
    noise = torch.randn(2, 3, 4, 5, 5, generator=g)
    runs = {}
    for pin in (False, True):
        fn = pinned(model_fn, first, d.alphas_cumprod, channels=4) if pin else model_fn
        runs[pin] = sample_with(sampler, d, fn, noise, torch.Generator().manual_seed(1), steps=10)
    torch.testing.assert_close(runs[True][:, 0], first, atol=2e-3, rtol=0)
    assert (runs[False][:, 0] - first).abs().mean() > 0.3                     # free, frame 0 is elsewhere
    assert (runs[True][:, 1:] - runs[False][:, 1:]).abs().mean() > 1e-2       # the other frames see frame 0


def test_an_unconditional_run_fine_tunes_into_a_first_frame_one(cache, synth_mp4, tmp_path):  # noqa: F811
    """train.init_from: the new first-frame model starts computing exactly what the unconditional checkpoint does,
    then its condition embedding learns; other model changes, other latents and missing folders are refused."""
    from medsora.cache import LatentDataset
    from medsora.checkpoint import load_checkpoint
    from medsora.finetune import InitError, init_from

    train(tiny_cfg(synth_mp4, "train.max_steps=2"), cache, tmp_path / "u", progress=False)
    cfg = tiny_cfg(synth_mp4, "model.first_frame=true", f"train.init_from={tmp_path / 'u'}", "train.max_steps=3")
    norm = LatentDataset(cache).norm
    uncond = build_model(tiny_cfg(synth_mp4).model).eval()
    load_checkpoint(tmp_path / "u" / "checkpoints" / "step-00000002", model=uncond)
    model, ema = build_model(cfg.model).eval(), build_model(cfg.model).eval()
    init_from(cfg, model, ema, norm)
    x, t = torch.randn(2, 2, 4, 8, 8), torch.tensor([10, 700])
    cond = make_condition(torch.randn(2, 4, 8, 8), 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, 2, cond=cond), uncond(x, t, 2), rtol=0, atol=0)
    summary = train(cfg, cache, tmp_path / "ff", progress=False)
    assert summary["steps"] == 3 and params(tmp_path / "ff")["cond_embedder.proj.weight"].abs().max() > 0
    # a resumed fine-tune continues its own checkpoints (init_from only starts a run)
    more = tiny_cfg(synth_mp4, "model.first_frame=true", f"train.init_from={tmp_path / 'u'}", "train.max_steps=4")
    assert train(more, cache, tmp_path / "ff", resume="auto", progress=False)["steps"] == 4
    for bad, what in ((["model.hidden_size=32"], "another model config"),
                      ([f"train.init_from={tmp_path / 'nothing'}"], "no checkpoint there")):
        wrong = tiny_cfg(synth_mp4, "model.first_frame=true", f"train.init_from={tmp_path / 'u'}", *bad)
        with pytest.raises(InitError, match=what):
            init_from(wrong, build_model(wrong.model), build_model(wrong.model), norm)
    other = type(norm)(tuple(s + 1 for s in norm.shift), norm.scale)
    with pytest.raises(InitError, match="another normalisation"):
        init_from(cfg, build_model(cfg.model), build_model(cfg.model), other)
