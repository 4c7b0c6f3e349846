"""Latent cache, training loop, checkpoints and sampling at tiny scale on CPU."""
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medsora import cache as cache_mod
from medsora.cache import CacheError, LatentDataset, build_cache
from medsora.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from medsora.config import load_config, to_dict
from medsora.data.clips import ClipDataset
from medsora.models.medsora import build_model
from medsora.sample import sample
from medsora.train import TrainError, make_diffusion, train
from medsora.vae.autoencoder import VideoVAE
from tiny_helpers import params, tiny_cfg


def test_cache_layout(cache, synth_mp4):
    ds = LatentDataset(cache)
    assert len(ds) == 8                                          # 4 videos x 2 clips of 17 frames
    a, b, c = ds.get(0, 0), ds.get(0, 1), ds.get(0, 0, offset=1)
    assert a["video"].shape == (2, 4, 8, 8) and a["images"].shape == (1, 4, 8, 8)
    assert not torch.equal(a["video"], b["video"])               # both flips stored
    assert not torch.equal(a["video"], c["video"])               # and both start offsets
    held = ds.subset([6, 7], hflip=False)                         # the held-out split: the last clips, unflipped
    assert len(held) == 2 and ds.hflip and not held.hflip
    assert held.get(1, 0)["clip"] == ds.get(7, 0)["clip"] and torch.equal(held.get(1, 0)["video"], ds.get(7, 0)["video"])
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["geometry"]["num_frames"] == 8 and len(manifest["shards"]) == 3
    assert manifest["clip_sources"] == [0, 0, 1, 1, 2, 2, 3, 3] and manifest["latent_norm"]["kind"] == "measured"


def test_cache_equals_pixels_through_vae(cache, synth_mp4, vae):
    """Training from the cache sees exactly what encoding the pixels would give: same loss at step 0."""
    cfg = tiny_cfg(synth_mp4)
    pixels = ClipDataset(synth_mp4, cfg.data, seed=cfg.train.seed)
    clip = pixels.load_clip(3, flip=True, offset=1, offsets=2)
    images = pixels.load_clip(5, flip=True, offset=0, images="own")["images"]   # clip 5's own chunk
    ds = LatentDataset(cache)
    with torch.no_grad():
        z_pix = ds.norm.normalize(vae.encode(clip["video"][None, :-1])[0])
        z_img = ds.norm.normalize(vae.encode(images[None])[0])
    cached = ds.get(3, 1, offset=1, images_from=5)
    torch.testing.assert_close(cached["video"], z_pix, atol=1e-4, rtol=1e-4)  # batch of 2 vs 1 in the VAE
    torch.testing.assert_close(cached["images"], z_img, atol=1e-4, rtol=1e-4)  # batch of 2 vs 1 in the VAE
    model = build_model(cfg.model)
    for p in model.parameters():                                # non-zero outputs, so the loss can differ
        torch.nn.init.normal_(p, std=0.02)
    diffusion = make_diffusion(cfg)
    t = torch.tensor([500])
    noise = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    loss = [diffusion.training_losses(lambda x, tt: model(x, tt, num_video_frames=2),
                                      torch.cat([v, i])[None], t, noise=noise)["loss"]
            for v, i in ((cached["video"], cached["images"]), (z_pix, z_img))]
    torch.testing.assert_close(loss[0], loss[1], atol=1e-4, rtol=1e-4)  # batch of 2 vs 1 in the VAE


class Killed(Exception):
    pass


