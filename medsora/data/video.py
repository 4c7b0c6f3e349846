"""The one video reader and writer of the package.

A *source* is either a video file (read with PyAV, seeking near the wanted frames) or a folder of
frame images (natural sort order). Both expose the same two calls:

    probe(path)                -> VideoInfo(num_frames, fps, width, height)
    read_frames(path, indices) -> uint8 array (n, H, W, 3)

Errors are raised as `VideoError` with a short, human reason ("zero bytes", "not a video", ...);
callers (the index, `medsora data check`) turn them into report lines, never tracebacks.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import MedsoraError

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DEFAULT_FOLDER_FPS = 25.0  # frame folders carry no rate; CholecT45 frames are 25 fps


class VideoError(MedsoraError):
    """A source that cannot be used; the message is the reason, without the path."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int
    note: str = ""  # e.g. "truncated: 40 of 90 frames decode"


def natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def list_frame_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    return sorted(files, key=lambda p: natural_key(p.name))


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


# ----------------------------------------------------------------------------------------------
# probing

def probe(path: str | Path) -> VideoInfo:
    path = Path(path)
    if path.is_dir():
        return _probe_folder(path)
    return _probe_video(path)


def _probe_folder(folder: Path) -> VideoInfo:
    from PIL import Image

    files = list_frame_images(folder)
    if not files:
        raise VideoError("empty folder (no jpg/png frames)")
    try:
        with Image.open(files[0]) as im:
            w, h = im.size
    except Exception as e:  # noqa: BLE001 - any decoder error is a bad file
        raise VideoError(f"first frame {files[0].name} is not a readable image ({type(e).__name__})") from None
    return VideoInfo(len(files), DEFAULT_FOLDER_FPS, w, h)


def _open(path: Path):
    import av

    if not path.exists():
        raise VideoError("file does not exist")
    if path.stat().st_size == 0:
        raise VideoError("zero bytes")
    try:
        container = av.open(str(path))
    except Exception as e:  # noqa: BLE001
        raise VideoError(f"not a video or unreadable container ({type(e).__name__})") from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream")
    return container


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _frame_index(frame, stream, fps: float) -> int:
    """Frame number of a decoded frame from its timestamp (constant frame rate assumed)."""
    if frame.pts is None or not fps:
        return -1
    start = stream.start_time or 0
    t = float((frame.pts - start) * stream.time_base)
    return int(round(t * fps))


def _probe_video(path: Path) -> VideoInfo:
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        n = int(stream.frames or 0)
        if n <= 0 and stream.duration and fps:
            n = int(round(float(stream.duration * stream.time_base) * fps))
        if n <= 0 and container.duration and fps:
            n = int(round(container.duration / 1e6 * fps))
    finally:
        container.close()
    if not fps:
        raise VideoError("no frame rate in the stream")
    # Check that the first and the last frame really decode (truncated files lie about their length).
    try:
        first = read_frames(path, [0])
    except VideoError as e:
        raise VideoError(f"undecodable ({e})") from None
    height, width = first.shape[1:3]
    note = ""
    if n <= 0 or not _decodes(path, n - 1):
        n_ok = _count_decodable(path)
        if n_ok == 0:
            raise VideoError("undecodable (no frame decodes)")
        if n > 0:
            note = f"truncated: {n_ok} of {n} frames decode"
        n = n_ok
    return VideoInfo(n, fps, width, height, note)


def _decodes(path: Path, index: int) -> bool:
    try:
        read_frames(path, [index])
        return True
    except VideoError:
        return False


def _count_decodable(path: Path) -> int:
    container = _open(path)
    n = 0
    try:
        for _ in container.decode(video=0):
            n += 1
    except Exception:  # noqa: BLE001 - stop at the first broken packet
        pass
    finally:
        container.close()
    return n


# ----------------------------------------------------------------------------------------------
# reading

def read_frames(path: str | Path, indices, short_side: int | None = None) -> np.ndarray:
    """Frames `indices` (sorted or not, repeats allowed) as uint8 (n, H, W, 3).

    With `short_side`, frames are downscaled while decoding so that their short side is `short_side`
    (aspect kept; area filter): converting a 768x576 frame to RGB at 128 px is ~20x less work.
    """
    path = Path(path)
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame indices given")
    if path.is_dir():
        return _read_folder(path, indices, short_side)
    return _read_video(path, indices, short_side)


