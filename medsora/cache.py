"""`medsora cache`: encode every clip once into sharded safetensors; training reads this, never the VAE.

Layout of a cache folder:
    manifest.json          what was encoded with what (VAE fingerprint, clip geometry, shards done)
    shard-00000.safetensors ...
Clip `i` is a window of its source; the cache holds `data.clip_offsets` = K evenly spaced starts `o` in it
(training draws one per epoch), each in both flip orientations `f` (0 = as read, 1 = horizontally flipped),
as the VAE posterior's mean and std (training draws a latent per step):
    "{i}.{o}.{f}.video.mean" / ".std"  (f_v, C, h, w)  the first `num_frames` frames from start o
    "{i}.{f}.images.mean" / ".std"     (f_i, C, h, w)  `num_images` frames of the clip's own video, one chunk;
                                                       training appends them to clips of *other* videos
    "{i}.{o}.{f}.flow.{layer}"         (f_v, l, d)     alignment targets per DINO layer (with --flow), fp16
The manifest also records each clip's source and the per-channel latent normalisation (`latent_norm`,
measured over all cached clips; see medsora/latent_norm.py). A shard is written atomically (its clips,
failures and latent sums in its own metadata) and recorded in the manifest afterwards, so an interrupted run
resumes at the missing shards; under torchrun the processes share the shards. A cache built with another VAE
or clip geometry is refused, never overwritten.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .checkpoint import file_sha256, write_json_atomic
from .config import Config, latent_frames
from .data.clips import ClipDataset
from .data.video import VideoError
from .errors import MedsoraError
from .latent_norm import LatentNorm, wants_measured
from .runlock import LOCK, folder_lock
from .runtime import init_distributed

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
CACHE_VERSION = 2   # 1: one start per window, posterior means, images of other videos fixed per clip


class CacheError(MedsoraError, RuntimeError):
    pass


def _geometry(cfg: Config) -> dict:
    d = cfg.data
    return {"num_frames": d.num_frames, "frame_stride": d.frame_stride, "size": d.size, "num_images": d.num_images,
            "offsets": d.clip_offsets}


def _check_same(manifest: dict, key: str, ours, cache_dir: Path, fix: str) -> None:
    if manifest.get(key) != ours:
        raise CacheError(f"the cache {cache_dir} was built with {key}={manifest.get(key)!r}, this run has "
                         f"{key}={ours!r}; {fix}. Nothing was written.")


def _fresh_start(cache_dir: Path) -> str:
    return (f"build the cache anew into another folder (`medsora cache --out NEW_FOLDER ...`), or delete {cache_dir} "
            "and re-run the same `medsora cache` command")


def _bad_manifest(path: Path, why: str) -> CacheError:
    return CacheError(f"{path} is not a valid cache manifest ({why}); {_fresh_start(path.parent)}")


def _read_manifest(path: Path) -> dict:
    """manifest.json, checked: UTF-8 JSON, the format version, and the fields readers rely on; CacheError naming
    the file and the fix otherwise."""
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _bad_manifest(path, f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    except ValueError as e:
        raise _bad_manifest(path, f"not JSON: {e}") from None
    except OSError as e:
        raise CacheError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from None
    if not isinstance(manifest, dict):
        raise _bad_manifest(path, f"a JSON {type(manifest).__name__}, not an object")
    _check_version(manifest, path.parent)
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    expect = {"geometry": (dict, "an object"), "shard_size": (is_int, "a whole number"),
              "shards": (dict, "an object of shard file -> clip numbers"), "stats": (dict, "an object"),
              "failed": (list, "a list"), "clip_sources": (list, "a list"), "flow_layers": (list, "a list")}
    for key, (kind, words) in expect.items():
        if key not in manifest:
            raise _bad_manifest(path, f"{key!r} missing")
        ok = isinstance(manifest[key], kind) if isinstance(kind, type) else kind(manifest[key])
        if not ok:
            raise _bad_manifest(path, f"{key!r} is {json.dumps(manifest[key])[:60]}, it must be {words}")
    for name, ids in manifest["shards"].items():
        if not (isinstance(ids, list) and all(is_int(i) for i in ids)) or Path(name).name != name:
            raise _bad_manifest(path, f"the shard entry {name!r}: {json.dumps(ids)[:60]} is not a list of clip numbers")
    if not is_int(manifest["geometry"].get("offsets")) or manifest["geometry"]["offsets"] < 1:
        raise _bad_manifest(path, "'geometry.offsets' must be a whole number >= 1")
    if not isinstance(manifest.get("files", {}), dict):
        raise _bad_manifest(path, "'files' must be an object of shard file -> size and sha256")
    return manifest


def _file_record(path: Path) -> dict:
    """Size and sha256 of a shard file, as the manifest records them."""
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def _shard_damage(cache_dir: Path, manifest: dict, name: str, deep: bool) -> str | None:
    """Why the recorded shard `name` cannot be used (missing, truncated, corrupt, other clips), or None.
    Cheap checks (size, safetensors header, keys) always; the sha256 the manifest records when `deep`."""
    path = cache_dir / name
    if not path.is_file():
        return "the file is missing"
    record = manifest.get("files", {}).get(name)
    size = path.stat().st_size
    if isinstance(record, dict) and record.get("size") != size:
        return f"{size} bytes, {record.get('size')} were written"
    try:
        with safe_open(str(path), framework="pt") as f:
            keys, meta = set(f.keys()), f.metadata() or {}
        clips = json.loads(meta.get("clips", "null"))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a broken file
        return f"not a readable safetensors file: {e}"
    if clips != manifest["shards"][name]:
        return f"it holds clips {clips}, the manifest records {manifest['shards'][name]}"
    offsets = manifest["geometry"]["offsets"]
    wanted = [f"{i}.{o}.{f}.video.{part}" for i in clips for o in range(offsets) for f in (0, 1)
              for part in ("mean", "std")]
    wanted += [f"{i}.{o}.{f}.flow.{layer}" for i in clips for o in range(offsets) for f in (0, 1)
               for layer in manifest.get("flow_layers", [])]
    lacking = [k for k in wanted if k not in keys]
    if lacking:
        return f"{len(lacking)} tensors missing (e.g. {lacking[0]})"
    if deep and isinstance(record, dict) and record.get("sha256") and _file_record(path)["sha256"] != record["sha256"]:
        return "its sha256 differs from the one recorded when it was written"
    return None


@dataclass
class FlowTargets:
    """What `--flow` needs: fn(clip (F+1, 3, H, W) in [-1, 1]) -> ({layer: (f_v, l, d)} as read, same flipped)."""

    fn: object
    layers: tuple[int, ...]
    description: str


def flow_targets_from_config(cfg: Config, device: str | torch.device = "cpu") -> FlowTargets:
    """Flow estimator + DINO + Sampling() as the config says; a missing weight file is a clear error."""
    from .flow.dino import load_dino
    from .flow.patch_features import FlowPatchFeatures
    from .flow.flow import build_flow
    from .flow.targets import Sampling, clip_targets

    f, m = cfg.flow, cfg.model
    if not m.align_layers:
        raise CacheError("model.align_layers is empty: no block is aligned, so there is no flow target to cache")
    features = flow_features_of(cfg)
    if features == "dino" and not f.dino_weights:
        raise CacheError("flow targets need DINO ViT-S/8 weights: set flow.dino_weights=/path/to/"
                         "dino_deitsmall8_pretrain.pth (see README, 'Pretrained weights'), or flow.features=patches "
                         "for weight-free features (not the paper's method)")
    if f.method == "raft":
        method, iters = "raft_large", f"|iters:{f.raft_iters}"
        estimator = build_flow(method, f.raft_weights or "hub", num_flow_updates=f.raft_iters).to(device)
    else:
        method, iters = f.method, ""
        estimator = build_flow(method).to(device)
    if features == "dino":
        dino = load_dino(f.dino_weights, img_size=cfg.data.size).to(device)
        feature_desc = f"dino:{Path(f.dino_weights).name}"
    else:
        log.warning("alignment targets from weight-free flow-patch features, not DINO (flow.features=%s%s): "
                    "not the paper's method", f.features, ", no flow.dino_weights" if f.features == "auto" else "")
        dino, feature_desc = FlowPatchFeatures(), "patches:v1"
    tokens = (m.input_size[0] // m.patch_size) * (m.input_size[1] // m.patch_size)
    sampling = Sampling(cfg.data.num_frames, latent_frames(cfg.data.num_frames), (tokens, m.hidden_size),
                        grid=f.resize == "grid")
    layers = tuple(sorted(set(m.align_layers)))

    def fn(clip: torch.Tensor):
        return clip_targets(clip.to(device), estimator, dino, layers, sampling, f.colour)

    # compared with the manifest's: a cache built with other flow settings is refused (the default token resize
    # adds nothing, so caches written before that option existed stay valid)
    desc = f"{method}:{Path(f.raft_weights).name if f.raft_weights else 'default'}{iters}" \
           f"|{feature_desc}|{f.colour}|{tokens}x{m.hidden_size}" \
           f"{'|resize:grid' if f.resize == 'grid' else ''}"
    return FlowTargets(fn, layers, desc)


def flow_features_of(cfg: Config) -> str:
    """"dino" or "patches": the features `cache --flow` computes for this config (auto: DINO when its weights are
    given)."""
    f = cfg.flow.features
    return ("dino" if cfg.flow.dino_weights else "patches") if f == "auto" else f


def vae_source(cfg: Config) -> dict:
    """cfg.vae's path and compensation, local paths made absolute; {} when the VAE was given as an object."""
    if not cfg.vae.path:
        return {}
    absolute = lambda p: str(Path(p).expanduser().resolve()) if p and Path(p).expanduser().exists() else p  # noqa: E731
    return {"path": absolute(cfg.vae.path), "compensation": absolute(cfg.vae.compensation)}