def test_cache_resumes_and_refuses_mismatch(synth_mp4, vae, tmp_path, monkeypatch):
    cfg = tiny_cfg(synth_mp4)
    real = cache_mod._encode_clip
    calls, armed = [], [True]

    def flaky(ds, i, *a):
        calls.append(i)
        if armed[0] and len(calls) == 4:
            raise Killed  # killed while encoding the second shard
        return real(ds, i, *a)

    monkeypatch.setattr(cache_mod, "_encode_clip", flaky)
    with pytest.raises(Killed):
        build_cache(cfg, vae, tmp_path / "c", shard_size=3, progress=False)
    assert list(json.loads((tmp_path / "c" / "manifest.json").read_text())["shards"]) == ["shard-00000.safetensors"]
    calls.clear()
    armed[0] = False
    build_cache(cfg, vae, tmp_path / "c", shard_size=3, progress=False)
    assert calls == [3, 4, 5, 6, 7]                              # only the missing shards were encoded
    # a shard written by another process that was killed before process 0 recorded it: adopted, not redone
    manifest_path = tmp_path / "c" / "manifest.json"
    whole = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**whole, "shards": {"shard-00000.safetensors": [0, 1, 2]}}))
    calls.clear()
    build_cache(cfg, vae, tmp_path / "c", shard_size=3, progress=False)
    assert calls == [] and json.loads(manifest_path.read_text()) == whole
    monkeypatch.setattr(cache_mod, "_encode_clip", real)
    build_cache(cfg, vae, tmp_path / "ref", shard_size=3, progress=False)
    for name in ("shard-00000.safetensors", "shard-00002.safetensors"):
        a, b = load_file(tmp_path / "c" / name), load_file(tmp_path / "ref" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another geometry or another VAE: refused, nothing written
    before = (tmp_path / "c" / "manifest.json").read_text()
    with pytest.raises(CacheError, match="size"):
        build_cache(tiny_cfg(synth_mp4, "data.size=128"), vae, tmp_path / "c", shard_size=3, progress=False)
    with pytest.raises(CacheError, match="vae"):
        build_cache(cfg, VideoVAE.tiny(seed=1), tmp_path / "c", shard_size=3, progress=False)
    assert (tmp_path / "c" / "manifest.json").read_text() == before


def test_cache_records_clips_that_fail_to_decode(synth_mp4, vae, tmp_path, monkeypatch):
    from medsora.data.video import VideoError

    real = cache_mod._encode_clip

    def broken(ds, i, *a):
        if i == 4:
            raise VideoError("invalid data at frame 12")
        return real(ds, i, *a)

    monkeypatch.setattr(cache_mod, "_encode_clip", broken)
    build_cache(tiny_cfg(synth_mp4), vae, tmp_path / "c", shard_size=3, progress=False)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["shards"]["shard-00001.safetensors"] == [3, 5]
    assert [(f["clip"], f["reason"]) for f in manifest["failed"]] == [(4, "invalid data at frame 12")]
    assert len(LatentDataset(tmp_path / "c")) == 7


@pytest.mark.parametrize("recompute", ["false", "true"])   # tiny's default, and the S/B/L default
def test_resume_equals_uninterrupted(cache, synth_mp4, tmp_path, recompute):
    opts = ["train.batch_size=3", "train.epochs=3", "train.ckpt_every=2", f"model.recompute={recompute}"]
    cfg = tiny_cfg(synth_mp4, *opts)
    full = train(cfg, cache, tmp_path / "full", progress=False)
    assert full["steps"] == 9                                     # 8 clips / batch 3 -> 3 steps x 3 epochs
    # stop after 4 steps (mid-epoch), then resume to the end
    train(tiny_cfg(synth_mp4, *opts, "train.max_steps=4"), cache, tmp_path / "part", progress=False)
    before = {p: p.read_bytes() for p in (tmp_path / "part").rglob("*") if p.is_file()}
    with pytest.raises(TrainError, match="--resume auto"):            # a fresh run over it is refused, untouched
        train(cfg, cache, tmp_path / "part", progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "part").rglob("*") if p.is_file()} == before
    resumed = train(cfg, cache, tmp_path / "part", resume="auto", progress=False)
    assert resumed["steps"] == 9
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = params(tmp_path / "full", name), params(tmp_path / "part", name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 10))


