"""Find the videos under a dataset root and probe each once; the result is cached beside the data.

A *source* is a video file or a folder that directly holds frame images. The index maps each source
(relative path) to its frame count, fps and size, or to the reason it cannot be used. It is stored as
JSON (`<root>/.medsora-index.json`, or in `index_dir`) and an entry is probed again only when its
file changed (size + mtime; for a frame folder: number of images + folder mtime), so re-opening a
dataset of 200 videos decodes nothing.

What is found but is no source (an image beside videos, a dangling or looping symlink, a folder that cannot be
read, the sub-folders of a frame folder) is in the index too, as an unusable entry with its reason, so that
`medsora data check` lists it and nothing is left out silently (see `scan`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .video import IMAGE_EXTS, MIN_FOLDER_FRAMES, VIDEO_EXTS, VideoError, link_problem, probe

log = logging.getLogger(__name__)
INDEX_NAME = ".medsora-index.json"
INDEX_VERSION = 1
READER_VERSION = 2   # entries probed by an older reader (frame counts of VFR/offset videos, rotation) are probed again


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


@dataclass
class Scan:
    """What a dataset folder holds: the sources, what is left out and why, and the files that are not media."""
    sources: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)   # (path, reason): never a source
    others: list[Path] = field(default_factory=list)                # neither a video nor an image: not read


def scan(root: str | Path) -> Scan:
    """Walk `root` (following symlinks, each folder once) and sort what it holds:

    - a video file (by extension) is a source;
    - a folder that directly holds images and no videos is a frame folder (a source), unless it holds a single
      image, or its sub-folders hold videos: then its images are stray images, listed as skipped;
    - images beside videos are stray images (a `preview.jpg` never hides the videos of its folder);
    - the sub-folders of a frame folder are not read (listed as skipped); an empty leaf folder is a source
      (reported as unusable rather than silently ignored);
    - dangling or looping symlinks, folders that cannot be read, sockets/FIFOs: listed as skipped;
    - other files (labels, notes): listed in `others`. Names starting with "." are ignored.
    """
    root = Path(root)
    res = Scan()
    _walk(root, root, res, {os.path.realpath(root): root})
    key = _natural_rel(root)
    res.sources.sort(key=key)
    res.skipped.sort(key=lambda t: key(t[0]))
    res.others.sort(key=key)
    return res


def find_sources(root: str | Path) -> list[Path]:
    """Video files and frame-image folders under `root` (recursively), in natural sorted order (see `scan`)."""
    return scan(root).sources


def _natural_rel(root: Path):
    from .video import natural_key

    return lambda p: natural_key(str(p.relative_to(root)))


def _rel(p: Path, root: Path) -> str:
    return str(p.relative_to(root)) if p != root else "."


def _walk(here: Path, root: Path, res: Scan, visited: dict[str, Path]) -> bool:
    """Sort the content of `here` into `res`; True when a video file was found in it or below."""
    try:
        listing = sorted(os.scandir(here), key=lambda e: e.name)
    except PermissionError:
        res.skipped.append((here, "folder cannot be read (permission denied); give read access (chmod -R a+rX) "
                                  "to index it"))
        return False
    except OSError as e:
        res.skipped.append((here, f"folder cannot be read ({e.strerror or type(e).__name__})"))
        return False
    videos, images, dirs, links = [], [], [], []
    visible = 0
    for entry in listing:
        if entry.name.startswith("."):
            continue
        visible += 1
        p = Path(entry.path)
        try:
            if entry.is_symlink():
                problem = link_problem(p)
                if problem:
                    res.skipped.append((p, problem))
                    continue
            if entry.is_dir():
                (links if entry.is_symlink() else dirs).append(p)
            elif not entry.is_file():
                res.skipped.append((p, "not a regular file (a socket, FIFO or device)"))
            elif entry.name.lower().endswith(VIDEO_EXTS):
                videos.append(p)
            elif entry.name.lower().endswith(IMAGE_EXTS):
                images.append(p)
            else:
                res.others.append(p)
        except OSError as e:
            res.skipped.append((p, f"cannot be read ({e.strerror or type(e).__name__})"))
    if visible == 0 and here != root:
        res.sources.append(here)   # an empty folder: reported as unusable
        return False
    res.sources.extend(videos)
    # sub-folders, each real folder once (a symlink to a folder already walked is listed, not walked again)
    sub = Scan()
    found_video = bool(videos)
    for d in dirs + links:
        real = os.path.realpath(d)
        if real in visited:
            first = visited[real]
            mine = os.path.realpath(here)
            if mine == real or mine.startswith(real + os.sep):
                sub.skipped.append((d, f"symlink loop (leads back to {_rel(first, root)})"))
            else:
                sub.skipped.append((d, f"same folder as {_rel(first, root)}, indexed there"))
            continue
        visited[real] = d
        found_video |= _walk(d, root, sub, visited)
    if images and not videos and len(images) >= MIN_FOLDER_FRAMES and not found_video:
        res.sources.append(here)   # a frame folder; what its sub-folders hold is not read
        for s in sub.sources:
            res.skipped.append((s, f"inside frame folder {_rel(here, root)}; the sub-folders of a frame folder "
                                   f"are not read (move it out to use it)"))
        res.skipped.extend(sub.skipped)
        res.others.extend(sub.others)
        return False
    for img in images:
        if videos:
            why = "an image beside videos (a frame folder holds only frames, no videos); not read"
        elif found_video:
            why = "an image beside folders of videos (not a frame folder); not read"
        else:
            why = (f"a single image, not a video or a frame folder (a frame folder needs {MIN_FOLDER_FRAMES}+ "
                   f"frames); not read")
        res.skipped.append((img, why))
    res.sources.extend(sub.sources)
    res.skipped.extend(sub.skipped)
    res.others.extend(sub.others)
    return found_video


def _signature(path: Path) -> list:
    if path.is_dir():
        n = sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        return ["dir", n, path.stat().st_mtime_ns]
    st = path.stat()
    return ["file", st.st_size, st.st_mtime_ns]


def _skipped_kind(path: Path) -> str:
    if path.is_symlink() and link_problem(path):
        return "link"
    if path.is_dir():
        return "folder"
    return "image" if path.name.lower().endswith(IMAGE_EXTS) else "file"


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
    found = scan(root)
    sources = found.sources
    entries: list[Entry | None] = []
    todo = []
    for src in sources:
        rel = str(src.relative_to(root))
        try:
            sig = _signature(src)
        except OSError as e:   # vanished or unreadable since the walk: listed, never a traceback
            entries.append(Entry(rel, "frames" if src.is_dir() else "video", [],
                                 error=f"cannot be read ({e.strerror or type(e).__name__})"))
            continue
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
    entries = [e if e is not None else fresh[str(s.relative_to(root))] for e, s in zip(entries, sources)]
    probed = [e for e in entries if e.signature]
    if fresh or set(cached) != {e.path for e in probed}:
        _write_cache(cache_file, probed)
    # what is not a source (stray images, broken links, unreadable folders) is listed with its reason, never cached
    entries += [Entry(_rel(p, root), _skipped_kind(p), [], error=why) for p, why in found.skipped]
    from .video import natural_key

    return sorted(entries, key=lambda e: natural_key(e.path))


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
        if data.get("version") != INDEX_VERSION or data.get("reader") != READER_VERSION:
            return {}
        return {e["path"]: Entry(**e) for e in data["entries"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_cache(path: Path, entries: list[Entry]) -> None:
    """Atomic write; a read-only dataset folder just means no cache (with a note in the log)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"version": INDEX_VERSION, "reader": READER_VERSION,
                                   "entries": [asdict(e) for e in entries]}))
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