@torch.no_grad()
def build_cache(cfg: Config, vae, cache_dir: str | Path, flow: FlowTargets | None = None, shard_size: int = 32,
                progress: bool = True) -> Path:
    """Encode all clips of `cfg.data.root` (both flips) into `cache_dir`; resumes, skips shards already done.

    Under torchrun each process encodes every N-th missing shard; process 0 alone writes the manifest, and
    records the shards the others wrote (also those of a run killed before it could: on the next run). The
    folder is locked while a cache is built into it: a second `cache` into it is refused, naming the holder."""
    cache_dir = Path(cache_dir)
    if int(os.environ.get("RANK", "0")) != 0:   # torchrun: process 0 holds the lock for the group
        return _build_cache(cfg, vae, cache_dir, flow, shard_size, progress)
    existed = cache_dir.exists()
    try:
        with folder_lock(cache_dir, "cache"):
            return _build_cache(cfg, vae, cache_dir, flow, shard_size, progress)
    except BaseException:
        if not existed and cache_dir.exists() and {p.name for p in cache_dir.iterdir()} <= {LOCK}:
            shutil.rmtree(cache_dir, ignore_errors=True)   # a refused or failed first run leaves no folder
        raise


def _build_cache(cfg: Config, vae, cache_dir: Path, flow: FlowTargets | None, shard_size: int,
                 progress: bool) -> Path:
    rank, world, _, started_pg = init_distributed()
    cache_dir.mkdir(parents=True, exist_ok=True)
    ds = ClipDataset(cfg.data.root, cfg.data, seed=cfg.train.seed, progress=progress and rank == 0)
    manifest_path = cache_dir / MANIFEST
    fresh = {"version": CACHE_VERSION, "vae": vae.fingerprint, "geometry": _geometry(cfg),
             "root": str(Path(cfg.data.root).resolve()), "num_clips": len(ds), "shard_size": shard_size,
             "flow": flow.description if flow else None, "flow_layers": list(flow.layers) if flow else [],
             "clip_sources": [src for src, _ in ds.clips], "shards": {}, "stats": {}, "failed": []}
    if manifest_path.exists():
        manifest = _read_manifest(manifest_path)
        _check_same(manifest, "vae", fresh["vae"], cache_dir, "use another cache folder for this VAE")
        _check_same(manifest, "geometry", fresh["geometry"], cache_dir,
                    "use another cache folder or the data settings it was built with")
        _check_same(manifest, "shard_size", shard_size, cache_dir, "keep the shard size of the cache")
        if manifest.get("flow") != fresh["flow"]:
            if manifest.get("shards") and manifest.get("flow") and flow is None:
                flow_note = "it holds flow targets, this run computes none"
            else:
                flow_note = f"flow {manifest.get('flow')!r} vs {fresh['flow']!r}"
            raise CacheError(f"the cache {cache_dir} differs in its flow targets ({flow_note}); "
                             "use another cache folder. Nothing was written.")
    else:
        manifest = fresh
    source = vae_source(cfg)
    if source:  # where the VAE was loaded from; training copies it into the run's config, for `sample`
        manifest["vae_source"] = source
    shards = [list(range(s, min(s + shard_size, len(ds)))) for s in range(0, len(ds), shard_size)]
    if rank == 0:   # the manifest exists before any shard, so every shard file belongs to it
        _drop_damaged(cache_dir, manifest, shards)
        _adopt_shards(cache_dir, manifest, len(shards))
        write_json_atomic(manifest_path, manifest)
    if world > 1:
        dist.barrier()
        if rank != 0:   # what process 0 adopted, and the damaged shards it dropped
            manifest = _read_manifest(manifest_path)
    todo = [k for k in range(len(shards)) if _shard_name(k) not in manifest["shards"]][rank::world]
    if world > 1:
        log.info("process %d of %d encodes shards %s", rank, world, todo)
    bar = tqdm(total=sum(len(shards[k]) for k in todo), desc="caching clips", unit="clip",
               disable=not (progress and rank == 0))
    for k in todo:
        tensors, done, failed, stats = {}, [], [], None
        for i in shards[k]:
            try:
                clip_tensors, clip_stats = _encode_clip(ds, i, vae, flow, cfg.data.clip_offsets)
                tensors.update(clip_tensors)
                stats = clip_stats if stats is None else [a + b for a, b in zip(stats, clip_stats)]
                done.append(i)
            except VideoError as e:
                src = ds.sources[ds.clips[i][0]].path
                log.warning("clip %d of %s could not be decoded (%s); skipped", i, src, e)
                failed.append({"clip": i, "source": src, "reason": str(e)})
            bar.update(1)
        tmp = cache_dir / (_shard_name(k) + ".tmp")
        shard_stats = None if stats is None else {"count": stats[0], "sum": stats[1].tolist(),
                                                  "sum_sq": stats[2].tolist()}
        try:
            save_file(tensors, str(tmp), metadata={"clips": json.dumps(done), "failed": json.dumps(failed),
                                                   "stats": json.dumps(shard_stats)})
            os.replace(tmp, cache_dir / _shard_name(k))
        except BaseException:   # Ctrl-C or a full disk mid-write: no half file left behind
            tmp.unlink(missing_ok=True)
            raise
        if world == 1:  # recorded at once; with several processes, process 0 records them all at the end
            _adopt_shards(cache_dir, manifest, len(shards))
            write_json_atomic(manifest_path, manifest)
    bar.close()
    if world > 1:
        dist.barrier()
    if rank == 0:   # every shard recorded: the normalisation measured over all of them
        _adopt_shards(cache_dir, manifest, len(shards))
        for key in ("shards", "stats", "files"):   # in shard order, however they were (re-)encoded
            manifest[key] = dict(sorted(manifest.get(key, {}).items()))
        if any(manifest["shards"].values()):
            manifest["latent_norm"] = _latent_norm(manifest, vae, cfg.vae.latent_norm).to_dict()
        write_json_atomic(manifest_path, manifest)
    if world > 1:
        dist.barrier()
        manifest = _read_manifest(manifest_path)
        if started_pg:
            dist.destroy_process_group()
    if not any(manifest["shards"].values()):
        raise CacheError(f"no clip of {cfg.data.root} could be encoded; run `medsora data check {cfg.data.root}`")
    return cache_dir


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def _adopt_shards(cache_dir: Path, manifest: dict, n_shards: int) -> None:
    """Record in `manifest` the shard files on disk it does not list yet (clips and failures from their metadata,
    size and sha256 of the file, so that a later run detects damage). A shard file is complete by construction
    (written to a temporary name, then renamed); one that cannot be read all the same is removed, to be encoded
    again."""
    files = manifest.setdefault("files", {})
    for k in range(n_shards):
        name = _shard_name(k)
        path = cache_dir / name
        if name not in manifest["shards"] and path.exists():
            try:
                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata() or {}
                clips, failed = json.loads(meta.get("clips", "[]")), json.loads(meta.get("failed", "[]"))
                stats = json.loads(meta.get("stats", "null"))
            except Exception as e:  # noqa: BLE001 - safetensors raises several types for a broken file
                log.warning("the cache shard %s is damaged (%s); removed, it is encoded again", path, e)
                path.unlink()
                continue
            manifest["shards"][name] = clips
            manifest["failed"] += failed
            manifest["stats"][name] = stats
            files[name] = _file_record(path)
        elif name in manifest["shards"] and name not in files and path.exists():
            files[name] = _file_record(path)   # a shard recorded before sizes and digests were