def test_nan_steps_are_skipped(cache, synth_mp4, tmp_path, monkeypatch):
    import medsora.train as train_mod

    real = train_mod.GaussianDiffusion.training_losses
    count = {"n": 0}

    def sometimes_nan(self, *a, **k):
        out = real(self, *a, **k)
        count["n"] += 1
        if count["n"] == 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(train_mod.GaussianDiffusion, "training_losses", sometimes_nan)
    summary = train(tiny_cfg(synth_mp4, "train.max_steps=3"), cache, tmp_path / "r", progress=False)
    assert summary["skipped"] == 1 and summary["steps"] == 3
    assert all(torch.isfinite(v).all() for v in params(tmp_path / "r").values())


def test_an_inf_gradient_with_a_finite_loss_changes_nothing(cache, synth_mp4, tmp_path, monkeypatch):
    """Step 2's loss is finite but its gradient is inf: the step is skipped and counted, and the weights, the EMA and
    the optimizer state after it are those after step 1, bit for bit."""
    import medsora.train as train_mod

    class InfGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("inf")

    real, count = train_mod.GaussianDiffusion.training_losses, {"n": 0}

    def inf_grad_at_2(self, *a, **k):
        out = real(self, *a, **k)
        count["n"] += 1
        if count["n"] == 2:
            out["loss"] = InfGrad.apply(out["loss"])
        return out

    monkeypatch.setattr(train_mod.GaussianDiffusion, "training_losses", inf_grad_at_2)
    cfg = tiny_cfg(synth_mp4, "train.max_steps=2", "train.ckpt_every=1", "train.keep_checkpoints=5")
    summary = train(cfg, cache, tmp_path / "r", progress=False)
    assert summary["skipped"] == 1 and summary["steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)        # the loss itself was finite
    one, two = (tmp_path / "r" / "checkpoints" / f"step-0000000{k}" for k in (1, 2))
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a, b = load_file(one / name), load_file(two / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_train_refuses_mismatched_cache(cache, synth_mp4, tmp_path):
    with pytest.raises(TrainError, match="in_channels"):
        train(tiny_cfg(synth_mp4, "model.in_channels=16"), cache, tmp_path / "r", progress=False)
    with pytest.raises(TrainError, match="cache --flow"):
        train(tiny_cfg(synth_mp4, "train.align=true"), cache, tmp_path / "r", progress=False)


def test_checkpoint_atomic_corrupt_and_wrong_preset(tmp_path):
    model = build_model("tiny")
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 2, 4, 8, 8), torch.tensor([3])).sum().backward()
    opt.step()
    cfg = to_dict(load_config("tiny"))
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, model, opt, cfg, keep=3)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000003", "step-00000004"]
    # truncate the newest: skipped with a warning, the previous one is used
    newest = tmp_path / "checkpoints" / "step-00000004" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(newest.parent, build_model("tiny"))
    # a half-written temp folder is never picked
    (tmp_path / "checkpoints" / ".tmp-step-00000009-1").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    # another preset: shapes named
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(tmp_path / "checkpoints" / "step-00000003", build_model("tiny", hidden_size=32))
    # a state round-trips exactly, the optimizer included
    m2 = build_model("tiny")
    o2 = torch.optim.AdamW(m2.parameters())
    meta = load_checkpoint(tmp_path / "checkpoints" / "step-00000003", m2, None, o2)
    assert meta["step"] == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
    assert o2.state_dict()["state"].keys() == opt.state_dict()["state"].keys() != set()
    for k, st in opt.state_dict()["state"].items():
        assert torch.equal(o2.state_dict()["state"][k]["exp_avg_sq"], st["exp_avg_sq"])


