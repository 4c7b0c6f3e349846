"""`medsora data check DIR`: what is usable in a dataset folder, and every skipped file by name with its reason."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig
from .index import Entry, build_index, clip_span, clip_starts, scan


@dataclass
class CheckReport:
    root: Path
    usable: list[tuple[Entry, int]] = field(default_factory=list)   # (entry, clips)
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (relative path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    others: list[str] = field(default_factory=list)                 # files neither video nor image (not read)

    @property
    def num_clips(self) -> int:
        return sum(n for _, n in self.usable)

    @property
    def ok(self) -> bool:
        return self.num_clips > 0

    def format(self) -> str:
        lines = [f"dataset {self.root}"]
        if self.usable:
            lines.append(f"{'source':<40} {'kind':<6} {'frames':>7} {'fps':>6} {'size':>10} {'clips':>6}")
            for e, n in self.usable:
                lines.append(f"{e.path:<40} {e.kind:<6} {e.num_frames:>7} {e.fps:>6.1f} "
                             f"{f'{e.width}x{e.height}':>10} {n:>6}")
        lines.append(f"usable: {len(self.usable)} sources, {self.num_clips} clips")
        for path, reason in self.warnings:
            lines.append(f"warning: {path}: {reason}")
        if self.skipped:
            lines.append(f"skipped: {len(self.skipped)}")
            for path, reason in self.skipped:
                lines.append(f"  {path}: {reason}")
        if self.others:
            n = len(self.others)
            lines.append(f"not read (neither a video nor an image): {n} file{'s' if n > 1 else ''}")
            lines.extend(f"  {group}" for group in group_files(self.others))
        if not self.ok:
            lines.append("nothing usable: add videos (mp4/avi/mov/mkv/webm/ts/...) or folders of jpg/png frames, "
                         "or lower data.num_frames / data.frame_stride")
        return "\n".join(lines)


def group_files(paths: list[str], show: int = 3) -> list[str]:
    """One line per folder and extension: "labels/*.txt: 45 files (VID01.txt, VID02.txt, VID03.txt, ...)"."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in paths:
        q = Path(p)
        groups[(str(q.parent), q.suffix.lower() or "(no extension)")].append(q.name)
    out = []
    for (folder, ext), names in groups.items():
        where = "" if folder == "." else folder + "/"
        listed = ", ".join(names[:show]) + (f", ... ({len(names) - show} more)" if len(names) > show else "")
        out.append(f"{where}*{ext}: {listed}" if ext.startswith(".") else f"{where}{listed}")
    return out


def skipped_summary(skipped: list[tuple[str, str]], what: str = "sources") -> str:
    """"2 sources skipped: a.mp4 (zero bytes); clips/b (empty folder)" — each skipped source with its reason,
    for messages that used to say only "(N sources skipped)"."""
    if not skipped:
        return f"no {what} skipped"
    return f"{len(skipped)} {what} skipped: " + "; ".join(f"{p} ({why})" for p, why in skipped)


def check_dataset(root: str | Path, cfg: DataConfig, progress: bool = True) -> CheckReport:
    root = Path(root)
    report = CheckReport(root)
    span = clip_span(cfg.num_frames, cfg.frame_stride)
    for e in build_index(root, cfg.index_dir, progress=progress):
        if not e.ok:
            report.skipped.append((e.path, e.error))
            continue
        n = len(clip_starts(e, cfg.num_frames, cfg.frame_stride))
        if n == 0:
            report.skipped.append((e.path, f"too short for one clip ({e.num_frames} frames, a clip needs {span}: "
                                           f"{cfg.num_frames}+1 frames every {cfg.frame_stride})"))
            continue
        if e.note:
            report.warnings.append((e.path, e.note))
        report.usable.append((e, n))
    report.others = [str(p.relative_to(root)) for p in scan(root).others]
    return report