def _scaled(w: int, h: int, short_side: int | None) -> tuple[int, int]:
    if not short_side or min(w, h) <= short_side:
        return w, h
    k = short_side / min(w, h)
    return max(short_side, round(w * k)), max(short_side, round(h * k))


def _read_folder(folder: Path, indices: list[int], short_side: int | None = None) -> np.ndarray:
    from PIL import Image

    files = list_frame_images(folder)
    out = []
    for i in indices:
        if not 0 <= i < len(files):
            raise VideoError(f"frame {i} out of range (folder has {len(files)} frames)")
        try:
            with Image.open(files[i]) as im:
                size = _scaled(*im.size, short_side)
                if size != im.size:
                    im.draft("RGB", size)  # JPEG: decode at a reduced scale directly
                    im = im.convert("RGB").resize(size, Image.BILINEAR, reducing_gap=2.0)
                out.append(np.asarray(im.convert("RGB")))
        except Exception as e:  # noqa: BLE001
            raise VideoError(f"frame {files[i].name} is not a readable image ({type(e).__name__})") from None
    return np.stack(out)


def _read_video(path: Path, indices: list[int], short_side: int | None = None) -> np.ndarray:
    """Seek to the key frame before the first wanted frame, decode forward to the last one."""
    want = sorted(set(indices))
    wanted = set(want)
    lo, hi = want[0], want[-1]
    container = _open(path)
    got: dict[int, np.ndarray] = {}
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        out_w, out_h = _scaled(stream.codec_context.width, stream.codec_context.height, short_side)
        if lo > 0 and fps:
            # seek a little before the frame: pts of frame lo minus one frame, in stream time base
            t = max(lo - 1, 0) / fps
            pts = int(t / stream.time_base) + (stream.start_time or 0)
            container.seek(pts, stream=stream, backward=True, any_frame=False)
        counter = None
        for frame in container.decode(stream):
            idx = _frame_index(frame, stream, fps)
            if idx < 0:  # no timestamps: count from the start (only valid without a seek)
                counter = 0 if counter is None else counter + 1
                idx = counter
            if idx > hi:
                break
            if idx in wanted and idx not in got:
                if (out_w, out_h) != (frame.width, frame.height):
                    frame = frame.reformat(width=out_w, height=out_h, format="rgb24", interpolation="AREA")
                got[idx] = frame.to_ndarray(format="rgb24")
    except VideoError:
        raise
    except Exception as e:  # noqa: BLE001 - broken packets, decoder errors
        if len(got) < len(want):
            raise VideoError(f"decoding failed near frame {lo} ({type(e).__name__}: {e})") from None
    finally:
        container.close()
    missing = [i for i in want if i not in got]
    if missing:
        raise VideoError(f"frames {missing[:3]}{'...' if len(missing) > 3 else ''} could not be decoded")
    return np.stack([got[i] for i in indices])


# ----------------------------------------------------------------------------------------------
# writing

def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> Path:
    """Write uint8 frames (T, H, W, 3) as an H.264 mp4 (mpeg4 where libx264 is absent).

    Written to a temporary name then renamed, so a killed run never leaves a half file.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    container = av.open(str(tmp), mode="w")
    try:
        try:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.options = {"crf": str(crf), "preset": "fast"}
        except Exception:  # noqa: BLE001 - ffmpeg build without x264
            stream = container.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1000))
            stream.bit_rate = 8_000_000
        stream.width, stream.height = w + (w % 2), h + (h % 2)
        stream.pix_fmt = "yuv420p"
        for img in frames:
            if w % 2 or h % 2:
                img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    os.replace(tmp, path)
    return path


def write_frames(folder: str | Path, frames: np.ndarray, ext: str = ".png") -> Path:
    """Write uint8 frames (T, H, W, 3) as numbered images 00000.png, 00001.png, ..."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(frames):
        Image.fromarray(img).save(folder / f"{i:05d}{ext}")
    return folder


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    return path