def test_sample_writes_videos(cache, synth_mp4, vae, tmp_path):
    train(tiny_cfg(synth_mp4, "train.max_steps=1"), cache, tmp_path / "run", progress=False)
    paths = sample(tmp_path / "run", vae, tmp_path / "out", num=3, batch_size=2, steps=5, progress=False)
    assert [p.name for p in paths] == ["sample_000.mp4", "sample_001.mp4", "sample_002.mp4"]
    from medsora.data.video import probe

    info = probe(paths[0])
    assert (info.num_frames, info.width, info.height) == (8, 64, 64)
    assert (tmp_path / "out" / "sample_002.gif").exists()
    assert load_file(tmp_path / "out" / "latents.safetensors")["latents"].shape == (3, 2, 4, 8, 8)
    # deterministic by seed
    again = sample(tmp_path / "run", vae, tmp_path / "out2", num=1, steps=5, progress=False)
    a = load_file(tmp_path / "out" / "latents.safetensors")["latents"][0]
    b = load_file(tmp_path / "out2" / "latents.safetensors")["latents"][0]
    assert torch.equal(a, b) and again
    for bad in ({"num": 0}, {"batch_size": 0}, {"steps": 0}):            # refused, not silently defaulted
        with pytest.raises(ValueError, match=f"{next(iter(bad))}=0 must be at least 1"):
            sample(tmp_path / "run", vae, tmp_path / "bad", **{"num": 1, **bad}, progress=False)


def test_every_sampler_runs_end_to_end_and_an_unknown_one_is_refused(cache, synth_mp4, vae, tmp_path):
    train(tiny_cfg(synth_mp4, "train.max_steps=1"), cache, tmp_path / "run", progress=False)
    latents = {}
    for name in ("ddim", "ddpm", "dpmpp-2m", "dpmpp-2m-sde", "unipc"):
        paths = sample(tmp_path / "run", vae, tmp_path / name, num=1, steps=3, sampler=name, progress=False)
        assert paths[0].exists()
        latents[name] = load_file(tmp_path / name / "latents.safetensors")["latents"]
        assert latents[name].shape == (1, 2, 4, 8, 8) and torch.isfinite(latents[name]).all()
    # the same noise, five different integrators: five different results (the name is not ignored)
    names = list(latents)
    assert all(not torch.equal(latents[a], latents[b]) for i, a in enumerate(names) for b in names[i + 1:])
    with pytest.raises(ValueError, match="sampler must be one of"):
        sample(tmp_path / "run", vae, tmp_path / "euler", num=1, steps=3, sampler="euler", progress=False)
    assert not (tmp_path / "euler").exists()                       # refused before any work


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m-sde"])
def test_sample_resumes_after_a_kill(cache, synth_mp4, vae, tmp_path, monkeypatch, sampler):
    """A killed sampling run resumes at the first batch without its latents and ends as an uninterrupted one (also
    with the stochastic DPM-Solver++ SDE); a run with other settings does not reuse the batches."""
    import medsora.sample as sample_mod

    train(tiny_cfg(synth_mp4, "train.max_steps=1"), cache, tmp_path / "run", progress=False)
    opts = dict(num=5, batch_size=2, steps=3, progress=False, sampler=sampler)
    sample(tmp_path / "run", vae, tmp_path / "ref", **opts)
    real, calls, armed = sample_mod._decode_and_write, [], [True]

    def dying(vae, z, out_dir, prefix, start, *a):
        calls.append(start)
        if armed[0] and len(calls) == 2:
            raise Killed                                            # killed while writing the second batch
        return real(vae, z, out_dir, prefix, start, *a)

    monkeypatch.setattr(sample_mod, "_decode_and_write", dying)
    with pytest.raises(Killed):
        sample(tmp_path / "run", vae, tmp_path / "out", **opts)
    assert not (tmp_path / "out" / "latents.safetensors").exists()
    calls.clear()
    armed[0] = False
    sample(tmp_path / "run", vae, tmp_path / "out", **opts)
    assert calls == [2, 4]                                          # batch 0 (videos 0-1) was done
    a, b = (load_file(tmp_path / d / "latents.safetensors")["latents"] for d in ("ref", "out"))
    assert torch.equal(a, b) and not (tmp_path / "out" / ".batches").exists()
    # killed again, then resumed with another seed: nothing of the first run is reused
    calls.clear()
    armed[0] = True
    with pytest.raises(Killed):
        sample(tmp_path / "run", vae, tmp_path / "out2", **opts)
    calls.clear()
    armed[0] = False
    with pytest.raises(ValueError, match="--overwrite"):            # never mixed with the first run's videos
        sample(tmp_path / "run", vae, tmp_path / "out2", seed=1, **opts)
    sample(tmp_path / "run", vae, tmp_path / "out2", seed=1, overwrite=True, **opts)
    assert calls == [0, 2, 4]


