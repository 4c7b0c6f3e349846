import json
import shutil

import numpy as np
import pytest
import torch

from medsora.cli import main
from medsora.config import load_config
from medsora.data import index as index_mod
from medsora.data.check import check_dataset
from medsora.data.clips import ClipDataset, to_tensor
from medsora.data.index import build_index, find_sources
from medsora.data.video import probe, read_frames, write_video


def tiny_data(**kw):
    cfg = load_config("tiny", overrides=[f"data.{k}={v}" for k, v in kw.items()])
    return cfg.data


def test_read_frames_seeks_to_exact_frames(tmp_path):
    # frame t carries its index in the red channel, so any off-by-one in seeking shows
    frames = np.zeros((90, 48, 64, 3), np.uint8)
    frames[..., 0] = (np.arange(90) * 2)[:, None, None]
    write_video(tmp_path / "count.mp4", frames, fps=30)
    assert probe(tmp_path / "count.mp4").num_frames == 90
    got = read_frames(tmp_path / "count.mp4", [70, 3, 45, 45])
    assert got.shape == (4, 48, 64, 3)
    np.testing.assert_allclose(got[:, 20, 20, 0], [140, 6, 90, 90], atol=3)


@pytest.mark.parametrize("fixture", ["synth_mp4", "synth_frames"])
def test_clip_shape_range_determinism(fixture, request):
    root = request.getfixturevalue(fixture)
    cfg = tiny_data(num_frames=8, frame_stride=2)  # 17-frame span; 40-frame videos -> 2 clips each
    ds = ClipDataset(root, cfg, seed=3)
    n_src = 4 if fixture == "synth_mp4" else 3
    assert len(ds) == 2 * n_src
    item = ds[1]
    assert item["video"].shape == (9, 3, 64, 64)
    assert item["images"].shape == (cfg.num_images, 3, 64, 64)
    assert item["video"].min() >= -1 and item["video"].max() <= 1 and item["video"].std() > 0.05
    again = ClipDataset(root, cfg, seed=3)[1]
    assert torch.equal(item["video"], again["video"]) and torch.equal(item["images"], again["images"])
    # another epoch draws other images
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["images"], item["images"])


def test_images_come_from_other_videos(synth_mp4):
    cfg = tiny_data(num_frames=8, frame_stride=2, num_images=4, hflip="false")
    ds = ClipDataset(synth_mp4, cfg, seed=0)
    # all frames of every source, to identify where each joint image came from
    all_frames = [to_tensor(read_frames(synth_mp4 / s.path, range(s.num_frames)), cfg.size) for s in ds.sources]
    for i in range(len(ds)):
        item = ds[i]
        for img in item["images"]:
            dist = [(f - img).abs().flatten(1).mean(1).min().item() for f in all_frames]
            assert int(np.argmin(dist)) != item["source"]
            assert min(dist) < 1e-6


def test_flip(synth_mp4):
    cfg = tiny_data(num_frames=8, frame_stride=2)
    ds = ClipDataset(synth_mp4, cfg, seed=0)
    a, b = ds.load_clip(0, flip=False), ds.load_clip(0, flip=True)
    assert torch.equal(a["video"].flip(-1), b["video"])
    flips = {ds[i]["flip"] for i in range(len(ds))}
    assert flips == {True, False}
    cfg_off = tiny_data(num_frames=8, frame_stride=2, hflip="false")
    assert not any(ClipDataset(synth_mp4, cfg_off)[i]["flip"] for i in range(4))


def test_index_is_cached_and_reused(synth_mp4, tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(synth_mp4, root, ignore=shutil.ignore_patterns(".medsora-index.json"))
    first = build_index(root)
    assert (root / ".medsora-index.json").exists()
    calls = []
    real = index_mod.probe
    monkeypatch.setattr(index_mod, "probe", lambda p: calls.append(p) or real(p))
    assert build_index(root) == first and calls == []          # nothing decoded on a second open
    (root / "video_001.mp4").unlink()
    shutil.copy(root / "video_000.mp4", root / "video_009.mp4")
    again = build_index(root)
    assert [c.name for c in calls] == ["video_009.mp4"]        # only the new file is probed
    assert [e.path for e in again] == ["video_000.mp4", "video_002.mp4", "video_003.mp4", "video_009.mp4"]
    assert json.loads((root / ".medsora-index.json").read_text())["version"] == 1


def make_bad_corpus(root, good_src):
    root.mkdir()
    shutil.copy(good_src, root / "good.mp4")
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n" * 20)
    data = (good_src).read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "random.avi").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (root / "empty_folder").mkdir()
    write_video(root / "three_frames.mp4", np.full((3, 64, 64, 3), 128, np.uint8), fps=10)
    return ["zero.mp4", "text.mp4", "truncated.mp4", "random.avi", "empty_folder", "three_frames.mp4"]


def test_bad_corpus_is_reported_by_name(synth_mp4, tmp_path, capsys):
    bad = make_bad_corpus(tmp_path / "bad", synth_mp4 / "video_000.mp4")
    report = check_dataset(tmp_path / "bad", tiny_data(num_frames=8, frame_stride=2), progress=False)
    assert [e.path for e, _ in report.usable] == ["good.mp4"]
    named = {p for p, _ in report.skipped} | {p for p, _ in report.warnings}
    assert set(bad) <= named
    reasons = dict(report.skipped)
    assert reasons["zero.mp4"] == "zero bytes" and "empty folder" in reasons["empty_folder"]
    assert "too short" in reasons["three_frames.mp4"]
    # the CLI prints the same, no traceback, exit 0 because one file is usable
    rc = main(["data", "check", str(tmp_path / "bad"), "data.num_frames=8", "data.frame_stride=2"])
    out = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out.out + out.err
    for name in bad:
        assert name in out.out
    # nothing usable -> non-zero
    (tmp_path / "bad" / "good.mp4").unlink()
    assert main(["data", "check", str(tmp_path / "bad")]) == 1
    assert "nothing usable" in capsys.readouterr().out


def test_bad_file_during_training_is_skipped(synth_mp4, tmp_path, caplog):
    root = tmp_path / "d"
    shutil.copytree(synth_mp4, root)
    ds = ClipDataset(root, tiny_data(num_frames=8, frame_stride=2), seed=0, progress=False)
    victim = ds.sources[ds.clips[0][0]].path
    (root / victim).write_bytes(b"garbage" * 100)    # broken after indexing
    item = ds[0]                                       # does not raise
    assert ds.sources[item["source"]].path != victim and item["video"].shape[0] == 9
    assert victim in caplog.text
    for i in range(len(ds)):                           # a whole epoch still runs
        ds[i]


def test_empty_and_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_index(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable clip"):
        ClipDataset(tmp_path / "empty", tiny_data())


def test_find_sources_natural_order(tmp_path):
    for name in ["v10.mp4", "v2.mp4", "sub/v1.mkv"]:
        (tmp_path / name).parent.mkdir(exist_ok=True, parents=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "frames").mkdir()
    for i in [10, 2, 1]:
        (tmp_path / "frames" / f"img{i}.png").write_bytes(b"x")
    rel = [str(p.relative_to(tmp_path)) for p in find_sources(tmp_path)]
    assert rel == ["frames", "sub/v1.mkv", "v2.mp4", "v10.mp4"]
    from medsora.data.video import list_frame_images
    assert [p.name for p in list_frame_images(tmp_path / "frames")] == ["img1.png", "img2.png", "img10.png"]
