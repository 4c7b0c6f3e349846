"""Odd inputs a lab's real data brings, for the data reader (`medsora data check` and what `cache` reads).

`make_odd_corpus` writes one of each (as `make_bad_corpus` in test_data.py does for broken files); each test below
takes one case: the file is read correctly, or it is left out and listed by `data check` with its reason; never a
traceback, and never one file stopping the whole dataset.
"""
import os
import shutil
import struct
import zlib
from fractions import Fraction

import numpy as np
import pytest
import torch

from medsora.cli import main
from medsora.config import load_config
from medsora.data.check import check_dataset
from medsora.data.clips import ClipDataset, to_tensor
from medsora.data.index import build_index
from medsora.data.video import probe, read_frames

av = pytest.importorskip("av")

H, W = 48, 64


def tiny_data(**kw):
    return load_config("tiny", overrides=[f"data.{k}={v}" for k, v in kw.items()]).data


CFG = dict(num_frames=8, frame_stride=2)   # a clip spans 17 frames


# ----------------------------------------------------------------------------------------------
# generators of odd files

def counting_frames(n, h=H, w=W):
    """uint8 (n, h, w, 3): frame k carries k in its red channel (4 levels a frame), a white block top-left."""
    f = np.zeros((n, h, w, 3), np.uint8)
    f[..., 0] = (np.arange(n) * 4 % 256)[:, None, None]
    f[..., 2] = 60
    f[:, : h // 3, : w // 3] = 255
    return f


def _encoder(container, rate):
    for codec in ("libx264", "mpeg4"):
        try:
            return container.add_stream(codec, rate=rate)
        except Exception:  # noqa: BLE001 - ffmpeg build without x264
            continue
    raise RuntimeError("no video encoder")


def write_pts_video(path, frames, pts_ms, fmt=None, gop=8, rotation=None, hflip=False):
    """Frames with the given presentation times (ms): irregular times make a variable-frame-rate file,
    `fmt="h264"` a raw H.264 stream without timestamps or index (whatever the file is named)."""
    container = av.open(str(path), "w", format=fmt)
    stream = _encoder(container, 25)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = Fraction(1, 1000)
    stream.codec_context.gop_size = gop
    if rotation is not None or hflip:
        stream.set_display_rotation(rotation or 0, hflip=hflip)
    for img, t in zip(frames, pts_ms):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame.pts, frame.time_base = int(t), Fraction(1, 1000)
        for pkt in stream.encode(frame):
            container.mux(pkt)
    for pkt in stream.encode():
        container.mux(pkt)
    container.close()
    return path


def write_two_streams(path, thumb, main_frames):
    """An mp4 whose first video stream is a short thumbnail track, the second the video."""
    container = av.open(str(path), "w")
    streams = []
    for frames in (thumb, main_frames):
        s = _encoder(container, 10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        streams.append(s)
    for s, frames in zip(streams, (thumb, main_frames)):
        for img in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(pkt)
        for pkt in s.encode():
            container.mux(pkt)
    container.close()
    return path


def write_png16(path, arr):
    """A 16-bit PNG (grey (H, W) or RGB (H, W, 3) uint16), written by hand: PIL cannot write 16-bit RGB."""
    h, w = arr.shape[:2]
    colour = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def write_png_frames(folder, frames, sizes=None):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(frames):
        im = Image.fromarray(img)
        if sizes and sizes[i] != (img.shape[1], img.shape[0]):
            im = im.resize(sizes[i])
        im.save(folder / f"{i:05d}.png")
    return folder


def irregular_ms(n, seed=0):
    """Presentation times of a variable-frame-rate recording: intervals of 7 to 100 ms."""
    gaps = np.random.default_rng(seed).choice([7, 20, 33, 50, 100], n - 1)
    return np.concatenate([[0], np.cumsum(gaps)])


def decode_all(path):
    """Every frame of the first video stream, in order, by plain sequential decoding (the reference)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def make_odd_corpus(root):
    """One of each odd input; returns {relative path: "usable" | "skipped"} (what `data check` must say)."""
    root.mkdir()
    frames = counting_frames(40)
    expect = {}
    # 1. a stray image beside videos; a lone image in a folder of its own
    (root / "cam").mkdir()
    write_pts_video(root / "cam" / "a.mp4", frames, np.arange(40) * 40)
    write_pts_video(root / "cam" / "b.mp4", frames, np.arange(40) * 40)
    write_png_frames(root / "cam", frames[:1])
    (root / "cam" / "00000.png").rename(root / "cam" / "preview.png")
    (root / "lone").mkdir()
    shutil.copy(root / "cam" / "preview.png", root / "lone" / "cover.png")
    expect.update({"cam/a.mp4": "usable", "cam/b.mp4": "usable", "cam/preview.png": "skipped",
                   "lone/cover.png": "skipped"})
    # 2. a dangling and a looping symlink, a folder link that leads back up
    os.symlink("nowhere.mp4", root / "dangling.mp4")
    os.symlink("loop.mp4", root / "loop.mp4")
    os.symlink("..", root / "cam" / "up")
    expect.update({"dangling.mp4": "skipped", "loop.mp4": "skipped", "cam/up": "skipped"})
    # 3. a frame folder of mixed sizes
    write_png_frames(root / "mixed", frames, sizes=[(W, H) if i % 3 else (80, 60) for i in range(40)])
    expect["mixed"] = "usable"
    # 4. 16-bit and palette frames
    (root / "deep").mkdir()
    for i in range(20):
        write_png16(root / "deep" / f"{i:03d}.png", (np.arange(H * W).reshape(H, W) * 20 + i * 700).astype(np.uint16))
    expect["deep"] = "usable"
    # 5. a portrait phone video (stored sideways with rotation metadata)
    write_pts_video(root / "portrait.mp4", np.rot90(counting_frames(40, W, H), 1, axes=(1, 2)),
                    np.arange(40) * 40, rotation=-90)
    expect["portrait.mp4"] = "usable"
    # 6. variable frame rate, and a raw H.264 stream named .mp4
    write_pts_video(root / "vfr.mp4", frames, irregular_ms(40))
    write_pts_video(root / "raw.mp4", frames, np.arange(40) * 40, fmt="h264")
    expect.update({"vfr.mp4": "usable", "raw.mp4": "usable"})
    # 7. a first frame at 7 s, a thumbnail track before the video, transport streams and flv
    write_pts_video(root / "late.mkv", frames, 7000 + np.arange(40) * 40)
    write_two_streams(root / "thumb.mp4", counting_frames(5)[:, ::-1].copy(), frames)
    write_pts_video(root / "cam.ts", frames, np.arange(40) * 40, fmt="mpegts")
    write_pts_video(root / "CAM.MTS", frames, np.arange(40) * 40, fmt="mpegts")
    write_pts_video(root / "cam.flv", frames, np.arange(40) * 40, fmt="flv")
    expect.update({"late.mkv": "usable", "thumb.mp4": "usable", "cam.ts": "usable", "CAM.MTS": "usable",
                   "cam.flv": "usable"})
    (root / "notes.txt").write_text("recorded 2024-01-05\n")
    return expect


# ----------------------------------------------------------------------------------------------
# the corpus as a whole

def test_odd_corpus_check_lists_everything(tmp_path, capsys):
    expect = make_odd_corpus(tmp_path / "odd")
    report = check_dataset(tmp_path / "odd", tiny_data(**CFG), progress=False)
    usable = {e.path for e, _ in report.usable}
    skipped = dict(report.skipped)
    for path, what in expect.items():
        assert path in (usable if what == "usable" else skipped), (path, what, usable, skipped)
    assert report.others == ["notes.txt"]
    rc = main(["data", "check", str(tmp_path / "odd"), "data.num_frames=8", "data.frame_stride=2"])
    out = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out.out + out.err
    for path in expect:
        assert path in out.out
    assert "notes.txt" in out.out
    # what the check counts, the dataset `cache` builds on reads: every clip of every usable source
    ds = ClipDataset(tmp_path / "odd", tiny_data(**CFG, num_images=4), seed=0, progress=False)
    assert {s.path for s in ds.sources} == usable
    for i in range(len(ds)):
        for o in range(2):
            item = ds.load_clip(i, flip=False, offset=o, offsets=2, images="own" if o == 0 else None)
            assert item["video"].shape == (9, 3, 64, 64)


# ----------------------------------------------------------------------------------------------
# one test per case

def test_stray_image_beside_videos_does_not_hide_them(tmp_path):
    root = tmp_path / "d"
    (root / "videos").mkdir(parents=True)
    write_pts_video(root / "videos" / "a.mp4", counting_frames(40), np.arange(40) * 40)
    shutil.copy(root / "videos" / "a.mp4", root / "videos" / "b.mp4")
    write_png_frames(root / "videos", counting_frames(1))
    (root / "videos" / "00000.png").rename(root / "videos" / "preview.png")
    write_png_frames(root / "one", counting_frames(1))
    # stray images at the top of a tree of videos do not make it a frame folder either
    write_png_frames(root, counting_frames(2))
    report = check_dataset(root, tiny_data(**CFG), progress=False)
    assert [e.path for e, _ in report.usable] == ["videos/a.mp4", "videos/b.mp4"]
    reasons = dict(report.skipped)
    assert "beside videos" in reasons["videos/preview.png"]
    assert "single image" in reasons["one/00000.png"]
    assert "00000.png" in reasons and "00001.png" in reasons


def test_broken_symlinks_are_listed_and_the_rest_indexed(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    write_pts_video(root / "good.mp4", counting_frames(40), np.arange(40) * 40)
    os.symlink("gone.mp4", root / "dangling.mp4")
    os.symlink("loop.mp4", root / "loop.mp4")
    os.symlink(".", root / "self")                      # a folder link back to its own folder
    (root / "frames").mkdir()
    write_png_frames(root / "frames", counting_frames(20))
    os.symlink("missing.png", root / "frames" / "99999.png")   # a dangling frame inside a frame folder
    report = check_dataset(root, tiny_data(**CFG), progress=False)
    reasons = dict(report.skipped)
    assert "dangling symlink" in reasons["dangling.mp4"] and "gone.mp4" in reasons["dangling.mp4"]
    assert "loop" in reasons["loop.mp4"] and "loop" in reasons["self"]
    assert [e.path for e, _ in report.usable] == ["frames", "good.mp4"]
    assert "broken symlinks: 99999.png" in dict(report.warnings)["frames"]
    # the index `cache` reads is the same, and its clips read
    ds = ClipDataset(root, tiny_data(**CFG), progress=False)
    assert [s.path for s in ds.sources] == ["frames", "good.mp4"]
    ds.load_clip(0, offset=0)


def test_frame_folder_of_mixed_sizes_is_resized_to_the_first(tmp_path):
    frames = counting_frames(20)
    sizes = [(W, H) if i % 4 else (96, 40) for i in range(20)]
    sizes[0] = (W, H)
    folder = write_png_frames(tmp_path / "d" / "mixed", frames, sizes=sizes)
    got = read_frames(folder, list(range(20)))
    assert got.shape == (20, H, W, 3)
    np.testing.assert_allclose(got[:, 30, 50, 0], frames[:, 30, 50, 0], atol=2)   # each frame is its own
    assert read_frames(folder, [4, 8], short_side=24).shape == (2, 24, 32, 3)
    ds = ClipDataset(tmp_path / "d", tiny_data(**CFG), progress=False)
    assert ds.load_clip(0, offset=0)["video"].shape == (9, 3, 64, 64)
    info = probe(folder)
    assert (info.width, info.height, info.num_frames) == (W, H, 20)
    assert "mixed sizes" in info.note and "resized" in info.note   # `data check` says so, as a warning


def test_16bit_frames_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    grey = (np.arange(H * W).reshape(H, W) * 21).astype(np.uint16)
    rgb = np.stack([grey, 65535 - grey, grey // 2], -1).astype(np.uint16)
    folder = tmp_path / "deep"
    folder.mkdir()
    Image.fromarray(grey).save(folder / "0.png")             # PIL mode I;16
    write_png16(folder / "1.png", grey)
    write_png16(folder / "2.png", rgb)
    Image.fromarray(grey).save(folder / "3.tif")
    got = read_frames(folder, [0, 1, 2, 3])
    want_grey = np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, -1)
    np.testing.assert_array_equal(got[0], want_grey)
    np.testing.assert_array_equal(got[1], want_grey)
    np.testing.assert_array_equal(got[2], (rgb >> 8).astype(np.uint8))
    np.testing.assert_array_equal(got[3], want_grey)
    assert got.mean() < 160   # a ramp, not "almost all white"


def test_palette_grey_alpha_frames_convert_to_rgb(tmp_path):
    from PIL import Image

    rgb = counting_frames(1)[0]
    rgb[20:30, 10:50] = (200, 30, 90)
    folder = tmp_path / "modes"
    folder.mkdir()
    im = Image.fromarray(rgb)
    im.quantize(16).save(folder / "0.png")                     # palette
    im.convert("L").save(folder / "1.png")                     # grey
    im.convert("LA").save(folder / "2.png")                    # grey + alpha
    im.convert("RGBA").save(folder / "3.png")                  # RGB + alpha
    im.convert("1").save(folder / "4.png")                     # 1 bit
    p_alpha = im.quantize(16)
    p_alpha.info["transparency"] = 0
    p_alpha.save(folder / "5.png", transparency=0)             # palette with a transparent entry
    got = read_frames(folder, range(6))
    assert got.dtype == np.uint8 and got.shape == (6, H, W, 3)
    np.testing.assert_allclose(got[0].astype(int), rgb.astype(int), atol=40)
    np.testing.assert_array_equal(got[1], np.repeat(np.asarray(im.convert("L"))[..., None], 3, -1))
    np.testing.assert_array_equal(got[2], got[1])
    np.testing.assert_array_equal(got[3], rgb)
    assert set(np.unique(got[4])) <= {0, 255}
    np.testing.assert_array_equal(got[5], got[0])


@pytest.mark.parametrize("rotation,hflip", [(-90, False), (90, False), (180, False), (0, True)])
def test_rotation_metadata_gives_upright_frames(tmp_path, rotation, hflip):
    upright = counting_frames(12, h=64, w=48)          # portrait, white block top-left
    upright[:, -16:, -12:] = (0, 255, 0)               # green block bottom-right
    # what the camera stores: the upright picture turned back by the rotation the player applies
    if hflip:
        stored = upright[:, :, ::-1]
    else:
        stored = np.rot90(upright, -rotation // 90, axes=(1, 2))
    path = write_pts_video(tmp_path / "phone.mp4", np.ascontiguousarray(stored), np.arange(12) * 40,
                           rotation=rotation, hflip=hflip)
    info = probe(path)
    assert (info.width, info.height) == (48, 64) or rotation % 180 == 0
    got = read_frames(path, [0, 7])
    assert got.shape[1:] == upright.shape[1:]
    for k, i in enumerate([0, 7]):
        assert np.abs(got[k].astype(int) - upright[i].astype(int)).mean() < 8
    half = read_frames(path, [3], short_side=24)
    assert half.shape[1:3] == (32, 24)


def test_variable_frame_rate_reads_what_check_counts(tmp_path):
    frames = counting_frames(60)
    path = write_pts_video(tmp_path / "vfr.mp4", frames, irregular_ms(60))
    ref = decode_all(path)
    info = probe(path)
    assert info.num_frames == len(ref) == 60 and "truncated" not in info.note
    idx = [59, 0, 17, 18, 33, 41, 41]
    np.testing.assert_array_equal(read_frames(path, idx), ref[idx])
    np.testing.assert_array_equal(read_frames(path, range(60)), ref)


def test_raw_h264_named_mp4_reads_what_check_counts(tmp_path):
    frames = counting_frames(80)
    path = write_pts_video(tmp_path / "raw.mp4", frames, np.arange(80) * 40, fmt="h264", gop=10)
    ref = decode_all(path)
    info = probe(path)
    assert info.num_frames == len(ref) == 80
    for idx in ([79], [33, 34, 35], [61, 5, 22]):
        np.testing.assert_array_equal(read_frames(path, idx), ref[idx])
    ds = ClipDataset(tmp_path, tiny_data(**CFG, num_images=0), progress=False)
    assert len(ds) == 4
    for i in range(len(ds)):
        for o in range(2):
            item = ds.load_clip(i, flip=False, offset=o, offsets=2)
            k = item["start"] + 2 * np.arange(9)
            torch.testing.assert_close(item["video"], to_tensor(ref[k], 64))


def test_packets_that_are_not_frames_are_found_by_decoding(tmp_path, monkeypatch):
    """A field-coded stream (two packets a frame) or a frame the decoder drops: packet timestamps that never come
    out of the decoder are noticed on reading, and the frames are numbered by decoding instead."""
    from medsora.data import video

    path = write_pts_video(tmp_path / "fields.mkv", counting_frames(40), np.arange(40) * 40)
    real = video._find_layout

    def two_packets_a_frame(container, level):
        lay = real(container, level)
        if lay.mode == "timeline" and lay.level == 1:
            lay.pts = np.sort(np.concatenate([lay.pts, lay.pts + 1]))
            lay.count = len(lay.pts)
        return lay

    monkeypatch.setattr(video, "_find_layout", two_packets_a_frame)
    monkeypatch.setattr(video, "_LAYOUTS", type(video._LAYOUTS)())
    assert probe(path).num_frames == 40
    np.testing.assert_array_equal(read_frames(path, [39, 3, 20]), decode_all(path)[[39, 3, 20]])


@pytest.mark.parametrize("name", ["late.mkv", "late.mp4"])
def test_first_frame_at_7s_is_not_truncated(tmp_path, name):
    frames = counting_frames(40)
    path = write_pts_video(tmp_path / name, frames, 7000 + np.arange(40) * 40)
    info = probe(path)
    assert info.num_frames == 40 and info.note == ""
    assert abs(info.fps - 25) < 0.1
    np.testing.assert_array_equal(read_frames(path, [0, 39, 20]), decode_all(path)[[0, 39, 20]])


def test_longest_video_stream_is_taken(tmp_path):
    thumb = np.full((5, H, W, 3), 30, np.uint8)
    frames = counting_frames(40)
    path = write_two_streams(tmp_path / "thumb.mp4", thumb, frames)
    info = probe(path)
    assert info.num_frames == 40
    got = read_frames(path, [0, 20, 39])
    np.testing.assert_allclose(got[:, 30, 50, 0], frames[[0, 20, 39], 30, 50, 0], atol=3)


def test_ts_mts_flv_are_indexed(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    frames = counting_frames(40)
    for name, fmt in [("a.ts", "mpegts"), ("b.MTS", "mpegts"), ("c.flv", "flv"), ("d.m2ts", "mpegts")]:
        write_pts_video(root / name, frames, np.arange(40) * 40, fmt=fmt)
    report = check_dataset(root, tiny_data(**CFG), progress=False)
    assert [e.path for e, _ in report.usable] == ["a.ts", "b.MTS", "c.flv", "d.m2ts"]
    assert all(e.num_frames == 40 and not e.note for e, _ in report.usable)
    for e, _ in report.usable:
        np.testing.assert_allclose(read_frames(root / e.path, [39])[0, 30, 50, 0], frames[39, 30, 50, 0], atol=3)


def test_unreadable_folder_is_listed(tmp_path, monkeypatch):
    root = tmp_path / "d"
    root.mkdir()
    write_pts_video(root / "good.mp4", counting_frames(40), np.arange(40) * 40)
    (root / "locked").mkdir()
    write_pts_video(root / "locked" / "x.mp4", counting_frames(20), np.arange(20) * 40)
    os.chmod(root / "locked", 0)
    real_scandir = os.scandir

    def scandir(path="."):   # root reads any folder: refuse it as the file system would for another user
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    try:
        report = check_dataset(root, tiny_data(**CFG), progress=False)
        ds = ClipDataset(root, tiny_data(**CFG), progress=False)
    finally:
        os.chmod(root / "locked", 0o755)
    assert [e.path for e, _ in report.usable] == ["good.mp4"]
    assert "permission denied" in dict(report.skipped)["locked"]
    assert [s.path for s in ds.sources] == ["good.mp4"]


def test_skipped_sources_are_named_with_reasons(tmp_path):
    from medsora.data.check import skipped_summary

    root = tmp_path / "d"
    root.mkdir()
    (root / "zero.mp4").write_bytes(b"")
    (root / "empty").mkdir()
    os.symlink("elsewhere.mp4", root / "gone.mp4")
    skipped = [(e.path, e.error) for e in build_index(root, progress=False) if not e.ok]
    msg = skipped_summary(skipped)
    assert msg.startswith("3 sources skipped: ")
    for name, why in [("zero.mp4", "zero bytes"), ("empty", "empty folder"), ("gone.mp4", "dangling symlink")]:
        assert f"{name} (" in msg and why in msg


def test_cache_encodes_every_clip_the_check_counts(tmp_path):
    """`medsora cache` on the odd corpus: no abort, and no clip of a source that `data check` calls usable fails."""
    import json

    from safetensors import safe_open

    from medsora.cache import build_cache
    from medsora.vae.autoencoder import VideoVAE

    make_odd_corpus(tmp_path / "odd")
    for plain in ["cam/b.mp4", "cam.ts", "cam.flv"]:   # read like the others: left out to keep the test short
        (tmp_path / "odd" / plain).unlink()
    report = check_dataset(tmp_path / "odd", tiny_data(**CFG), progress=False)
    cfg = load_config("tiny", overrides=[f"data.root={tmp_path / 'odd'}", "data.num_frames=8", "data.frame_stride=2",
                                         "data.clip_offsets=1", "data.num_images=0"])
    out = build_cache(cfg, VideoVAE.tiny(seed=0).eval(), tmp_path / "cache", progress=False)
    assert json.loads((out / "manifest.json").read_text())["num_clips"] == report.num_clips
    failed = []
    for shard in sorted(out.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            failed += json.loads(f.metadata()["failed"])
    assert failed == []