def test_reconstruct_decodes_the_runs_cache(cache, synth_mp4, vae, tmp_path):
    """Real clips through the VAE: the cached latents of evenly spread clips, decoded, written as videos."""
    from medsora.data.video import read_frames
    from medsora.sample import reconstruct, to_uint8

    train(tiny_cfg(synth_mp4, "train.max_steps=1"), cache, tmp_path / "run", progress=False)
    paths = reconstruct(tmp_path / "run", vae, tmp_path / "rec", num=3, batch_size=2, png=True, progress=False)
    assert [p.name for p in paths] == ["recon_000.mp4", "recon_001.mp4", "recon_002.mp4"]
    ds = LatentDataset(cache)                                     # 8 clips: 0, 4 (3.5 rounded to even), 7
    for k, clip in ((1, 4), (2, 7)):
        with torch.no_grad():
            expected = to_uint8(vae.decode(ds.get(clip, 0, raw=True)["video"][None])[0].float())
        got = read_frames(tmp_path / "rec" / f"recon_{k:03d}", range(len(expected))).astype(int)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1   # decoded in a batch of 2 vs 1
    assert len(reconstruct(tmp_path / "run", vae, tmp_path / "all", num=50, progress=False)) == 8
    with pytest.raises(ValueError, match="pass the VAE the cache was built with"):
        reconstruct(tmp_path / "run", VideoVAE.tiny(seed=1).eval(), tmp_path / "x", num=1, progress=False)


def test_cli_cache_train_sample_find_the_vae(synth_mp4, vae, tmp_path, caplog):
    """The commands a user types: `sample RUN` needs no --vae, the run remembers the cache's VAE; a different
    VAE is allowed but said."""
    from medsora.cli import main

    vae.save_pretrained(tmp_path / "vae")
    opts = [f"data.root={synth_mp4}", "data.num_frames=8", "data.frame_stride=2"]
    assert main(["cache", "--preset", "tiny", "--out", str(tmp_path / "c"), f"vae.path={tmp_path / 'vae'}", *opts]) == 0
    assert main(["train", "--preset", "tiny", "--cache", str(tmp_path / "c"), "--run-dir", str(tmp_path / "run"),
                 "train.max_steps=1", "train.align=false", *opts]) == 0
    assert load_config("tiny", yaml_path=tmp_path / "run" / "config.yaml").vae.path == str((tmp_path / "vae").resolve())
    with caplog.at_level("WARNING"):
        assert main(["sample", str(tmp_path / "run"), "--out", str(tmp_path / "s"), "--num", "1", "--steps", "2"]) == 0
    assert (tmp_path / "s" / "sample_000.mp4").exists() and "not the one" not in caplog.text
    assert main(["sample", str(tmp_path / "run"), "--out", str(tmp_path / "r"), "--reconstruct", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "r").glob("*.mp4")) == ["recon_000.mp4", "recon_001.mp4"]
    VideoVAE.tiny(seed=1).save_pretrained(tmp_path / "other")
    with caplog.at_level("WARNING"):
        assert main(["sample", str(tmp_path / "run"), "--out", str(tmp_path / "s2"), "--num", "1", "--steps", "2",
                     "--vae", str(tmp_path / "other")]) == 0
    assert "not the one whose latents" in caplog.text


