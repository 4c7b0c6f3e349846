"""Damaged files and odd inputs give correct results or one `error:` line naming the file and the fix (issue 21):
a cache manifest or shard that is malformed, truncated or corrupt; a checkpoint meta.json of the wrong shape;
`eval` with the same files on both sides, too few clips for a covariance, a zero stride, skipped sources."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medsora import cache as cache_mod
from medsora import evaluate as ev
from medsora.cache import CacheError, LatentDataset, build_cache
from medsora.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, verify
from medsora.cli import main
from medsora.config import load_config, to_dict
from medsora.data.synth import make_video, video_seed
from medsora.data.video import write_frames
from medsora.errors import MedsoraError
from medsora.models.medsora import build_model
from medsora.train import train
from tiny_helpers import tiny_cfg

SHARD = "shard-00001.safetensors"


@pytest.fixture(scope="module")
def built(synth_mp4, vae, tmp_path_factory):
    """A complete tiny cache (8 clips in 3 shards of 3), never modified: tests damage copies of it."""
    out = tmp_path_factory.mktemp("cache")
    build_cache(tiny_cfg(synth_mp4), vae, out, shard_size=3, progress=False)
    return out


@pytest.fixture
def cache(built, tmp_path):
    shutil.copytree(built, tmp_path / "c")
    return tmp_path / "c"


def _one_error_line(argv, capsys, *words):
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in err, err
    for w in words:
        assert w in last, (w, last)
    return last


# ------------------------------------------------------------------------------------------------
# cache manifest

@pytest.mark.parametrize("damage", ["no shards", "shards a list", "not json", "not utf-8", "a list"])
def test_malformed_manifest_is_one_line_error(cache, synth_mp4, vae, damage, tmp_path, capsys):
    path = cache / "manifest.json"
    manifest = json.loads(path.read_text())
    if damage == "no shards":
        del manifest["shards"]
        path.write_text(json.dumps(manifest))
    elif damage == "shards a list":
        path.write_text(json.dumps({**manifest, "shards": ["shard-00000.safetensors"]}))
    elif damage == "not json":
        path.write_text(path.read_text()[:200])
    elif damage == "not utf-8":
        path.write_bytes(b"\xff\xfe" + path.read_bytes())
    else:
        path.write_text("[1, 2]")
    before = path.read_bytes()
    for action in (lambda: LatentDataset(cache), lambda: build_cache(tiny_cfg(synth_mp4), vae, cache, shard_size=3,
                                                                     progress=False)):
        with pytest.raises(CacheError) as e:
            action()
        msg = str(e.value)
        assert str(path) in msg and "medsora cache" in msg and "\n" not in msg, msg
    assert path.read_bytes() == before                     # refused, nothing written
    _one_error_line(["train", "--preset", "tiny", "--cache", str(cache), "--run-dir", str(tmp_path / "run")],
                    capsys, "manifest.json", "medsora cache")


# ------------------------------------------------------------------------------------------------
# cache shards

def _truncate(p: Path):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _flip_tail(p: Path):      # same size, valid header: only the checksum sees it
    data = bytearray(p.read_bytes())
    data[-64:] = bytes(255 - b for b in data[-64:])
    p.write_bytes(bytes(data))


def _garble_header(p: Path):  # same size, header unreadable
    data = bytearray(p.read_bytes())
    data[8:40] = b"#" * 32
    p.write_bytes(bytes(data))


DAMAGE = {"truncated": _truncate, "corrupt tail": _flip_tail, "corrupt header": _garble_header,
          "deleted": lambda p: p.unlink()}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_shard_is_reencoded_by_rerunning_cache(cache, built, synth_mp4, vae, damage, monkeypatch):
    DAMAGE[damage](cache / SHARD)
    real, calls = cache_mod._encode_clip, []
    monkeypatch.setattr(cache_mod, "_encode_clip", lambda ds, i, *a: calls.append(i) or real(ds, i, *a))
    build_cache(tiny_cfg(synth_mp4), vae, cache, shard_size=3, progress=False)
    assert calls == [3, 4, 5]                                    # that shard alone, encoded again
    a, b = load_file(cache / SHARD), load_file(built / SHARD)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ours, ref = (json.loads((c / "manifest.json").read_text()) for c in (cache, built))
    assert ours["files"][SHARD] == cache_mod._file_record(cache / SHARD)   # the new file's size and digest
    ours["files"][SHARD] = ref["files"][SHARD]    # (safetensors orders its header freely: other bytes, same data)
    assert ours == ref
    assert len(LatentDataset(cache)) == 8
    calls.clear()
    build_cache(tiny_cfg(synth_mp4), vae, cache, shard_size=3, progress=False)   # intact now: nothing redone
    assert calls == []


@pytest.mark.parametrize("damage", ["truncated", "corrupt header", "deleted"])
def test_training_on_a_damaged_shard_names_it(cache, synth_mp4, damage, tmp_path):
    DAMAGE[damage](cache / SHARD)
    with pytest.raises(CacheError) as e:
        LatentDataset(cache)
    msg = str(e.value)
    assert SHARD in msg and "re-run the same `medsora cache` command" in msg and "\n" not in msg, msg
    with pytest.raises(CacheError, match=SHARD):
        train(tiny_cfg(synth_mp4, "train.max_steps=1"), cache, tmp_path / "run", progress=False)


def test_manifest_records_size_and_digest(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert set(manifest["files"]) == set(manifest["shards"])
    for name, rec in manifest["files"].items():
        assert rec["size"] == (built / name).stat().st_size and len(rec["sha256"]) == 64


# ------------------------------------------------------------------------------------------------
# checkpoint meta.json

@pytest.fixture
def ckpt(tmp_path):
    model = build_model("tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return save_checkpoint(tmp_path / "run", 3, model, None, opt, to_dict(load_config("tiny")), epoch=1,
                           extra={"batch_in_epoch": 0, "skipped": 0})


META_EDITS = {
    "step a string": lambda m: {**m, "step": "3"},
    "step negative": lambda m: {**m, "step": -1},
    "step a bool": lambda m: {**m, "step": True},
    "epoch missing": lambda m: {k: v for k, v in m.items() if k != "epoch"},
    "epoch a float": lambda m: {**m, "epoch": 1.5},
    "extra missing": lambda m: {k: v for k, v in m.items() if k != "extra"},
    "extra a list": lambda m: {**m, "extra": [1]},
    "param_groups missing": lambda m: {k: v for k, v in m.items() if k != "param_groups"},
    "sha256 a list": lambda m: {**m, "sha256": list(m["sha256"])},
    "sha256 digest a number": lambda m: {**m, "sha256": {**m["sha256"], "model.safetensors": 7}},
    "sha256 a foreign file": lambda m: {**m, "sha256": {**m["sha256"], "../../etc/passwd": "00"}},
    "config a string": lambda m: {**m, "config": "tiny"},
}


@pytest.mark.parametrize("edit", list(META_EDITS))
def test_checkpoint_meta_of_wrong_shape_is_one_line_error(ckpt, edit, tmp_path, capsys):
    path = ckpt / "meta.json"
    path.write_text(json.dumps(META_EDITS[edit](json.loads(path.read_text()))))
    with pytest.raises(CheckpointError) as e:
        verify(ckpt)
    assert "meta.json" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt, build_model("tiny"))
    _one_error_line(["sample", str(ckpt), "--out", str(tmp_path / "s")], capsys, "meta.json")


def test_checkpoint_meta_not_an_object(ckpt):
    (ckpt / "meta.json").write_text('"step-3"')
    with pytest.raises(CheckpointError, match=r"meta.json holds a JSON str, not an object"):
        verify(ckpt)


# ------------------------------------------------------------------------------------------------
# eval

class _Features:
    """A stand-in feature extractor: per clip, the mean of each channel over `parts` blocks of frames."""

    def __init__(self, parts: int, weights: Path):
        self.parts, self.weights = parts, weights

    def __call__(self, videos):                       # (b, 16, r, r, 3) uint8 -> (b, 3 * parts)
        x = videos.float().mean((2, 3))               # (b, 16, 3)
        return torch.stack([c.mean(1) for c in x.chunk(self.parts, 1)], 1).flatten(1)


@pytest.fixture
def features(monkeypatch, tmp_path):
    dims = {"parts": 1}
    (tmp_path / "w.pt").write_bytes(b"stand-in")
    monkeypatch.setattr(ev, "load_extractor", lambda net, w=None, d="cpu": _Features(dims["parts"], tmp_path / "w.pt"))
    return dims


def _write_set(root, n, seed=3, noise=0, frames=16):
    rng = np.random.default_rng(seed)
    for i in range(n):
        v = make_video(video_seed(seed, i), frames=frames, size=32).astype(np.float64)
        v = v + rng.normal(0, noise, v.shape) if noise else v
        write_frames(root / f"v{i:02d}", np.clip(np.round(v), 0, 255).astype(np.uint8))
    return root


def _eval(real, fake, tmp_path, **kw):
    opts = dict(num=64, metrics="cdfvd", device="cpu", cache_dir=None, progress=False, real_stride=1,
                resolution=32, workers=0, batch_size=4, out=tmp_path / "eval.json")
    return ev.evaluate(real, fake, **{**opts, **kw})


def test_eval_warns_when_real_and_fake_are_the_same_files(features, tmp_path):
    real = _write_set(tmp_path / "real", 6)
    res = _eval(real, real, tmp_path)
    assert res["cdfvd"]["value"] == pytest.approx(0, abs=1e-6)
    assert any("same folder" in w for w in res["cdfvd"]["warnings"])
    report = json.loads((tmp_path / "eval.json").read_text())
    assert any("same folder" in w for w in report["warnings"])
    assert "warning: " in ev.format_table(res)
    shutil.copytree(real, tmp_path / "copy")                       # another folder, the same bytes
    res = _eval(real, tmp_path / "copy", tmp_path)
    assert any("6 of 6 generated sources are byte-identical" in w for w in res["cdfvd"]["warnings"])
    fake = _write_set(tmp_path / "fake", 6, noise=8, seed=3)       # generated (here: perturbed): no warning
    res = _eval(real, fake, tmp_path)
    assert "warnings" not in res["cdfvd"] and json.loads((tmp_path / "eval.json").read_text())["warnings"] == []
    assert "warning" not in ev.format_table(res)


def test_eval_warns_when_a_set_has_fewer_clips_than_the_feature_dimension(features, tmp_path):
    features["parts"] = 4                                          # 12-dimensional features
    real = _write_set(tmp_path / "real", 14, seed=1)
    fake = _write_set(tmp_path / "fake", 5, seed=2)
    res = _eval(real, fake, tmp_path)
    (w,) = res["cdfvd"]["warnings"]
    assert "generated set gives 5 clips" in w and "12 + 1" in w and "at least 13 generated clips" in w, w
    assert "warning: " + w in ev.format_table(res)
    assert json.loads((tmp_path / "eval.json").read_text())["warnings"] == [w]


@pytest.mark.parametrize("stride", [0, -2])
def test_eval_refuses_a_non_positive_stride_at_once(features, tmp_path, monkeypatch, capsys, stride):
    real = _write_set(tmp_path / "real", 2)
    monkeypatch.setattr(ev, "plan_clips", lambda *a, **k: pytest.fail("planned clips before refusing"))
    with pytest.raises(MedsoraError, match="--real-stride"):
        _eval(real, real, tmp_path, real_stride=stride)
    _one_error_line(["eval", "--real", str(real), "--fake", str(real), "--real-stride", str(stride)], capsys,
                    "--real-stride", ">= 1")


def test_eval_names_each_skipped_source(features, tmp_path):
    real = _write_set(tmp_path / "real", 3)
    fake = _write_set(tmp_path / "fake", 3, seed=5)
    write_frames(fake / "short", make_video(1, frames=5, size=32))
    res = _eval(real, fake, tmp_path)
    assert res["cdfvd"]["n_fake"] == 3
    skipped = json.loads((tmp_path / "eval.json").read_text())["skipped"]
    assert [p for p, _ in skipped["fake"]] == ["short"] and "5 frames" in skipped["fake"][0][1]
    assert skipped["real"] == []
    only_short = tmp_path / "only_short"
    write_frames(only_short / "tiny", make_video(1, frames=5, size=32))
    with pytest.raises(MedsoraError) as e:
        _eval(real, only_short, tmp_path)
    assert "1 sources skipped: tiny (5 frames" in str(e.value), str(e.value)
    with pytest.raises(MedsoraError) as e:
        _eval(only_short, fake, tmp_path)
    assert "no real clip" in str(e.value) and "tiny (5 frames" in str(e.value), str(e.value)
