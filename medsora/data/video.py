"""The one video reader and writer of the package.

A *source* is either a video file (read with PyAV, seeking near the wanted frames) or a folder of
frame images (natural sort order). Both expose the same two calls:

    probe(path)                -> VideoInfo(num_frames, fps, width, height)
    read_frames(path, indices) -> uint8 array (n, H, W, 3)

Frame i of a video is its i-th frame in presentation order: found by timestamp (a constant-rate mp4 from its
index, any other file from the timestamps of its packets, read once per file and process), or by decoding from the
start when the file has no timestamps (a raw H.264 stream), so variable frame rates and first frames stamped at
7 s read the frames `probe` counts. The longest video stream is taken; rotation metadata is applied (frames come
upright, as ffmpeg's autorotate shows them). Frames of a folder are converted to 8-bit RGB (16-bit scaled, palette
and grey expanded) and resized to the first frame's size when their sizes differ.

Errors are raised as `VideoError` with a short, human reason ("zero bytes", "not a video", ...);
callers (the index, `medsora data check`) turn them into report lines, never tracebacks.
"""
from __future__ import annotations

import errno
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import MedsoraError

# What is read as a video, by extension (PyAV reads them all; raw H.264/HEVC streams carry no timestamps and
# are read by decoding from the start). Other files are listed by `medsora data check`, never read.
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".flv",
              ".wmv", ".asf", ".3gp", ".ogv", ".vob", ".mxf", ".dv", ".f4v", ".m2v", ".h264", ".264", ".h265",
              ".hevc")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MIN_FOLDER_FRAMES = 2   # a folder holding a single image is a stray image, not a frame folder
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


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS)