def test_alignment_end_to_end_adds_no_parameters(synth_mp4, vae, tmp_path):
    """cache --flow (Farneback + DINO loaded from a weights file the test writes) -> training with alignment;
    the checkpoint has exactly the tensors of a run without alignment, so sampling is unchanged."""
    import timm
    from safetensors.torch import save_file

    from medsora.cache import flow_targets_from_config

    dino = timm.create_model("vit_small_patch8_224.dino", pretrained=False, num_classes=0)
    save_file(dino.state_dict(), str(tmp_path / "dino.safetensors"))
    cfg = tiny_cfg(synth_mp4, "flow.method=farneback", f"flow.dino_weights={tmp_path / 'dino.safetensors'}",
                   "train.align=true", "train.max_steps=2", "train.align_margin=0")
    build_cache(cfg, vae, tmp_path / "c", flow=flow_targets_from_config(cfg), shard_size=4, progress=False)
    item = LatentDataset(tmp_path / "c").get(0, 1)
    assert item["flow"].shape == (2, 2, 16, 64)        # DINO layers (0, 1) x 2 latent frames x 16 tokens x width 64
    assert torch.isfinite(item["flow"]).all() and item["flow"].std() > 0
    train(cfg, tmp_path / "c", tmp_path / "on", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["align"] > 0 for r in rows if "align" in r)   # margin 0: the loss is live
    off = tiny_cfg(synth_mp4, "train.max_steps=2")
    train(off, tmp_path / "c", tmp_path / "off", progress=False)
    a, b = params(tmp_path / "on"), params(tmp_path / "off")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert any(not torch.equal(a[k], b[k]) for k in a)         # the alignment gradient did change the weights
    with pytest.raises(CacheError, match="flow"):              # a flow cache is not silently reused without flow
        build_cache(off, vae, tmp_path / "c", shard_size=4, progress=False)


def test_alignment_with_weight_free_features_trains_and_says_so(synth_mp4, vae, tmp_path):
    """No DINO weights (tiny: flow.features=auto): cache --flow computes flow-patch features, training aligns with
    them, and the run folder and its report name them as not the paper's."""
    from medsora.cache import flow_targets_from_config
    from medsora.report import build_report

    cfg = tiny_cfg(synth_mp4, "flow.method=farneback", "train.align=true", "train.max_steps=2", "train.align_margin=0")
    build_cache(cfg, vae, tmp_path / "c", flow=flow_targets_from_config(cfg), shard_size=4, progress=False)
    item = LatentDataset(tmp_path / "c").get(0, 1)
    assert item["flow"].shape == (2, 2, 16, 64) and item["flow"].std() > 0
    train(cfg, tmp_path / "c", tmp_path / "on", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["align"] > 0 for r in rows if "align" in r)
    rec = json.loads((tmp_path / "on" / "alignment.json").read_text())
    assert rec["align"] and "NOT the paper's" in rec["features"] and "|patches:v1|" in rec["targets"]
    html = build_report(tmp_path / "on").read_text()
    assert "Optical-flow alignment" in html and "weight-free, NOT the paper" in html
    train(tiny_cfg(synth_mp4, "train.max_steps=2"), tmp_path / "c", tmp_path / "off", progress=False)
    assert json.loads((tmp_path / "off" / "alignment.json").read_text())["align"] is False


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_and_never_executed(tmp_path):
    import pickle

    from medsora.checkpoint import load_weights

    marker = tmp_path / "pwned"
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps({"weight": _Payload(str(marker))}))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(bad, build_model("tiny"))
    assert not marker.exists()


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_checkpoint_write_failure(cache, synth_mp4, tmp_path, monkeypatch, policy):
    import errno

    import medsora.checkpoint as ckpt_mod

    real = ckpt_mod.save_file
    calls = {"n": 0}

    def disk_full(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] > 4:  # the first checkpoint (4 files) is written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt_mod, "save_file", disk_full)
    cfg = tiny_cfg(synth_mp4, "train.max_steps=6", "train.ckpt_every=2", f"train.on_checkpoint_error={policy}")
    if policy == "stop":
        with pytest.raises(TrainError, match="could not be written"):
            train(cfg, cache, tmp_path / "r", progress=False)
    else:
        assert train(cfg, cache, tmp_path / "r", progress=False)["steps"] == 6
    # the step-2 checkpoint is intact and no temporary folder is left behind
    assert [p.name for p in (tmp_path / "r" / "checkpoints").iterdir()] == ["step-00000002"]
    assert latest_checkpoint(tmp_path / "r").name == "step-00000002"