def _drop_damaged(cache_dir: Path, manifest: dict, shards: list[list[int]]) -> None:
    """Forget (and delete) every recorded shard that is missing, truncated or corrupt, so that it is encoded
    again; each one is named in a warning."""
    for k, ids in enumerate(shards):
        name = _shard_name(k)
        if name not in manifest["shards"]:
            continue
        why = _shard_damage(cache_dir, manifest, name, deep=True)
        if why is None:
            continue
        log.warning("the cache shard %s is damaged (%s); it is encoded again", cache_dir / name, why)
        (cache_dir / name).unlink(missing_ok=True)
        del manifest["shards"][name]
        manifest["stats"].pop(name, None)
        manifest.get("files", {}).pop(name, None)
        manifest.pop("latent_norm", None)   # measured again over the repaired shards
        ids = set(ids)
        manifest["failed"] = [f for f in manifest["failed"] if not (isinstance(f, dict) and f.get("clip") in ids)]


def _check_version(manifest: dict, cache_dir: Path) -> None:
    if manifest.get("version") != CACHE_VERSION:
        raise CacheError(f"the cache {cache_dir} has format {manifest.get('version')}, this medsora reads format "
                         f"{CACHE_VERSION} (fresh clip starts, posterior std and images per step); build a new cache "
                         "with `medsora cache` into another folder")


