"""Find the videos under a dataset root and probe each once; the result is cached beside the data.

A *source* is a video file or a folder that directly holds frame images. The index maps each source
(relative path) to its frame count, fps and size, or to the reason it cannot be used. It is stored as
JSON (`<root>/.medsora-index.json`, or in `index_dir`) and an entry is probed again only when its
file changed (size + mtime; for a frame folder: number of images + folder mtime), so re-opening a
dataset of 200 videos decodes nothing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .video import IMAGE_EXTS, VIDEO_EXTS, VideoError, probe

log = logging.getLogger(__name__)
INDEX_NAME = ".medsora-index.json"
INDEX_VERSION = 1


@dataclass
class Entry:
    path: str                  # relative to the root
    kind: str                  # "video" | "frames"
    signature: list
    num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    error: str = ""            # why the source cannot be used ("" = usable)
    note: str = ""             # a warning that does not make it unusable

    @property
    def ok(self) -> bool:
        return not self.error


def find_sources(root: str | Path) -> list[Path]:
    """Video files and frame-image folders under `root` (recursively), in natural sorted order.

    Files with a video extension are sources; a folder is a source when it directly holds images or
    nothing at all (an empty leaf folder is reported as unusable rather than silently ignored).
    """
    from .video import natural_key

    root = Path(root)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        here = Path(dirpath)
        images = [f for f in filenames if f.lower().endswith(IMAGE_EXTS)]
        if images:
            out.append(here)
            dirnames[:] = []  # a frame folder is a leaf: its sub-folders are not separate videos
            continue
        out.extend(here / f for f in filenames if f.lower().endswith(VIDEO_EXTS))
        if not filenames and not dirnames and here != root:
            out.append(here)  # empty folder
    return sorted(out, key=lambda p: natural_key(str(p.relative_to(root))))


def _signature(path: Path) -> list:
    if path.is_dir():
        n = sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        return ["dir", n, path.stat().st_mtime_ns]
    st = path.stat()
    return ["file", st.st_size, st.st_mtime_ns]


def index_path(root: Path, index_dir: str | Path = "") -> Path:
    if index_dir:
        key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
        return Path(index_dir) / f"index-{key}.json"
    return root / INDEX_NAME


def build_index(root: str | Path, index_dir: str | Path = "", progress: bool = True) -> list[Entry]:
    """Probe every source under `root`, reusing the cached index for unchanged files."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder {root} does not exist; pass the folder that holds your videos "
                                f"(or run `medsora synth --out {root}` to make a synthetic one)")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset root {root} is a file; pass the folder that holds your videos")
    cache_file = index_path(root, index_dir)
    cached = _read_cache(cache_file)
    entries, changed = [], False
    sources = find_sources(root)
    todo = []
    for src in sources:
        rel = str(src.relative_to(root))
        sig = _signature(src)
        old = cached.get(rel)
        if old is not None and old.signature == sig:
            entries.append(old)
        else:
            todo.append((src, rel, sig))
            entries.append(None)
    it = tqdm(todo, desc="indexing videos", unit="video", disable=not progress or len(todo) < 2)
    fresh = {}
    for src, rel, sig in it:
        fresh[rel] = _probe_entry(src, rel, sig)
        changed = True
    entries = [e if e is not None else fresh[str(s.relative_to(root))] for e, s in zip(entries, sources)]
    if changed or set(cached) != {e.path for e in entries}:
        _write_cache(cache_file, entries)
    return entries


def _probe_entry(src: Path, rel: str, sig: list) -> Entry:
    kind = "frames" if src.is_dir() else "video"
    try:
        info = probe(src)
    except VideoError as e:
        return Entry(rel, kind, sig, error=str(e))
    except Exception as e:  # noqa: BLE001 - never let one bad file stop indexing
        return Entry(rel, kind, sig, error=f"unreadable ({type(e).__name__}: {e})")
    return Entry(rel, kind, sig, info.num_frames, info.fps, info.width, info.height, note=info.note)


def _read_cache(path: Path) -> dict[str, Entry]:
    try:
        data = json.loads(path.read_text())
        if data.get("version") != INDEX_VERSION:
            return {}
        return {e["path"]: Entry(**e) for e in data["entries"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_cache(path: Path, entries: list[Entry]) -> None:
    """Atomic write; a read-only dataset folder just means no cache (with a note in the log)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"version": INDEX_VERSION, "entries": [asdict(e) for e in entries]}))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not write the dataset index %s (%s); set data.index_dir to a writable folder", path, e)


def clip_span(num_frames: int, stride: int) -> int:
    """Frames of the source a clip of `num_frames + 1` frames every `stride` covers."""
    return num_frames * stride + 1


def clip_starts(entry: Entry, num_frames: int, stride: int) -> list[int]:
    """Start frames of the non-overlapping clips of a source (empty when it is too short)."""
    span = clip_span(num_frames, stride)
    if not entry.ok or entry.num_frames < span:
        return []
    return list(range(0, entry.num_frames - span + 1, span))