def test_grad_accumulation_equals_one_big_batch(cache, synth_mp4, tmp_path, same_training):
    base = ["train.batch_size=4", "train.max_steps=3", "model.attn_dropout=0"]
    lr = tiny_cfg(synth_mp4).train.lr
    train(tiny_cfg(synth_mp4, *base), cache, tmp_path / "one", progress=False)
    train(tiny_cfg(synth_mp4, *base, "train.grad_accum=2"), cache, tmp_path / "acc", progress=False)
    train(tiny_cfg(synth_mp4, *base, "train.precision=bf16"), cache, tmp_path / "cpu_bf16", progress=False)
    same_training(tmp_path / "one", tmp_path / "acc", lr)
    a, c = params(tmp_path / "one"), params(tmp_path / "cpu_bf16")
    assert all(torch.equal(a[k], c[k]) for k in a)        # on CPU, mixed precision is off: float32 throughout
    # the tolerance can fail: half the batch per step (other clips, other noise) lies far outside it
    train(tiny_cfg(synth_mp4, *base, "train.batch_size=2"), cache, tmp_path / "half", progress=False)
    with pytest.raises(AssertionError):
        same_training(tmp_path / "one", tmp_path / "half", lr)
    with pytest.raises(TrainError, match="grad_accum"):
        train(tiny_cfg(synth_mp4, "train.batch_size=3", "train.grad_accum=2"), cache, tmp_path / "x", progress=False)


# ---------------------------------------------------------------------------------------------- fresh data every epoch


def test_each_epoch_draws_a_new_start_new_images_and_a_new_latent(cache):
    """Issue 15: a clip is not frozen at cache time. Across epochs the same index comes at other start offsets,
    with the image chunk of other clips, never one of its own video, and with a fresh posterior draw."""
    ds = LatentDataset(cache)
    seen = {}
    for epoch in range(8):
        ds.set_epoch(epoch)
        for index in range(len(ds)):
            item = ds[index]
            assert ds.source_of[item["images_from"]] != ds.source_of[item["clip"]], (epoch, index)
            seen.setdefault(index, []).append((item["offset"], item["images_from"], item["video"]))
    for index, draws in seen.items():
        assert len({o for o, _, _ in draws}) == 2, index                       # both cached starts are used
        assert len({d for _, d, _ in draws}) >= 3, index                       # images of several other clips
    a, b = seen[0][0][2], next(v for o, _, v in seen[0][1:] if o == seen[0][0][0])
    assert not torch.equal(a, b)                                               # same start, another posterior draw
    ds.set_epoch(3)
    again = LatentDataset(cache)
    again.set_epoch(3)
    assert all(torch.equal(ds[i]["video"], again[i]["video"]) and torch.equal(ds[i]["images"], again[i]["images"])
               for i in range(len(ds)))                                       # (seed, epoch, index) decide it all
    mode = LatentDataset(cache, posterior="mode")
    item = mode[0]
    assert torch.equal(item["video"], mode.get(0, int(item["flip"]), item["offset"])["video"])