def _latent_norm(manifest: dict, vae, mode: str) -> LatentNorm:
    """The normalisation a cache's latents get: measured from the shards' latent sums, or the identity."""
    if not wants_measured(mode, vae.scaling_factor):
        return LatentNorm.identity(vae.latent_channels)
    parts = [s for s in manifest["stats"].values() if s]
    count = sum(p["count"] for p in parts)
    total = torch.tensor([p["sum"] for p in parts], dtype=torch.float64).sum(0)
    total_sq = torch.tensor([p["sum_sq"] for p in parts], dtype=torch.float64).sum(0)
    return LatentNorm.measure(count, total, total_sq)


def _encode_clip(ds: ClipDataset, i: int, vae, flow: FlowTargets | None, offsets: int):
    """The tensors of clip `i` (every start offset, both flips) and the per-channel sums of its video latents:
    (count per channel, sum of z, sum of z²), z drawn from the posterior (E[z²] = mean² + std²), float64."""
    out, device = {}, vae.device
    count, total, total_sq = 0, 0.0, 0.0
    for o in range(offsets):
        item = ds.load_clip(i, flip=False, offset=o, offsets=offsets, images="own" if o == 0 else None)
        video = item["video"]                                     # (F+1, 3, S, S)
        both = torch.stack([video, video.flip(-1)])               # (2, F+1, 3, S, S): as read, flipped
        mean, std = (z.float().cpu() for z in vae.encode_posterior(both[:, :-1].to(device)))  # the VAE sees F frames
        for f in (0, 1):
            out[f"{i}.{o}.{f}.video.mean"], out[f"{i}.{o}.{f}.video.std"] = mean[f].contiguous(), std[f].contiguous()
        dims = (0, 1, 3, 4)
        count += mean.numel() // mean.shape[2]
        total = total + mean.double().sum(dims)
        total_sq = total_sq + (mean.double().square() + std.double().square()).sum(dims)
        if o == 0 and item["images"].shape[0]:
            imgs = torch.stack([item["images"], item["images"].flip(-1)])  # one chunk of N frames, as the authors
            zi_mean, zi_std = (z.float().cpu() for z in vae.encode_posterior(imgs.to(device)))
            for f in (0, 1):
                out[f"{i}.{f}.images.mean"], out[f"{i}.{f}.images.std"] = zi_mean[f].contiguous(), zi_std[f].contiguous()
        if flow is not None:
            for f, targets in enumerate(flow.fn(video)):           # as read, flipped: {layer: (f_v, l, d)}
                for layer, h in targets.items():
                    out[f"{i}.{o}.{f}.flow.{layer}"] = h.to(torch.float16).cpu().contiguous()
    return out, (count, total, total_sq)


