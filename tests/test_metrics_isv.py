"""The tables' IS (video IS with StyleGAN-V's C3D), the real-set protocol and what the results JSON records."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import entropy

from medsora.data.synth import make_video, video_seed
from medsora.data.video import write_frames
from medsora.evaluate import evaluate, plan_clips, table2_row
from medsora.metrics import weights as W
from medsora.metrics.c3d import video_inception_score


@pytest.fixture(autouse=True)
def _no_user_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDSORA_WEIGHTS", raising=False)
    monkeypatch.setattr(W, "DEFAULT_DIR", tmp_path / "no-default-weights")


class RandomC3D(nn.Module):
    """Stands in for c3d_ucf101.pt: uint8 (b, 3, 16, h, w) -> 101 softmax probabilities, resizing itself."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 101)

    def forward(self, x):
        x = x.float() / 255.0 - 0.5
        x = nn.functional.adaptive_avg_pool3d(torch.relu(self.conv(x)), (1, 4, 4)).flatten(1)
        return torch.softmax(self.fc(x) * 4, dim=1)


@pytest.fixture(scope="module")
def c3d_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("c3d")
    torch.jit.save(torch.jit.script(RandomC3D()), str(folder / "c3d_ucf101.pt"))
    return folder


def _write_set(root, n, seed=3, frames=16):
    for i in range(n):
        write_frames(root / f"v{i:02d}", make_video(video_seed(seed, i), frames=frames, size=32))
    return root


def _run(real, fake, weights, tmp_path, metrics, **kw):
    return evaluate(real, fake, num=kw.pop("num", 64), metrics=metrics, weights_dir=weights, device="cpu",
                    cache_dir=tmp_path / "cache", progress=False, real_stride=1, resolution=32, workers=0,
                    batch_size=4, **kw)


def test_video_is_formula_against_a_direct_computation():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(101, 0.3), size=40)
    mean, std = video_inception_score(probs, splits=10)
    shuffled = probs.copy()
    np.random.RandomState(42).shuffle(shuffled)                     # StyleGAN-V shuffles before splitting
    scores = []
    for k in range(10):
        part = shuffled[4 * k:4 * k + 4]
        marginal = part.mean(0)
        scores.append(np.exp(np.mean([entropy(p, marginal) for p in part])))   # scipy's KL(p || p(y))
    assert mean == pytest.approx(np.mean(scores), rel=1e-12) and std == pytest.approx(np.std(scores), rel=1e-9)
    assert video_inception_score(np.full((20, 101), 1 / 101))[0] == pytest.approx(1.0)   # one class distribution
    onehot = np.eye(101)[np.arange(100) % 101]
    assert video_inception_score(onehot, splits=1)[0] == pytest.approx(100, rel=1e-6)   # 100 distinct classes


def test_isv_through_evaluate_shapes_and_splits(c3d_dir, tmp_path):
    fake = _write_set(tmp_path / "fake", 20)
    res = _run(fake, fake, c3d_dir, tmp_path, ["isv"])
    r = res["isv"]
    assert r["n_fake"] == 20 and r["splits"] == 10 and "C3D" in r["network"] and r["weights"].endswith("c3d_ucf101.pt")
    detector = torch.jit.load(str(c3d_dir / "c3d_ucf101.pt"))          # by hand: the same clips, the same formula
    clips = [torch.from_numpy(np.stack([make_video(video_seed(3, i), frames=16, size=32)])) for i in range(20)]
    with torch.no_grad():
        probs = torch.cat([detector(c.permute(0, 4, 1, 2, 3).contiguous()) for c in clips]).double().numpy()
    assert probs.shape == (20, 101)
    assert (r["value"], r["std"]) == pytest.approx(video_inception_score(probs, 10), rel=1e-6)
    assert r["value"] > 1.0


def test_isv_not_computed_names_the_file(tmp_path):
    fake = _write_set(tmp_path / "fake", 2)
    res = _run(fake, fake, tmp_path / "none", tmp_path, ["isv"])
    assert res["isv"]["value"] is None and "c3d_ucf101.pt" in res["isv"]["reason"] and "dropbox" in res["isv"]["reason"]
    bad = tmp_path / "w"
    bad.mkdir()
    torch.save({"w": torch.zeros(2)}, bad / "c3d_ucf101.pt")             # a state dict, not StyleGAN-V's TorchScript
    res = _run(fake, fake, bad, tmp_path, ["isv"])
    assert res["isv"]["value"] is None and "not a TorchScript archive" in res["isv"]["reason"]


def test_real_set_filled_to_num_clips_is_distinct_and_seeded(tmp_path):
    real = _write_set(tmp_path / "real", 3, frames=40)
    plan, _ = plan_clips(real, 12, stride=1, random_start=True, seed=5, progress=False, fill=True)
    assert len(plan) == 12 and len({(p, i[0]) for p, i in plan}) == 12     # 12 distinct clips
    assert sorted({p.name for p, _ in plan}) == ["v00", "v01", "v02"]
    assert all(len(i) == 16 and i[-1] < 40 for _, i in plan)
    assert plan == plan_clips(real, 12, stride=1, random_start=True, seed=5, progress=False, fill=True)[0]
    per_video, _ = plan_clips(real, 12, stride=1, random_start=True, seed=5, progress=False)
    assert len(per_video) == 3 and per_video == plan[:3]                 # StyleGAN-V's set is the start of it


def test_results_json_records_the_protocol_and_a_table2_row(c3d_dir, tmp_path):
    real = _write_set(tmp_path / "real", 3, frames=40)
    fake = _write_set(tmp_path / "fake", 4, seed=9)
    out = tmp_path / "eval" / "eval.json"
    res = _run(real, fake, c3d_dir, tmp_path, ["fvd", "isv"], num=12, real_clips="fill", out=out)
    saved = json.loads(out.read_text())
    p = saved["protocol"]
    for key in ("num", "frames", "real_stride", "fake_stride", "resolution", "seed", "real_clips", "real_clip_choice",
                "n_real", "n_fake", "detectors", "medsora", "is_splits", "isv_shuffle_seed"):
        assert key in p, key
    assert (p["n_real"], p["n_fake"], p["real_clips"], p["frames"], p["resolution"]) == (0, 4, "fill", 16, 32)
    import hashlib

    want = hashlib.sha256((c3d_dir / "c3d_ucf101.pt").read_bytes()).hexdigest()
    assert p["detectors"]["c3d"] == {"file": str(c3d_dir / "c3d_ucf101.pt"), "sha256": want}
    md = out.with_suffix(".md").read_text()
    assert "| Method | FVD ↓ | CD-FVD ↓ | FID ↓ | IS ↑ | FC ↑ |" in md
    assert f"| this run | - | - | - | {res['isv']['value']:.2f} | - |" in md   # FVD not computed: no I3D here
    row = table2_row({"fvd": {"value": 1.0}, "isv": {"value": 2.5}, "fc": {"value": None}})
    assert row.splitlines()[-1] == "| this run | 1.00 | - | - | 2.50 | - |"