def list_frame_images(folder: str | Path) -> list[Path]:
    """The frames of a frame folder in natural order: its image files (dangling links left out)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if _is_image_name(p.name) and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def link_problem(path: str | Path) -> str:
    """Why a symlink cannot be followed ("" when it can, or when `path` is no symlink)."""
    path = Path(path)
    if not path.is_symlink():
        return ""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    try:
        os.stat(path)
    except FileNotFoundError:
        return f"dangling symlink (points to {target}, which does not exist)"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"symlink loop (points to {target}, which leads back to itself)"
        return f"symlink cannot be followed (points to {target}: {e.strerror})"
    return ""


# ----------------------------------------------------------------------------------------------
# probing

def probe(path: str | Path) -> VideoInfo:
    path = Path(path)
    problem = link_problem(path)
    if problem:
        raise VideoError(problem)
    if path.is_dir():
        return _probe_folder(path)
    return _probe_video(path)


def _probe_folder(folder: Path) -> VideoInfo:
    from PIL import Image

    try:
        files = list_frame_images(folder)
    except PermissionError:
        raise VideoError("folder cannot be read (permission denied)") from None
    if not files:
        raise VideoError("empty folder (no jpg/png frames)")
    try:
        with Image.open(files[0]) as im:
            w, h = im.size
    except Exception as e:  # noqa: BLE001 - any decoder error is a bad file
        raise VideoError(f"first frame {files[0].name} is not a readable image ({type(e).__name__})") from None
    notes = []
    dangling = [p.name for p in folder.iterdir() if _is_image_name(p.name) and p.is_symlink() and not p.exists()]
    if dangling:
        notes.append(f"{len(dangling)} frame(s) left out, broken symlinks: {', '.join(dangling[:3])}"
                     f"{'...' if len(dangling) > 3 else ''}")
    # frames of another size are resized to the first frame's size when read; say so (a sample of the frames)
    sample = sorted({round(k * (len(files) - 1) / 31) for k in range(32)}) if len(files) > 1 else []
    odd, bad = None, None
    for k in sample:
        try:
            with Image.open(files[k]) as im:
                if im.size != (w, h) and odd is None:
                    odd = (files[k].name, im.size)
        except Exception:  # noqa: BLE001
            bad = bad or files[k].name
    if odd:
        notes.append(f"frames of mixed sizes (e.g. {odd[0]} is {odd[1][0]}x{odd[1][1]}); each frame is resized "
                     f"to the first frame's {w}x{h} when read")
    if bad:
        notes.append(f"frame {bad} is not a readable image; clips that hold it are skipped")
    return VideoInfo(len(files), DEFAULT_FOLDER_FPS, w, h, "; ".join(notes))


def _open(path: Path):
    import av

    if not path.exists():
        raise VideoError(link_problem(path) or "file does not exist")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise VideoError(f"cannot be read ({e.strerror})") from None
    if size == 0:
        raise VideoError("zero bytes")
    if not os.access(path, os.R_OK):
        raise VideoError("cannot be read (permission denied)")
    try:
        container = av.open(str(path))
    except PermissionError:
        raise VideoError("cannot be read (permission denied)") from None
    except Exception as e:  # noqa: BLE001
        raise VideoError(f"not a video or unreadable container ({type(e).__name__})") from None
    if not _video_streams(container):
        container.close()
        raise VideoError("no video stream")
    return container


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _video_streams(container) -> list:
    """Video streams that are videos: cover art (an "attached picture" stream) is not."""
    out = []
    for s in container.streams.video:
        try:
            if int(s.disposition) & 0x400:  # AV_DISPOSITION_ATTACHED_PIC
                continue
        except Exception:  # noqa: BLE001 - older PyAV without disposition
            pass
        out.append(s)
    return out


def _frames_estimate(stream, container) -> float:
    if stream.frames:
        return float(stream.frames)
    fps = _stream_fps(stream)
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base) * fps
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag:
        try:
            h, m, s = str(tag).split(":")
            return (int(h) * 3600 + int(m) * 60 + float(s)) * fps
        except ValueError:
            pass
    return 0.0


def _pick_stream(container):
    """The video stream with the most frames (a 5-frame thumbnail track beside the video is not taken)."""
    streams = _video_streams(container)
    if len(streams) == 1:
        return streams[0]
    counts = [_frames_estimate(s, container) for s in streams]
    if not all(counts):  # unknown lengths: count the packets of each stream
        counts = dict.fromkeys((s.index for s in streams), 0)
        try:
            for pkt in container.demux(*streams):
                if pkt.size:
                    counts[pkt.stream.index] += 1
        except Exception:  # noqa: BLE001 - a broken tail: what was counted
            pass
        try:
            container.seek(0)
        except Exception:  # noqa: BLE001 - the callers demux again from where this stopped otherwise
            pass
        counts = [counts[s.index] for s in streams]
    return streams[max(range(len(streams)), key=lambda k: (counts[k], -k))]


# How frame numbers map to timestamps, found once per file and process (`_layout`), cheapest first:
#   grid       (level 0) constant frame rate, known from the container's index (mp4/mov): frame i is at
#              start + i*step; nothing is read
#   timeline   (level 1) the sorted presentation timestamps of every packet (variable frame rate, mkv, ts, flv, ...);
#              the file's packets are read, not decoded
#              (level 2) the timestamps of every decoded frame, where packets are not frames (a field-coded
#              stream, a frame the decoder drops): the whole file is decoded once
#   sequential no timestamps (raw H.264 stream): frames are numbered by decoding from the start
# A read that finds frames where its layout does not expect them (off the grid, a gap) takes the next level.
@dataclass
class _Layout:
    stream: int              # index of the stream in container.streams
    mode: str
    level: int = 0
    count: int = 0           # frames (0: unknown until decoded, sequential mode)
    start: int = 0           # grid: pts of frame 0
    step: int = 0            # grid: pts per frame
    pts: np.ndarray | None = None  # timeline
    fps: float = 0.0
    note: str = ""

    def index_of(self, pts) -> int | None:
        """Frame number of a decoded frame's pts; None when the pts is not one of this layout's frames."""
        if pts is None:
            return None
        if self.mode == "grid":
            k = (pts - self.start) / self.step
            i = round(k)
            return i if abs(k - i) < 0.25 and i >= 0 else None
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and self.pts[i] == pts else None

    def pts_of(self, i: int) -> int:
        return self.start + i * self.step if self.mode == "grid" else int(self.pts[i])


_LAYOUTS: OrderedDict = OrderedDict()
_LAYOUTS_MAX = 64


def _layout(path: Path, level: int = 0) -> _Layout:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    lay = _LAYOUTS.get(key)
    if lay is not None and (lay.level >= level or lay.mode == "sequential"):
        _LAYOUTS.move_to_end(key)
        return lay
    container = _open(path)
    try:
        lay = _find_layout(container, level)
    finally:
        container.close()
    _LAYOUTS[key] = lay
    while len(_LAYOUTS) > _LAYOUTS_MAX:
        _LAYOUTS.popitem(last=False)
    return lay


def _find_layout(container, level: int) -> _Layout:
    stream = _pick_stream(container)
    fps = _stream_fps(stream)
    if level == 0:
        grid = _grid(container, stream)
        if grid is not None:
            return grid
    pts = []
    try:
        if level < 2:
            for pkt in container.demux(stream):
                if not pkt.size or pkt.is_discard:
                    continue
                if pkt.pts is None:
                    pts = None
                    break
                pts.append(pkt.pts)
        else:
            for frame in container.decode(stream):
                if frame.pts is None:
                    pts = None
                    break
                pts.append(frame.pts)
    except Exception:  # noqa: BLE001 - a broken tail: what was read so far (the probe counts what decodes)
        pass
    raw = ("h264", "hevc", "mpegvideo", "m4v", "rawvideo", "mjpeg", "vvc", "av1", "obu")
    if not pts or container.format.name in raw or len(set(pts)) != len(pts):
        return _Layout(stream.index, "sequential", 2, fps=fps or DEFAULT_FOLDER_FPS,
                       note="no frame timestamps (raw stream): frames are found by decoding from the start, "
                            "which is slow for long videos; remux it (ffmpeg -i IN -c copy OUT.mp4) to fix")
    arr = np.sort(np.asarray(pts, dtype=np.int64))
    note = ""
    if len(arr) > 1:
        gaps = np.diff(arr)
        span = float((arr[-1] - arr[0]) * stream.time_base)
        if span > 0:
            fps = (len(arr) - 1) / span
        med = float(np.median(gaps))
        if med > 0 and (gaps.max() > 1.5 * med or gaps.min() < 0.5 * med):
            tb = float(stream.time_base)
            note = (f"variable frame rate (frame intervals {gaps.min() * tb * 1e3:.0f}-{gaps.max() * tb * 1e3:.0f} "
                    f"ms); frames are read by timestamp")
    if not fps:
        raise VideoError("no frame rate in the stream")
    return _Layout(stream.index, "timeline", max(level, 1), len(arr), pts=arr, fps=fps, note=note)


def _grid(container, stream) -> _Layout | None:
    """A constant-frame-rate mp4/mov: every sample is in the index, evenly spaced (no file read needed)."""
    if "mp4" not in container.format.name and "mov" not in container.format.name:
        return None
    try:
        entries = stream.index_entries
        n = len(entries) if entries is not None else 0
        if n < 2 or n != stream.frames or stream.start_time is None:
            return None
        dts = np.fromiter((e.timestamp for e in entries), np.int64, n)
        if any(e.is_discard for e in entries):
            return None
    except Exception:  # noqa: BLE001 - PyAV without index entries: read the timestamps
        return None
    steps = np.unique(np.diff(dts))
    if len(steps) != 1 or steps[0] <= 0:
        return None
    step = int(steps[0])
    return _Layout(stream.index, "grid", 0, n, start=int(stream.start_time), step=step,
                   fps=1.0 / float(step * stream.time_base))


def _probe_video(path: Path) -> VideoInfo:
    lay = _layout(path)
    # Check that the first and the last frame really decode (truncated files lie about their length).
    try:
        first = read_frames(path, [0])
    except VideoError as e:
        raise VideoError(f"undecodable ({e})") from None
    height, width = first.shape[1:3]   # as displayed (rotation applied)
    if lay.mode != "sequential" and lay.count > 0:
        _decodes(path, lay.count - 1)
        lay = _layout(path)            # the layout these reads settled on
    n, notes = lay.count, [lay.note] if lay.note else []
    if lay.mode == "sequential":
        n = _count_decodable(path, lay.stream)
    elif n <= 0 or not _decodes(path, n - 1):
        n_ok = _count_decodable(path, lay.stream)
        if n_ok == 0:
            raise VideoError("undecodable (no frame decodes)")
        if n > 0 and n_ok < n:
            notes.append(f"truncated: {n_ok} of {n} frames decode")
        n = min(n, n_ok) if n > 0 else n_ok
    return VideoInfo(n, lay.fps, width, height, "; ".join(notes))


def _decodes(path: Path, index: int) -> bool:
    try:
        _read_video(path, [index], from_start=False)   # a miss is counted by decoding all (the caller does)
        return True
    except VideoError:
        return False


def _count_decodable(path: Path, stream_index: int) -> int:
    container = _open(path)
    n = 0
    try:
        for _ in container.decode(container.streams[stream_index]):
            n += 1
    except Exception:  # noqa: BLE001 - stop at the first broken packet
        pass
    finally:
        container.close()
    return n


# ----------------------------------------------------------------------------------------------
# orientation (rotation metadata of phone videos)

def _display_ops(frame, stream) -> tuple[str, ...]:
    """What makes a decoded frame upright, as ffmpeg's autorotate does it: from the frame's display matrix
    (PyAV >= 13 exposes it as frame side data), else from the stream's legacy `rotate` tag (clockwise degrees)."""
    matrix = None
    try:
        for sd in frame.side_data:
            if getattr(sd.type, "name", str(sd.type)).endswith("DISPLAYMATRIX"):
                matrix = np.frombuffer(bytes(sd), dtype="<i4")[:9].astype(np.float64) / 65536.0
                break
    except Exception:  # noqa: BLE001 - no side data on this PyAV
        matrix = None
    if matrix is None or len(matrix) < 9:
        try:
            theta = float((stream.metadata or {}).get("rotate", 0) or 0) % 360
        except ValueError:
            return ()
        return {90: ("clock",), 180: ("hflip", "vflip"), 270: ("cclock",)}.get(int(round(theta / 90) * 90) % 360, ())
    s0, s1 = np.hypot(matrix[0], matrix[3]), np.hypot(matrix[1], matrix[4])
    if not s0 or not s1:
        return ()
    rotation = -np.degrees(np.arctan2(matrix[1] / s1, matrix[0] / s0))   # av_display_rotation_get
    theta = -round(rotation)                                              # ffmpeg's get_rotation
    theta -= 360 * np.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return ("cclock_flip",) if matrix[3] > 0 else ("clock",)
    if abs(theta - 180) < 1:
        return tuple(op for op, on in (("hflip", matrix[0] < 0), ("vflip", matrix[4] < 0)) if on)
    if abs(theta - 270) < 1:
        return ("clock_flip",) if matrix[3] < 0 else ("cclock",)
    if abs(theta) < 1 and matrix[4] < 0:
        return ("vflip",)
    return ()   # an angle that is no multiple of 90 degrees is left as it is