class LatentDataset(torch.utils.data.Dataset):
    """Reads a cache: item = {"video": (f_v,C,h,w), "images": (f_i,C,h,w), "flow": (n_layers,f_v,l,d)?, "flip", ...}.

    Each fetch of clip `index` draws from (seed, epoch, index): the flip, one of the cache's start offsets, the clip
    of *another* video whose image chunk is appended, and the posterior noise of the latents (`posterior="sample"`;
    "mode" takes the means). Latents come normalised (`self.norm`); `get(..., raw=True)` gives the VAE's own.
    `clips` selects a subset (e.g. training vs held-out clips).
    """

    def __init__(self, cache_dir: str | Path, seed: int = 0, clips: list[int] | None = None, hflip: bool = True,
                 posterior: str = "sample"):
        self.cache_dir = Path(cache_dir)
        path = self.cache_dir / MANIFEST
        if not path.exists():
            raise CacheError(f"{self.cache_dir} holds no latent cache ({MANIFEST} missing); run `medsora cache` first")
        self.manifest = _read_manifest(path)
        if "latent_norm" not in self.manifest:
            raise CacheError(f"the cache {self.cache_dir} is incomplete (its build was interrupted); run the same "
                             "`medsora cache` command again to finish it")
        if posterior not in ("sample", "mode"):
            raise ValueError(f"posterior must be sample or mode, got {posterior!r}")
        for name in self.manifest["shards"]:   # size, header and keys of each shard: cheap, before any step
            why = _shard_damage(self.cache_dir, self.manifest, name, deep=False)
            if why:
                raise CacheError(f"the cache shard {self.cache_dir / name} is damaged ({why}); re-run the same "
                                 "`medsora cache` command (same --out and settings): it re-encodes damaged shards")
        self.norm = LatentNorm.from_dict(self.manifest["latent_norm"])
        self.where = {i: name for name, ids in self.manifest["shards"].items() for i in ids}
        all_clips = sorted(self.where)
        self.clips = all_clips if clips is None else [all_clips[j] for j in clips]
        self.layers = self.manifest.get("flow_layers", [])
        self.offsets = self.manifest["geometry"]["offsets"]
        self.source_of = self.manifest["clip_sources"]
        self.seed, self.epoch, self.hflip, self.posterior = seed, 0, hflip, posterior
        self._handles: dict[str, object] = {}
        self._donors: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def subset(self, clips, hflip: bool | None = None) -> "LatentDataset":
        """The same cache restricted to `clips` (positions in this dataset), without reading the manifest again."""
        sub = copy.copy(self)
        sub.clips, sub._handles, sub._donors = [self.clips[j] for j in clips], {}, {}
        sub.hflip = self.hflip if hflip is None else hflip
        return sub

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _open(self, name: str):
        if name not in self._handles:  # opened lazily (memory-mapped), once per worker
            self._handles[name] = safe_open(str(self.cache_dir / name), framework="pt")
        return self._handles[name]

    def _latent(self, i: int, key: str, generator: torch.Generator | None, raw: bool) -> torch.Tensor:
        """Posterior mean (generator None) or a draw mean + std * noise of `{key}.mean/.std`, normalised unless raw."""
        f = self._open(self.where[i])
        z = f.get_tensor(f"{key}.mean")
        if generator is not None:
            z = z + f.get_tensor(f"{key}.std") * torch.randn(z.shape, generator=generator)
        return z if raw else self.norm.normalize(z)

    def donors(self, index: int) -> list[int]:
        """Positions of the clips whose source differs from clip `index`'s (its own when there is no other)."""
        src = self.source_of[self.clips[index]]
        if src not in self._donors:
            others = [j for j, c in enumerate(self.clips) if self.source_of[c] != src]
            if not others:
                log.warning("every clip of the cache comes from one video: joint images come from that video")
            self._donors[src] = others or [j for j, c in enumerate(self.clips) if self.source_of[c] == src]
        return self._donors[src]

    def get(self, index: int, flip: int, offset: int = 0, images_from: int | None = None,
            generator: torch.Generator | None = None, raw: bool = False) -> dict:
        """Clip `index` at start `offset` with the image chunk of clip `images_from` (default: its own chunk);
        posterior means unless a `generator` draws the latents."""
        i = self.clips[index]
        donor = self.clips[index if images_from is None else images_from]
        item = {"video": self._latent(i, f"{i}.{offset}.{flip}.video", generator, raw), "flip": bool(flip), "clip": i,
                "offset": offset, "images_from": donor}
        if self.manifest["geometry"]["num_images"]:
            item["images"] = self._latent(donor, f"{donor}.{flip}.images", generator, raw)
        else:
            item["images"] = torch.empty(0, *item["video"].shape[1:])
        if self.layers:
            f = self._open(self.where[i])
            item["flow"] = torch.stack([f.get_tensor(f"{i}.{offset}.{flip}.flow.{layer}").float() for layer in self.layers])
        return item

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        flip = int(self.hflip and rng.random() < 0.5)
        offset = int(rng.integers(0, self.offsets))
        donors = self.donors(index)
        donor = donors[int(rng.integers(0, len(donors)))]
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**62))) if self.posterior == "sample" else None
        return self.get(index, flip, offset, images_from=donor, generator=g)

    def __getstate__(self):  # safe_open handles are not picklable: reopen in each DataLoader worker
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state
