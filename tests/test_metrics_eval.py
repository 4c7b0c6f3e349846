"""`evaluate`: clip plan, missing weights, set-vs-itself and perturbed copies, the real-statistics cache."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from medsora.data.synth import make_video, video_seed
from medsora.data.video import write_frames
from medsora.evaluate import evaluate, plan_clips
from medsora.metrics import weights as W


@pytest.fixture(autouse=True)
def _no_user_weights(monkeypatch, tmp_path):
    """Only the weights a test writes are found (never the user's ~/.cache or $MEDSORA_WEIGHTS)."""
    monkeypatch.delenv("MEDSORA_WEIGHTS", raising=False)
    monkeypatch.setattr(W, "DEFAULT_DIR", tmp_path / "no-default-weights")


def _he_init_(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            with torch.no_grad():
                m.weight.normal_(0, math.sqrt(2 / m.weight[0].numel()), generator=g)
                if m.bias is not None:
                    m.bias.zero_()
    return model


def _write_set(root, videos, noise=0.0, seed=0):
    """Frame folders (lossless PNG) of `videos` plus Gaussian noise of std `noise` (grey levels)."""
    rng = np.random.default_rng(seed)
    for i, v in enumerate(videos):
        x = v.astype(np.float64) + rng.normal(0, noise, v.shape) if noise else v
        write_frames(root / f"v{i:02d}", np.clip(np.round(x), 0, 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def clips16():
    return [make_video(video_seed(3, i), frames=16, size=32) for i in range(6)]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, write_metric_weights):
    """Tiny random VideoMAE and CLIP folders, under the names `evaluate` looks for."""
    return write_metric_weights(tmp_path_factory.mktemp("weights"))


def _run(real, fake, weights, tmp_path, metrics, **kw):
    return evaluate(real, fake, num=64, metrics=metrics, weights_dir=weights, device="cpu",
                    cache_dir=tmp_path / "cache", progress=False, real_stride=1, resolution=32, workers=0,
                    batch_size=4, **kw)


def test_plan_clips_stride_offsets_and_skips(synth_mp4):
    """4 mp4 of 40 frames: stride 2 fits (31 frames) at a seeded random start; stride 3 needs 46."""
    plan, skipped = plan_clips(synth_mp4, num=3, stride=2, random_start=True, seed=0, progress=False)
    assert len(plan) == 3 and not skipped
    for _, idx in plan:
        assert len(idx) == 16 and np.all(np.diff(idx) == 2) and 0 <= idx[0] and idx[-1] < 40
    assert plan == plan_clips(synth_mp4, num=3, stride=2, random_start=True, seed=0, progress=False)[0]
    assert plan_clips(synth_mp4, num=9, stride=1, progress=False)[0][0][1] == list(range(16))  # fake: frame 0
    plan3, skipped3 = plan_clips(synth_mp4, num=3, stride=3, progress=False)
    assert plan3 == [] and len(skipped3) == 4 and "a clip needs 46" in skipped3[0][1]


def test_missing_weights_reported_not_faked(tmp_path, clips16, tiny_weights):
    real = _write_set(tmp_path / "real", clips16[:3])
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "clip-vit-large-patch14").symlink_to(tiny_weights / "clip-vit-large-patch14")
    res = _run(real, real, weights, tmp_path, "fvd,cdfvd,fid,is,fc", out=tmp_path / "out" / "eval.json")
    assert list(res) == ["fvd", "cdfvd", "fid", "is", "fc"]
    for m, name in [("fvd", "i3d_torchscript.pt"), ("cdfvd", "vit_g_hybrid_pt_1200e_ssv2_ft.pth"),
                    ("fid", "pt_inception-2015-12-05-6726825d.pth"), ("is", "pt_inception-2015-12-05-6726825d.pth")]:
        assert res[m]["value"] is None and name in res[m]["reason"] and str(weights) in res[m]["reason"]
    assert 0 < res["fc"]["value"] <= 100 and res["fc"]["n_fake"] == 3  # the metric with weights still ran
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["metrics"]["fc"]["value"] == pytest.approx(res["fc"]["value"])
    table = (tmp_path / "out" / "eval.md").read_text()
    assert table.count("not computed") == 4 and "FC" in table
    with pytest.raises(ValueError, match="unknown metric"):
        _run(real, real, weights, tmp_path, "fvd,psnr")


def test_cdfvd_self_zero_and_grows_with_noise(tmp_path, clips16, tiny_weights):
    real = _write_set(tmp_path / "real", clips16)
    values = []
    for sigma in (0, 8, 32, 96):
        fake = _write_set(tmp_path / f"fake{sigma}", clips16, noise=sigma, seed=sigma)
        r = _run(real, fake, tiny_weights, tmp_path, ["cdfvd", "fc"])
        assert r["cdfvd"]["n_real"] == r["cdfvd"]["n_fake"] == 6
        values.append((r["cdfvd"]["value"], r["fc"]["value"]))
    cd = [v[0] for v in values]
    assert cd[0] < 1e-4 * cd[1]  # the set against itself
    assert cd[1] < cd[2] < cd[3]
    assert values[3][1] < values[0][1]  # heavy frame-independent noise lowers frame consistency


def test_real_statistics_cached_by_content(tmp_path, clips16, tiny_weights, monkeypatch):
    from medsora.metrics.videomae import VideoMAEFeatures

    seen = []
    call = VideoMAEFeatures.__call__
    monkeypatch.setattr(VideoMAEFeatures, "__call__", lambda self, v: seen.append(len(v)) or call(self, v))
    real = _write_set(tmp_path / "real", clips16[:4])
    fake = _write_set(tmp_path / "fake", clips16[:4], noise=20)
    first = _run(real, fake, tiny_weights, tmp_path, "cdfvd")
    assert sum(seen) == 8  # 4 real + 4 generated clips
    seen.clear()
    second = _run(real, fake, tiny_weights, tmp_path, "cdfvd")
    assert sum(seen) == 4  # real statistics came from the cache
    assert second["cdfvd"]["value"] == pytest.approx(first["cdfvd"]["value"], rel=1e-12)
    assert len(list((tmp_path / "cache").glob("real-cdfvd-*.npz"))) == 1
    # same names, new content: the cache key changes and the real set is read again
    write_frames(real / "v00", np.ascontiguousarray(clips16[0][::-1]))
    seen.clear()
    third = _run(real, fake, tiny_weights, tmp_path, "cdfvd")
    assert sum(seen) == 8 and third["cdfvd"]["value"] != pytest.approx(first["cdfvd"]["value"])


@pytest.mark.slow
def test_fvd_fid_is_end_to_end_random_networks(tmp_path, clips16):
    """The fixed architectures through `evaluate`: FVD and FID of a set against itself ≈ 0, and
    growing with the noise of a perturbed copy; IS ≥ 1. (Slow on CPU: I3D at 224, Inception at 299.)"""
    from medsora.metrics.i3d import InceptionI3d
    from medsora.metrics.inception import fid_inception_v3

    weights = tmp_path / "w"
    weights.mkdir()
    torch.manual_seed(0)
    torch.save(_he_init_(InceptionI3d()).state_dict(), weights / "rgb_imagenet.pt")
    torch.save(_he_init_(fid_inception_v3()).state_dict(), weights / "pt_inception-2015-12-05-6726825d.pth")
    real = _write_set(tmp_path / "real", clips16[:3])
    out = {}
    for sigma in (0, 16, 64):
        fake = _write_set(tmp_path / f"fake{sigma}", clips16[:3], noise=sigma, seed=sigma)
        out[sigma] = _run(real, fake, weights, tmp_path, "fvd,fid,is")
    for m in ("fvd", "fid"):
        v = [out[s][m]["value"] for s in (0, 16, 64)]
        assert v[0] < 1e-4 * v[1] and v[1] < v[2], (m, v)
    assert out[0]["fid"]["n_real"] == 3 and out[0]["fid"]["n_fake"] == 3
    assert out[0]["is"]["value"] >= 1.0


def test_job_shares_and_restores_plan_order(monkeypatch):
    """Under torchrun process r takes clips r, r+N, ...; gathered per-clip values (IS probabilities, FC) go back in
    the plan's order, which IS's splits depend on. Three processes, 7 clips: shares of 3, 2 and 2."""
    from medsora.evaluate import _Job
    from medsora.metrics.frechet import FeatureStats

    plan = [f"clip{g}" for g in range(7)]
    jobs = [_Job(rank=r, world=3) for r in range(3)]
    shares = [job.share(plan) for job in jobs]
    assert shares == [["clip0", "clip3", "clip6"], ["clip1", "clip4"], ["clip2", "clip5"]]
    monkeypatch.setattr(_Job, "_gather", lambda self, obj: shares)            # what all_gather_object returns
    assert jobs[1].in_plan_order(shares[1]) == plan
    x = np.random.default_rng(0).normal(size=(7, 3))
    parts = [FeatureStats().update(x[r::3]) for r in range(3)]
    monkeypatch.setattr(_Job, "_gather", lambda self, obj: parts)
    merged = jobs[0].merge(parts[0])
    np.testing.assert_allclose(merged.mean, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(merged.cov, np.cov(x.T, bias=True), atol=1e-12)
