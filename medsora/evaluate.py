"""`medsora eval`: FVD, CD-FVD, FID, IS and frame consistency of generated videos against real ones.

    results = evaluate("data/colon", "samples/colon", num=2048, weights_dir="weights", out="eval.json")
    results["fvd"]  # {"value": 462.0, "n_real": 210, "n_fake": 2048, ...}
                    # or {"value": None, "reason": "weights of I3D ... not found: put i3d_torchscript.pt in ..."}

Clips (StyleGAN-V's `fvd2048_16f`): one 16-frame clip per source, at most `num` per set, sources in
sorted order. Real clips start at a random frame (seeded) and take every `real_stride`-th frame, as
the training clips do (16 frames every 3rd); generated clips are their first 16 frames. Every frame
is centre-cropped and resized to `resolution` (the training size) and kept as uint8, then each
network applies its own protocol (docs/metrics.md). FID and IS use every frame of those clips; IS
and FC are computed on the generated set only. A metric whose weights are missing is reported as not
computed, with the file to put where; the others still run. Real-set statistics are cached under
`cache_dir`, keyed by a hash of the real files' contents, the clip plan and the network's weights.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .data.check import skipped_summary
from .data.clips import to_tensor
from .data.index import build_index
from .data.video import list_frame_images, read_frames
from .errors import MedsoraError
from .metrics.frechet import FeatureStats, frechet_distance
from .metrics.weights import WEIGHTS, MissingWeights, find_weights
from .runtime import default_device, init_distributed
from .weights_check import WeightsError

log = logging.getLogger(__name__)

METRICS = ("fvd", "cdfvd", "fid", "isv", "is", "fc")   # isv: the tables' "IS" (C3D); is: IS of the frames
FRECHET = ("fvd", "cdfvd", "fid")  # metrics that compare the fake set with real statistics
NETWORK = {"fvd": "i3d", "cdfvd": "videomae", "fid": "inception", "isv": "c3d", "is": "inception", "fc": "clip"}
REAL_CLIPS = ("per-video", "fill")   # StyleGAN-V's one clip per real video, or seeded clips until --num-clips
NUM_FRAMES = 16
DEFAULT_CACHE = Path.home() / ".cache" / "medsora" / "eval"


class EvalError(MedsoraError, ValueError):
    pass


# ----------------------------------------------------------------------------------------------
# networks

def load_extractor(network: str, weights_dir=None, device="cpu"):
    """The feature extractor of `network` from its local weights; raises MissingWeights / ImportError."""
    path = find_weights(network, weights_dir)
    if network == "i3d":
        from .metrics.fvd import I3DFeatures
        from .metrics.i3d import load_i3d

        ext = I3DFeatures(load_i3d(path, device), device)
    elif network == "videomae":
        from .metrics.videomae import VideoMAEFeatures, load_videomae

        ext = VideoMAEFeatures(load_videomae(path, device), device)
    elif network == "c3d":
        from .metrics.c3d import C3DProbs, load_c3d

        ext = C3DProbs(load_c3d(path, device), device, path)
    elif network == "inception":
        from .metrics.inception import InceptionFeatures, load_inception

        ext = InceptionFeatures(load_inception(path, device), device)
    else:
        from .metrics.clip_fc import CLIPEmbeddings, load_clip

        ext = CLIPEmbeddings(load_clip(path, device), device, folder=path)
    ext.weights = path
    return ext


def _weights_id(path: Path) -> list:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p.relative_to(path.parent)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


# ----------------------------------------------------------------------------------------------
# clips

def plan_clips(root, num: int, stride: int = 1, random_start: bool = False, seed: int = 0,
               index_dir="", progress: bool = True, fill: bool = False):
    """[(source path, frame indices)] — one 16-frame clip per usable source, at most `num` — and the
    list of (source, reason) skipped. `fill`: after one clip per source, more seeded random clips of the sources
    in turn (each distinct from the others of its source while it has room) until `num` clips."""
    root = Path(root)
    entries = build_index(root, index_dir, progress=progress)
    rng = np.random.default_rng(seed)
    span = (NUM_FRAMES - 1) * stride + 1
    plan, skipped = [], []
    for e in entries:
        if len(plan) >= num:
            break
        if not e.ok:
            skipped.append((e.path, e.error))
        elif e.num_frames < span:
            skipped.append((e.path, f"{e.num_frames} frames, a clip needs {span} (16 frames every {stride})"))
        else:
            start = int(rng.integers(0, e.num_frames - span + 1)) if random_start else 0
            plan.append((root / e.path, list(range(start, start + span, stride))))
    if fill and plan and len(plan) < num:
        plan = _fill_plan(plan, num, span, stride, entries, root, seed)
    return plan, skipped


def _fill_plan(plan, num, span, stride, entries, root, seed):
    """More clips of the planned sources, in turn, at seeded random starts not used yet for that source."""
    frames = {root / e.path: e.num_frames for e in entries if e.ok}
    used = {path: {idx[0]} for path, idx in plan}
    rng = np.random.default_rng([seed, 1])
    out, k = list(plan), 0
    while len(out) < num:
        path = plan[k % len(plan)][0]
        free = [s for s in range(frames[path] - span + 1) if s not in used[path]]
        start = int(rng.choice(free)) if free else int(rng.integers(0, frames[path] - span + 1))
        used[path].add(start)
        out.append((path, list(range(start, start + span, stride))))
        k += 1
    return out


def content_hash(plan) -> str:
    """blake2b of the bytes of every file the clips are read from, and of the clip plan itself."""
    h = hashlib.blake2b(digest_size=16)
    for path, indices in plan:
        files = list_frame_images(path) if path.is_dir() else [path]
        h.update(json.dumps([path.name, indices]).encode())
        for f in files:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


class _Clips(torch.utils.data.Dataset):
    def __init__(self, plan, resolution: int | None):
        self.plan, self.resolution = plan, resolution

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, i):
        path, indices = self.plan[i]
        frames = read_frames(path, indices)  # (16, H, W, 3) uint8
        if self.resolution is None:
            return torch.from_numpy(frames)
        x = to_tensor(frames, self.resolution)  # (16, 3, r, r) in [-1, 1]: centre crop + resize, as training
        return ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)  # back to uint8 (16, r, r, 3)


def iter_clips(plan, resolution, batch_size, workers, desc, progress):
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(_Clips(plan, resolution), batch_size=batch_size, num_workers=workers)
    with tqdm(total=len(plan), desc=desc, unit="clip", disable=not progress) as bar:
        for videos in loader:  # (b, 16, r, r, 3) uint8
            yield videos
            bar.update(len(videos))


def _source_files(path: Path) -> list[Path]:
    return list_frame_images(path) if path.is_dir() else [path]


def _source_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    for f in _source_files(path):
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def same_sources(real, fake, real_plan, fake_plan) -> str | None:
    """A warning when the generated clips are read from the same files as the real ones (the same folder, or
    sources with the same bytes); None otherwise. Only sources whose file sizes match are read."""
    if Path(real).resolve() == Path(fake).resolve():
        return (f"--real and --fake are the same folder ({Path(real).resolve()}): the metrics compare the real "
                "videos with themselves, not generated ones")

    def sizes(path):
        return tuple(f.stat().st_size for f in _source_files(path))

    real_by_size: dict[tuple, list[Path]] = {}
    for path, _ in real_plan:
        real_by_size.setdefault(sizes(path), []).append(path)
    real_digests: dict[Path, str] = {}
    same = []
    for path, _ in fake_plan:
        candidates = real_by_size.get(sizes(path), [])
        if not candidates:
            continue
        digest = _source_digest(path)
        for r in candidates:
            if r not in real_digests:
                real_digests[r] = _source_digest(r)
            if real_digests[r] == digest:
                same.append((path, r))
                break
    if not same:
        return None
    return (f"{len(same)} of {len(fake_plan)} generated sources are byte-identical to real ones (e.g. {same[0][0]} "
            f"= {same[0][1]}): the metrics compare real videos with themselves, not generated ones")


def rank_warning(metric: str, side: str, stats: FeatureStats, clips: int) -> str | None:
    """A warning when a set gives fewer feature vectors than a Fréchet metric's covariance needs (dim + 1)."""
    if stats.mean is None:
        return None
    dim = len(stats.mean)
    if stats.n > dim:
        return None
    per_clip = max(1, stats.n // max(clips, 1))
    need_clips = -(-(dim + 1) // per_clip)
    unit = f"{stats.n} frames ({clips} clips x {per_clip})" if per_clip > 1 else f"{stats.n} clips"
    return (f"{metric}: the {side} set gives {unit}, fewer than the {dim} + 1 its {dim}-dimensional covariance "
            f"needs to be full rank; the value is unreliable (singular covariance): use at least {need_clips} "
            f"{side} clips")


# ----------------------------------------------------------------------------------------------
# the evaluation

@dataclass
class _Job:
    """This process's share of an evaluation under torchrun: every N-th clip of each plan. Statistics are merged,
    per-clip values put back in plan order, so N processes report what one process does (up to float64 rounding
    of the merged statistics). One process: all of it, nothing exchanged."""

    rank: int = 0
    world: int = 1
    group: object = None
    started: bool = False

    @classmethod
    def start(cls) -> "_Job":
        rank, world, _, started = init_distributed()
        group = dist.new_group(backend="gloo") if world > 1 else None  # Python objects travel over gloo, GPUs or not
        return cls(rank, world, group, started)

    def share(self, plan: list) -> list:
        return plan[self.rank::self.world]

    def _gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def first(self, fn):
        """fn() computed by process 0 alone and handed to every process (e.g. a hash that reads every file)."""
        if self.world == 1:
            return fn()
        box = [fn() if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def merge(self, stats: FeatureStats) -> FeatureStats:
        if self.world == 1:
            return stats
        total = FeatureStats()
        for part in self._gather(stats):
            total.merge(part)
        return total

    def in_plan_order(self, items: list) -> list:
        """Every process's per-clip items, in the order of the whole plan (clip g came from process g mod N)."""
        if self.world == 1:
            return items
        parts = self._gather(items)
        return [parts[g % self.world][g // self.world] for g in range(sum(map(len, parts)))]

    def finish(self) -> None:
        if self.started:
            dist.destroy_process_group()


def evaluate(real, fake, num: int = 2048, metrics=METRICS, weights_dir=None, batch_size: int = 8,
             device=None, cache_dir=DEFAULT_CACHE, progress: bool = True, out=None, real_stride: int = 3,
             resolution: int | None = 128, seed: int = 0, workers: int = 2, is_splits: int = 10,
             real_clips: str = "per-video") -> dict:
    """Compute `metrics` of the videos under `fake` against those under `real`.

    Returns {metric: {"value": float, ...}} or {metric: {"value": None, "reason": ...}} per metric;
    writes `out` (JSON) and the same path with `.md` (a table) when `out` is given.
    `cache_dir=None` switches the real-statistics cache off. `real_clips`: "per-video" (StyleGAN-V: one clip per
    real video, what the published tables used) or "fill" (seeded random clips of the videos in turn until `num`).
    """
    metrics = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if isinstance(real_stride, bool) or not isinstance(real_stride, int) or real_stride < 1:
        raise EvalError(f"--real-stride {real_stride!r}: the step between the frames of a real clip must be a whole "
                        "number >= 1 (3 as the training clips; 1 for folders of 16-frame clips)")
    if real_clips not in REAL_CLIPS:
        raise EvalError(f"--real-clips {real_clips!r}: choose per-video (StyleGAN-V, the published tables) or fill")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise EvalError(f"--num {num!r}: the number of clips per set must be a whole number >= 1 (2048 by default)")
    for what, root in (("real", real), ("generated", fake)):
        if not Path(root).exists():
            raise FileNotFoundError(f"the folder of {what} videos {root} does not exist")
    job = _Job.start()
    device = default_device(device)
    progress = progress and job.rank == 0
    results: dict[str, dict] = {}

    extractors = {}
    for net in dict.fromkeys(NETWORK[m] for m in metrics):
        try:
            extractors[net] = load_extractor(net, weights_dir, device)
        except (MissingWeights, WeightsError, ImportError) as e:   # missing or damaged weights: that metric is skipped
            reason = f"{e}; install it with `pip install pytorch-fid`" if isinstance(e, ImportError) else str(e)
            for m in metrics:
                if NETWORK[m] == net:
                    results[m] = {"value": None, "reason": reason}
    active = [m for m in metrics if m not in results]

    fake_plan, fake_skipped = plan_clips(fake, num, stride=1, progress=progress)
    if not fake_plan and active:
        raise EvalError(f"no generated clip of {NUM_FRAMES} frames under {fake} ({skipped_summary(fake_skipped)})")
    if fake_skipped and job.rank == 0:
        log.warning("generated videos under %s: %s", fake, skipped_summary(fake_skipped))
    frechet = [m for m in active if m in FRECHET]
    real_stats, n_real, real_skipped, warnings = {}, 0, [], []
    if frechet:
        real_plan, real_skipped = plan_clips(real, num, stride=real_stride, random_start=True, seed=seed,
                                             progress=progress, fill=real_clips == "fill")
        if not real_plan:
            raise EvalError(f"no real clip under {real}: {skipped_summary(real_skipped)}; a clip needs "
                            f"{(NUM_FRAMES - 1) * real_stride + 1} frames (real_stride={real_stride}; use 1 for "
                            f"folders of {NUM_FRAMES}-frame clips)")
        if real_skipped and job.rank == 0:
            log.warning("real videos under %s: %s", real, skipped_summary(real_skipped))
        n_real = len(real_plan)
        same = job.first(lambda: same_sources(real, fake, real_plan, fake_plan))
        if same:
            warnings.append(same)
        real_stats = _real_stats(frechet, extractors, real_plan, resolution, batch_size, workers, cache_dir,
                                 progress, protocol=[num, real_stride, resolution, seed, real_clips], job=job)

    if job.world > 1:
        log.info("process %d of %d evaluates %d of %d generated clips", job.rank, job.world,
                 len(job.share(fake_plan)), len(fake_plan))
    fake_stats = {m: FeatureStats() for m in frechet}
    probs, fc, isv = [], [], []  # per clip of this share: (16, 1008) frame probabilities, FC, (101,) C3D probabilities
    for videos in iter_clips(job.share(fake_plan), resolution, batch_size, workers, "generated clips", progress):
        feats = batch_features(videos, active, extractors)
        for m in frechet:
            fake_stats[m].update(feats[m])
        if "is" in active:
            probs += list(feats["is"].cpu().unflatten(0, (len(videos), -1)))
        if "fc" in active:
            fc += list(feats["fc"].cpu())
        if "isv" in active:
            isv += list(feats["isv"])
    fake_stats = {m: job.merge(st) for m, st in fake_stats.items()}
    probs, fc, isv = job.in_plan_order(probs), job.in_plan_order(fc), job.in_plan_order(isv)

    for m in active:
        entry = {"network": WEIGHTS[NETWORK[m]].network, "weights": str(extractors[NETWORK[m]].weights),
                 "n_fake": len(fake_plan)}
        if m in FRECHET:
            s_r, s_f = real_stats[m], fake_stats[m]
            entry = {"value": frechet_distance(s_r.mean, s_r.cov, s_f.mean, s_f.cov), **entry, "n_real": n_real}
            notes = warnings + [w for w in (rank_warning(m, "real", s_r, n_real),
                                            rank_warning(m, "generated", s_f, len(fake_plan))) if w]
            if notes:
                entry["warnings"] = notes
        elif m == "isv":
            from .metrics.c3d import video_inception_score

            mean, std = video_inception_score(torch.stack(isv).numpy(), is_splits)
            entry = {"value": mean, "std": std, **entry, "splits": is_splits}
        elif m == "is":
            from .metrics.inception import inception_score

            mean, std = inception_score(torch.cat(probs).numpy(), is_splits)
            entry = {"value": mean, "std": std, **entry}
        else:
            entry = {"value": float(torch.stack(fc).mean()), **entry}
        results[m] = entry
    results = {m: results[m] for m in metrics}
    job.finish()
    if out and job.rank == 0:
        protocol = eval_protocol(num, real_stride, resolution, seed, real_clips, is_splits, n_real, len(fake_plan),
                                 len(real_skipped), len(fake_skipped), extractors, cache_dir)
        write_report(results, out, real=str(real), fake=str(fake), protocol=protocol,
                     warnings=all_warnings(results),
                     skipped={"real": [[str(p), why] for p, why in real_skipped],
                              "fake": [[str(p), why] for p, why in fake_skipped]})
    return results


def eval_protocol(num, real_stride, resolution, seed, real_clips, is_splits, n_real, n_fake, real_skipped,
                  fake_skipped, extractors, cache_dir) -> dict:
    """What two labs compare before comparing numbers: clip counts, frames, stride, resolution, seeds, how the real
    clips were chosen, each detector file's sha256 and the package version."""
    from . import __version__

    how = ("per-video: one 16-frame clip per real video at a seeded random start, sources in sorted order "
           "(StyleGAN-V, the published tables)" if real_clips == "per-video" else
           "fill: one clip per real video, then more seeded random clips of the videos in turn until --num-clips")
    return {"num": num, "frames": NUM_FRAMES, "real_stride": real_stride, "fake_stride": 1, "resolution": resolution,
            "seed": seed, "isv_shuffle_seed": 42, "is_splits": is_splits, "real_clips": real_clips,
            "real_clip_choice": how, "n_real": n_real, "n_fake": n_fake, "real_skipped": real_skipped,
            "fake_skipped": fake_skipped, "medsora": __version__,
            "detectors": {net: {"file": str(ext.weights), "sha256": weights_sha256(Path(ext.weights), cache_dir)}
                          for net, ext in extractors.items()}}


def weights_sha256(path: Path, cache_dir=DEFAULT_CACHE) -> str:
    """sha256 of a weights file (of a folder: of its files' names and digests, in order), remembered in
    cache_dir/sha256.json by path, size and modification time, so a 4 GB detector is read once."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    key = json.dumps([str(path.resolve()), [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]])
    memo_path = Path(cache_dir) / "sha256.json" if cache_dir is not None else None
    memo = {}
    if memo_path is not None and memo_path.exists():
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
    if key in memo:
        return memo[key]
    from .checkpoint import file_sha256, write_json_atomic

    value = file_sha256(path) if not path.is_dir() else hashlib.sha256(
        "".join(f"{f.relative_to(path)}:{file_sha256(f)}\n" for f in files).encode()).hexdigest()
    if memo_path is not None:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(memo_path, {**memo, key: value})
    return value


def all_warnings(results: dict) -> list[str]:
    """The warnings of every metric, each once, in order."""
    return list(dict.fromkeys(w for r in results.values() for w in r.get("warnings", [])))


def batch_features(videos, names, extractors) -> dict:
    """Per metric in `names`, what a batch of clips (b, 16, r, r, 3) uint8 contributes:
    fvd / cdfvd (b, d) clip features, fid (b·16, 2048) frame features, is (b·16, 1008) class
    probabilities, fc (b,) frame consistency. The Inception runs once for FID and IS."""
    out = {}
    for m in ("fvd", "cdfvd"):
        if m in names:
            out[m] = extractors[NETWORK[m]](videos)
    if "fid" in names or "is" in names:
        frames = videos.flatten(0, 1)  # (b t) h w c
        out["fid"], out["is"] = extractors["inception"](frames, with_probs="is" in names)
    if "isv" in names:
        out["isv"] = extractors["c3d"](videos)  # (b, 101)
    if "fc" in names:
        from .metrics.clip_fc import frame_consistency

        emb = extractors["clip"](videos.flatten(0, 1))  # (b t) d
        out["fc"] = frame_consistency(emb.unflatten(0, videos.shape[:2]))  # (b,)
    return out


def _real_stats(names, extractors, plan, resolution, batch_size, workers, cache_dir, progress, protocol,
                job: _Job | None = None):
    """Real-set statistics of each metric in `names`, from the cache where possible."""
    job = job or _Job()
    stats, paths = {}, {}
    if cache_dir is not None:
        digest = job.first(lambda: content_hash(plan))   # reads every real file: once, not once per process
        for m in names:
            key = json.dumps([m, digest, protocol, _weights_id(Path(extractors[NETWORK[m]].weights))])
            paths[m] = Path(cache_dir) / f"real-{m}-{hashlib.sha1(key.encode()).hexdigest()[:20]}.npz"
            if paths[m].exists():
                stats[m] = FeatureStats.load(paths[m])
                log.info("real %s statistics from the cache %s", m, paths[m])
    todo = [m for m in names if m not in stats]
    if todo:
        fresh = {m: FeatureStats() for m in todo}
        for videos in iter_clips(job.share(plan), resolution, batch_size, workers, "real clips", progress):
            feats = batch_features(videos, todo, extractors)
            for m in todo:
                fresh[m].update(feats[m])
        for m in todo:
            stats[m] = job.merge(fresh[m])
            if m in paths and job.rank == 0:
                stats[m].save(paths[m])
    return stats


# ----------------------------------------------------------------------------------------------
# report

NAMES = {"fvd": "FVD ↓", "cdfvd": "CD-FVD ↓", "fid": "FID ↓", "isv": "IS ↑", "is": "IS (frames) ↑", "fc": "FC ↑"}
TABLE2 = ("fvd", "cdfvd", "fid", "isv", "fc")   # the column order of the paper's Table 2


def table2_row(results: dict, name: str = "this run") -> str:
    """Two markdown lines: the header and one row in the column order of the paper's Table 2 (FVD, CD-FVD, FID,
    IS, FC); "-" where a metric was not computed (IS is the video IS of the tables, from C3D)."""
    def cell(m):
        r = results.get(m)
        return "-" if not r or r.get("value") is None else f"{r['value']:.2f}"
    return ("| Method | FVD ↓ | CD-FVD ↓ | FID ↓ | IS ↑ | FC ↑ |\n|---|---|---|---|---|---|\n"
            f"| {name} | " + " | ".join(cell(m) for m in TABLE2) + " |\n")


def format_table(results: dict) -> str:
    """Markdown table: metric | value | clips (real / generated) | network or reason."""
    rows = ["| metric | value | clips (real / generated) | network / reason |", "|---|---|---|---|"]
    for m, r in results.items():
        if r["value"] is None:
            rows.append(f"| {NAMES.get(m, m)} | not computed | | {r['reason']} |")
            continue
        value = f"{r['value']:.2f}" + (f" ± {r['std']:.2f}" if "std" in r else "")
        clips = f"{r.get('n_real', '-')} / {r['n_fake']}"
        rows.append(f"| {NAMES.get(m, m)} | {value} | {clips} | {r['network']} ({Path(r['weights']).name}) |")
    rows += [f"\nwarning: {w}" if i == 0 else f"warning: {w}" for i, w in enumerate(all_warnings(results))]
    return "\n".join(rows) + "\n"


def write_report(results: dict, out, **info) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**info, "metrics": results}, indent=2) + "\n")
    out.with_suffix(".md").write_text(format_table(results) + "\nIn the layout of the paper's Table 2:\n\n"
                                      + table2_row(results))
    return out