def _apply_ops(img: np.ndarray, ops: tuple[str, ...]) -> np.ndarray:
    for op in ops:
        if op == "clock":
            img = np.rot90(img, -1)
        elif op == "cclock":
            img = np.rot90(img, 1)
        elif op == "cclock_flip":
            img = img.transpose(1, 0, 2)
        elif op == "clock_flip":
            img = np.rot90(img, -1)[::-1]
        elif op == "hflip":
            img = img[:, ::-1]
        elif op == "vflip":
            img = img[::-1]
    return np.ascontiguousarray(img) if ops else img


# ----------------------------------------------------------------------------------------------
# reading

def read_frames(path: str | Path, indices, short_side: int | None = None) -> np.ndarray:
    """Frames `indices` (sorted or not, repeats allowed) as uint8 (n, H, W, 3), upright.

    With `short_side`, frames are downscaled while decoding so that their short side is `short_side`
    (aspect kept; area filter): converting a 768x576 frame to RGB at 128 px is ~20x less work.
    Frame i of a video is its i-th frame in presentation order, whatever its timestamps (variable frame rate,
    a first frame at 7 s, no timestamps at all): the frames `probe` counts are the frames this returns.
    """
    path = Path(path)
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame indices given")
    if min(indices) < 0:
        raise VideoError(f"frame {min(indices)} out of range")
    problem = link_problem(path)
    if problem:
        raise VideoError(problem)
    if path.is_dir():
        return _read_folder(path, indices, short_side)
    return _read_video(path, indices, short_side)


