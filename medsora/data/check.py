"""`medsora data check DIR`: what is usable in a dataset folder, and every skipped file by name with its reason."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig
from .index import Entry, build_index, clip_span, clip_starts


@dataclass
class CheckReport:
    root: Path
    usable: list[tuple[Entry, int]] = field(default_factory=list)   # (entry, clips)
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (relative path, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)

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
        if not self.ok:
            lines.append("nothing usable: add videos (mp4/avi/mov/mkv/webm) or folders of jpg/png frames, "
                         "or lower data.num_frames / data.frame_stride")
        return "\n".join(lines)


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
    return report