def test_pixel_clips_start_anywhere_in_their_window(synth_mp4):
    cfg = tiny_cfg(synth_mp4).data
    ds = ClipDataset(synth_mp4, cfg, seed=0, progress=False)
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[1]
        assert item["source"] == ds.clips[1][0]
        starts.add(item["start"])
    assert len(starts) >= 3 and all(ds.clips[1][1] <= s for s in starts)
    # the cache's evenly spaced starts stay distinct in a source's last window too (40 frames: room 17, then 7)
    span = 8 * 2 + 1
    for index in (0, 1):
        got = [ds.offset_start(index, o, 4) for o in range(4)]
        assert len(set(got)) == 4 and got[-1] + span <= 40, got


def test_normalised_latents_are_standard_and_round_trip(cache, vae):
    """The tiny VAE has no published factor: its cached latents are normalised per channel to mean 0, std 1;
    normalise -> denormalise gives the VAE's latents back (to float32 rounding), and decoding stays in [-1, 1]."""
    ds = LatentDataset(cache)
    g = torch.Generator().manual_seed(0)
    z = torch.stack([ds.get(i, f, o, generator=g)["video"] for i in range(len(ds)) for f in (0, 1) for o in (0, 1)])
    dims = (0, 1, 3, 4)
    assert (z.mean(dims).abs() < 0.1).all(), z.mean(dims)
    assert ((z.std(dims) - 1).abs() < 0.1).all(), z.std(dims)
    raw = ds.get(2, 1, raw=True)["video"]
    torch.testing.assert_close(ds.norm.denormalize(ds.norm.normalize(raw)), raw, rtol=2e-7, atol=2e-7)
    assert not torch.allclose(ds.norm.normalize(raw), raw, atol=0.1)        # the normalisation is not the identity
    with torch.no_grad():
        pixels = vae.decode(ds.norm.denormalize(z[:2]))
    assert pixels.min() >= -1 and pixels.max() <= 1


def test_published_factor_keeps_the_identity_and_old_caches_are_refused(cache, tmp_path):
    import shutil

    from medsora.latent_norm import wants_measured

    assert not wants_measured("auto", 1.15258426) and not wants_measured("auto", 0.7)   # CogVideoX 2b / 5b
    assert wants_measured("auto", 1.0) and wants_measured("auto", 0.83) and wants_measured("measured", 1.15258426)
    assert not wants_measured("published", 1.0)
    old = tmp_path / "old"
    shutil.copytree(cache, old)
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "version": 1}))
    with pytest.raises(CacheError, match="format 1.*build a new cache"):
        LatentDataset(old)
    (old / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "latent_norm"}))
    with pytest.raises(CacheError, match="incomplete"):
        LatentDataset(old)


def test_phases_and_clipping_follow_the_epochs(cache, synth_mp4, tmp_path):
    """The warm phase's lr and batch until train.warm_epochs, then the main ones; gradient clipping only from
    train.grad_clip_from_epoch: read back from metrics.jsonl, step by step (tiny's own preset has neither)."""
    cfg = tiny_cfg(synth_mp4, "train.warm_epochs=1", "train.warm_lr=3e-3", "train.warm_batch_size=4",
                   "train.lr=1e-4", "train.batch_size=2", "train.grad_clip_from_epoch=2", "train.grad_clip=0.5",
                   "train.epochs=3", "train.max_steps=1000")
    train(cfg, cache, tmp_path / "r", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert {r["epoch"] for r in rows} == {0, 1, 2}
    for r in rows:
        warm = r["epoch"] < 1
        assert r["lr"] == (3e-3 if warm else 1e-4), r
        assert r["batch"] <= (4 if warm else 2), r
        assert r["grad_clip"] == (0.5 if r["epoch"] >= 2 else None), r
    assert any(r["batch"] == 4 for r in rows if r["epoch"] == 0)
    assert any(r["batch"] == 2 for r in rows if r["epoch"] >= 1)