def _scaled(w: int, h: int, short_side: int | None) -> tuple[int, int]:
    if not short_side or min(w, h) <= short_side:
        return w, h
    k = short_side / min(w, h)
    return max(short_side, round(w * k)), max(short_side, round(h * k))


def to_rgb8(im) -> np.ndarray:
    """Any PIL image as uint8 RGB (H, W, 3): 16-bit frames scaled to 8 bits (not clipped to white), palette,
    grey, grey+alpha, RGBA, CMYK converted (alpha dropped)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if mode.startswith("I;16"):
            a = (a.astype(np.uint16) >> 8).astype(np.uint8)
        elif mode == "I":
            a = a.astype(np.int64)
            if im.format in ("PNG", "TIFF") or a.max() > 255:   # a 16-bit image (PNG's 16-bit grey is "I")
                a = np.clip(a, 0, 65535) >> 8
            a = np.clip(a, 0, 255).astype(np.uint8)
        else:
            a = a.astype(np.float64)
            a = a * 255.0 if np.nanmax(a) <= 1.0 else a
            a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        return np.ascontiguousarray(a[..., :3])
    if mode == "RGB":
        return np.asarray(im)
    if mode in ("P", "PA") and "transparency" in im.info or mode == "PA":
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"))


def _read_folder(folder: Path, indices: list[int], short_side: int | None = None) -> np.ndarray:
    """Frames of a folder; a frame of another size than the first one is resized to the first one's size."""
    from PIL import Image

    files = list_frame_images(folder)
    if not files:
        raise VideoError("empty folder (no jpg/png frames)")
    try:
        with Image.open(files[0]) as im:
            size = _scaled(*im.size, short_side)
    except Exception as e:  # noqa: BLE001
        raise VideoError(f"frame {files[0].name} is not a readable image ({type(e).__name__})") from None
    out = []
    for i in indices:
        if not 0 <= i < len(files):
            raise VideoError(f"frame {i} out of range (folder has {len(files)} frames)")
        try:
            with Image.open(files[i]) as im:
                if im.size != size and im.format == "JPEG" and im.mode in ("RGB", "L", "YCbCr"):
                    im.draft("RGB", size)  # JPEG: decode at a reduced scale directly
                img = to_rgb8(im)
        except Exception as e:  # noqa: BLE001
            raise VideoError(f"frame {files[i].name} is not a readable image ({type(e).__name__})") from None
        if (img.shape[1], img.shape[0]) != size:
            img = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR, reducing_gap=2.0))
        out.append(img)
    return np.stack(out)


