"""README / docs claims about data and metric inputs, on files each test writes itself (issue 22).

Every video of the other tests is already square at the training size, so a crop from the wrong side or a
resize by the long side went unseen; here the videos are 96x160 with known bands, frames carry their index as a
colour, and an indexed file is rewritten with another length.
"""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsora.config import load_config
from medsora.data import index as index_mod
from medsora.data.clips import ClipDataset, to_tensor
from medsora.data.index import build_index
from medsora.data.video import write_frames, write_video

H, W = 96, 160
BAND = 32                               # five 32-px column bands; the centre 96x96 square is bands 1..3
BAND_RED = [25, 75, 125, 175, 225]      # band k: red = 25 + 50 k
TOP_BLUE, BOTTOM_BLUE = 0, 200          # rows 0..47: blue 0, rows 48..95: blue 200


def _data(**kw):
    return load_config("tiny", overrides=[f"data.{k}={v}" for k, v in kw.items()]).data


def _banded(frames=9):
    img = np.full((frames, H, W, 3), 100, np.uint8)
    for k, red in enumerate(BAND_RED):
        img[:, :, k * BAND:(k + 1) * BAND, 0] = red
    img[:, : H // 2, :, 2] = TOP_BLUE
    img[:, H // 2:, :, 2] = BOTTOM_BLUE
    return img


def _grey(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] (..., 3, S, S) -> grey levels (..., 3, S, S)."""
    return ((x + 1) * 127.5).numpy()


def _check_centre_square(frame, tol):
    """frame (3, 32, 32) grey levels of the 96x160 band video read at size 32: the short side (96) resized to 32
    (3x), the long side centre-cropped (columns 32..127 of 160 = bands 1, 2, 3, each ~10.7 px wide), all rows kept
    (blue 0 above row 16, 200 below)."""
    red, blue = frame[0], frame[2]
    cols = red.mean(0)                                        # red per output column
    np.testing.assert_allclose(cols[2:9], BAND_RED[1], atol=tol)     # band 1 (not band 0: a crop from the left)
    np.testing.assert_allclose(cols[13:20], BAND_RED[2], atol=tol)   # band 2 in the middle
    np.testing.assert_allclose(cols[24:31], BAND_RED[3], atol=tol)   # band 3 (not band 4: a crop from the right)
    # bands 0 and 4 nowhere (a squash of the whole width shows both); column 0 starts at source column 30 when the
    # short side is read at 32 (width 160 / 3 = 53.3 -> 53, crop from (53 - 32) // 2 = 10): a little of band 0
    assert cols[1:].min() > BAND_RED[0] + 40 and cols.min() > BAND_RED[0] + 10 and cols.max() < BAND_RED[4] - 40
    rows = blue.mean(1)
    np.testing.assert_allclose(rows[:14], TOP_BLUE, atol=tol)        # the top half of the frame is the top half
    np.testing.assert_allclose(rows[18:], BOTTOM_BLUE, atol=tol)     # (a crop of rows, or a resize by the long
    assert 0.3 * BOTTOM_BLUE < rows[15:17].mean() < 0.7 * BOTTOM_BLUE  # side, moves the edge off row 16)


def test_to_tensor_resizes_the_short_side_and_crops_the_centre():
    x = to_tensor(_banded(1), 32)
    assert x.shape == (1, 3, 32, 32)
    _check_centre_square(_grey(x[0]), tol=2)
    portrait = to_tensor(np.ascontiguousarray(_banded(1).transpose(0, 2, 1, 3)), 32)   # 160x96: same, transposed
    np.testing.assert_allclose(_grey(portrait[0]), _grey(x[0]).transpose(0, 2, 1), atol=1e-3)


def _one_video_dataset(root, name, frames, kind, frame_stride):
    """A `ClipDataset` (4-frame clips at size 32, no images, no flips) over one video written as PNG frames or a
    lossless mp4."""
    if kind == "frames":
        write_frames(root / name, frames)
    else:
        write_video(root / f"{name}.mp4", frames, fps=8, crf=0)
    return ClipDataset(root, _data(num_frames=4, frame_stride=frame_stride, size=32, num_images=0, hflip="false"),
                       progress=False)


@pytest.mark.parametrize("kind", ["frames", "mp4"])
def test_dataset_reads_a_non_square_video_as_its_centre_square(tmp_path, kind):
    """Through `ClipDataset` (frames are downscaled while decoding, then cropped): 96x160 at data.size=32."""
    ds = _one_video_dataset(tmp_path / "data", "bands", _banded(), kind, frame_stride=2)
    video = ds.load_clip(0, flip=False, offset=0)["video"]
    assert video.shape == (5, 3, 32, 32)
    for frame in video:
        _check_centre_square(_grey(frame), tol=3 if kind == "frames" else 8)


def _counting(frames=30):
    """Frame t: red = 8 t (its index as a colour)."""
    img = np.zeros((frames, 32, 48, 3), np.uint8)
    img[..., 0] = (8 * np.arange(frames))[:, None, None]
    img[..., 1] = 60
    return img


@pytest.mark.parametrize("kind", ["frames", "mp4"])
def test_frame_stride_takes_every_kth_frame(tmp_path, kind):
    """data.num_frames=4, frame_stride=3: a clip is frames s, s+3, ..., s+12 (5 frames, the 5th for the flow);
    30 frames hold the windows starting at 0 and 13."""
    ds = _one_video_dataset(tmp_path / "data", "count", _counting(), kind, frame_stride=3)
    assert ds.clips == [(0, 0), (0, 13)]
    for index in range(2):
        for epoch in range(3):
            ds.set_epoch(epoch)
            item = ds.load_clip(index)
            start = item["start"]
            assert 13 * index <= start < 13 * index + 13 and start + 12 < 30
            red = _grey(item["video"])[:, 0].mean(axis=(1, 2))
            np.testing.assert_allclose(red, 8 * (start + 3 * np.arange(5)), atol=3)
    item = ds.load_clip(1, offset=0, offsets=1)
    np.testing.assert_allclose(_grey(item["video"])[:, 0].mean(axis=(1, 2)), 8 * np.array([13, 16, 19, 22, 25]),
                               atol=3)


def test_index_notices_a_rewritten_file_and_a_changed_folder(tmp_path, monkeypatch):
    """The index is refreshed for a *changed* file (same name, other length) and a frame folder that gained frames;
    unchanged sources are not probed again."""
    root = tmp_path / "data"
    write_video(root / "a.mp4", _counting(30), fps=8)
    write_video(root / "b.mp4", _counting(30), fps=8)
    write_frames(root / "f", _counting(20))
    first = {e.path: e.num_frames for e in build_index(root, progress=False)}
    assert first == {"a.mp4": 30, "b.mp4": 30, "f": 20}
    probed = []
    real = index_mod.probe
    monkeypatch.setattr(index_mod, "probe", lambda p: probed.append(p.name) or real(p))
    stat = (root / "a.mp4").stat()
    write_video(root / "a.mp4", _counting(18), fps=8)                    # rewritten in place: 18 frames
    os.utime(root / "a.mp4", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    write_frames(root / "f", _counting(26))                               # 6 frames more
    os.utime(root / "f", ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    again = {e.path: e.num_frames for e in build_index(root, progress=False)}
    assert again == {"a.mp4": 18, "b.mp4": 30, "f": 26}
    assert sorted(probed) == ["a.mp4", "f"]
    ds = ClipDataset(root, _data(num_frames=4, frame_stride=3, size=32, num_images=0), progress=False)
    assert {ds.sources[s].path: ds.sources[s].num_frames for s, _ in ds.clips} == again   # what training sees


def test_index_dir_holds_the_index_and_leaves_the_data_folder_alone(tmp_path, monkeypatch):
    root, other, idx = tmp_path / "data", tmp_path / "other", tmp_path / "idx"
    write_video(root / "a.mp4", _counting(30), fps=8)
    write_video(other / "a.mp4", _counting(20), fps=8)
    cfg = _data(num_frames=4, frame_stride=3, size=32, num_images=0, index_dir=str(idx))
    assert cfg.index_dir == str(idx)
    ClipDataset(root, cfg, progress=False)
    ClipDataset(other, cfg, progress=False)
    assert not (root / ".medsora-index.json").exists() and not (other / ".medsora-index.json").exists()
    files = sorted(idx.glob("index-*.json"))
    assert len(files) == 2                                              # one per dataset root
    assert sorted(json.loads(f.read_text())["entries"][0]["num_frames"] for f in files) == [20, 30]
    probed = []
    monkeypatch.setattr(index_mod, "probe", lambda p: probed.append(p) or pytest.fail("probed again"))
    assert len(ClipDataset(root, cfg, progress=False)) == 2 and probed == []   # read back from index_dir


def test_metric_weights_are_looked_for_in_dir_then_env_then_cache(tmp_path, monkeypatch):
    """docs/metrics.md: `--weights DIR`, then $MEDSORA_WEIGHTS, then ~/.cache/medsora/weights; in one folder the
    first accepted name (the published protocol's file) wins."""
    from medsora.metrics import weights as W

    d, env, cache = (tmp_path / n for n in ("dir", "env", "cache"))
    for folder in (d, env, cache):
        folder.mkdir()
    monkeypatch.setattr(W, "DEFAULT_DIR", cache)
    monkeypatch.setenv("MEDSORA_WEIGHTS", str(env))
    (cache / "i3d_torchscript.pt").write_bytes(b"c")
    assert W.find_weights("i3d", d) == cache / "i3d_torchscript.pt"
    (env / "rgb_imagenet.pt").write_bytes(b"e")
    assert W.find_weights("i3d", d) == env / "rgb_imagenet.pt"            # env before the cache, any name
    (d / "rgb_imagenet.pt").write_bytes(b"d")
    assert W.find_weights("i3d", d) == d / "rgb_imagenet.pt"              # the given folder before the env
    (d / "i3d_torchscript.pt").write_bytes(b"d")
    assert W.find_weights("i3d", d) == d / "i3d_torchscript.pt"           # the preferred name within a folder
    assert W.find_weights("i3d") == env / "rgb_imagenet.pt"               # no folder given: the env first
    monkeypatch.delenv("MEDSORA_WEIGHTS")
    assert W.find_weights("i3d") == cache / "i3d_torchscript.pt"
    with pytest.raises(W.MissingWeights, match="inception-2015-12-05"):
        W.find_weights("inception", d)


class _StubCLIP(torch.nn.Module):
    """Records the pixel values CLIPEmbeddings feeds to the image tower."""

    def __init__(self, size):
        super().__init__()
        self.config = type("C", (), {"image_size": size})()
        self.seen = None

    def forward(self, pixel_values):
        self.seen = pixel_values
        return type("O", (), {"image_embeds": pixel_values.flatten(1)[:, :8] + 1.0})()


def test_fc_frames_are_bicubic_resized_on_the_short_side_then_centre_cropped():
    """docs/metrics.md FC: bicubic resize of the short side to the CLIP size, centre crop, CLIP mean/std. The
    reference: torch's bicubic (antialiased) interpolation to 32x53, rounded to uint8, columns 10..41."""
    from medsora.metrics.clip_fc import CLIP_MEAN, CLIP_STD, CLIPEmbeddings

    rng = np.random.default_rng(0)
    frames = _banded(2)
    frames[..., 1] = rng.integers(0, 256, frames.shape[:3])               # texture: bicubic != bilinear
    stub = _StubCLIP(32)
    CLIPEmbeddings(stub)(torch.from_numpy(frames))
    got = stub.seen.double() * torch.tensor(CLIP_STD, dtype=torch.float64)[:, None, None] \
        + torch.tensor(CLIP_MEAN, dtype=torch.float64)[:, None, None]
    got = got * 255                                                      # back to grey levels
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double()
    ref = F.interpolate(x, size=(32, round(160 * 32 / 96)), mode="bicubic", antialias=True, align_corners=False)
    ref = ref.round().clamp(0, 255)[..., :, 10:42]                       # (53 - 32) // 2 = 10
    assert got.shape == ref.shape == (2, 3, 32, 32)
    assert (got - ref).abs().max() < 1.01
    bilinear = F.interpolate(x, size=(32, 53), mode="bilinear", antialias=True).round()[..., 10:42]
    assert (bilinear - ref).abs().max() > 5                              # the check can tell the two apart


def test_lpips_of_the_vae_loss_is_vgg_with_its_trunk_and_the_packages_calibration(tmp_path):
    """Eq. 16's LPIPS is the VGG16 variant (README: "LPIPS (VGG)"): the compensation config asks for "vgg", the
    model is lpips' vgg16 trunk (13 convs, taps of 64/128/256/512/512 channels) with the package's VGG linear layers,
    and the trunk comes from torchvision's `features.<i>` keys of the given file (no download here: a random trunk)."""
    import lpips

    from medsora.vae.perceptual import load_lpips
    from medsora.vae.train import CompensationConfig

    assert CompensationConfig().lpips_net == "vgg"
    probe = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)
    g = torch.Generator().manual_seed(0)
    trunk = {"features." + k.split(".", 1)[1]: torch.randn(v.shape, generator=g)
             for k, v in probe.net.state_dict().items()}
    torch.save(trunk, tmp_path / "vgg16.pth")
    model = load_lpips("vgg", tmp_path / "vgg16.pth")
    assert type(model.net).__name__ == "vgg16"
    convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and convs[0].in_channels == 3
    assert [lin.model[-1].in_channels for lin in model.lins] == [64, 128, 256, 512, 512]
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, trunk["features." + k.split(".", 1)[1]]), k
    calib = torch.load(os.path.join(os.path.dirname(lpips.__file__), "weights/v0.1/vgg.pth"), map_location="cpu",
                       weights_only=True)
    for k, v in calib.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert not any(p.requires_grad for p in model.parameters())


def test_real_statistics_cache_key_changes_with_protocol_and_weights(tmp_path, monkeypatch):
    """docs/metrics.md: the cached real statistics are keyed by the real files, the clip plan, the protocol and the
    network's weights (name, size, mtime): the same call reads the cache, any of these changed computes again."""
    import medsora.evaluate as E

    folder = write_frames(tmp_path / "real" / "v0", _counting(16))
    weights = tmp_path / "w" / "rgb_imagenet.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"0" * 100)
    calls = []

    class Ext:
        def __call__(self, videos):
            calls.append(len(videos))
            return videos.float().flatten(1)[:, :4]
    ext = Ext()
    ext.weights = weights
    plan = [(folder, list(range(16)))]

    def stats(protocol, plan=plan):
        calls.clear()
        E._real_stats(["fvd"], {"i3d": ext}, plan, 32, 4, 0, tmp_path / "cache", False, protocol=protocol)
        return len(calls)
    proto = [2048, 1, 32, 0, "per-video"]
    assert stats(proto) == 1                      # computed
    assert stats(proto) == 0                      # from the cache
    assert stats([2048, 3, 32, 0, "per-video"]) == 1        # another real stride
    assert stats([2048, 1, 32, 1, "per-video"]) == 1        # another seed
    assert stats([2048, 1, 32, 0, "fill"]) == 1             # another real-clip protocol
    assert stats(proto) == 0
    weights.write_bytes(b"1" * 101)                           # other weights (size)
    assert stats(proto) == 1 and stats(proto) == 0
    st = weights.stat()
    weights.write_bytes(b"2" * 101)                           # same size, new mtime
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert stats(proto) == 1
    assert stats(proto, plan=[(folder, list(range(1, 16)) + [15])]) == 1   # another clip plan
    assert len(list((tmp_path / "cache").glob("real-fvd-*.npz"))) == 7