def _read_video(path: Path, indices: list[int], short_side: int | None = None, from_start: bool = True) -> np.ndarray:
    """Seek to the key frame before the first wanted frame, decode forward to the last one; frames are matched by
    their timestamps. A miss (a seek that landed after the frame, timestamps off the grid) reads from the start."""
    want = sorted(set(indices))
    lay = _layout(path)
    while True:
        if lay.count and want[-1] >= lay.count:
            raise VideoError(f"frame {want[-1]} out of range (the video has {lay.count} frames)")
        got, err, off = _decode(path, lay, want, short_side, seek=True)
        if not off or lay.level >= 2:
            break
        lay = _layout(path, lay.level + 1)   # frames are not where this layout says: take the next level
    if len(got) < len(want) and lay.mode != "sequential" and want[0] > 0 and from_start:
        more, err, _ = _decode(path, lay, [i for i in want if i not in got], short_side, seek=False)
        got.update(more)
    missing = [i for i in want if i not in got]
    if missing:
        if err:
            raise VideoError(f"decoding failed near frame {missing[0]} ({err})")
        raise VideoError(f"frames {missing[:3]}{'...' if len(missing) > 3 else ''} could not be decoded")
    return np.stack([got[i] for i in indices])


def _decode(path: Path, lay: _Layout, want: list[int], short_side: int | None, seek: bool):
    """{frame number: image} of the frames of `want` found, the decoder error that stopped it ("" if none), and
    whether frames came where `lay` does not expect them (off its grid, or a frame number skipped)."""
    wanted = set(want)
    lo, hi = want[0], want[-1]
    got: dict[int, np.ndarray] = {}
    container = _open(path)
    try:
        stream = container.streams[lay.stream]
        stream.thread_type = "AUTO"
        out_w, out_h = _scaled(stream.codec_context.width, stream.codec_context.height, short_side)
        if seek and lo > 0 and lay.mode != "sequential":
            container.seek(lay.pts_of(max(lo - 2, 0)), stream=stream, backward=True, any_frame=False)
        counter, prev = -1, None
        for frame in container.decode(stream):
            if lay.mode == "sequential":
                counter += 1
                idx = counter
            else:
                idx = lay.index_of(frame.pts)
                if idx is None or (prev is not None and idx != prev + 1):
                    return got, "", True
                prev = idx
            if idx > hi:
                break
            if idx in wanted and idx not in got:
                if (out_w, out_h) != (frame.width, frame.height):
                    frame = frame.reformat(width=out_w, height=out_h, format="rgb24", interpolation="AREA")
                got[idx] = _apply_ops(frame.to_ndarray(format="rgb24"), _display_ops(frame, stream))
                if len(got) == len(want):
                    break
    except VideoError:
        raise
    except Exception as e:  # noqa: BLE001 - broken packets, decoder errors
        return got, f"{type(e).__name__}: {e}", False
    finally:
        container.close()
    return got, "", False


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
