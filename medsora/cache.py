"""`medsora cache`: encode every clip once into sharded safetensors; training reads this, never the VAE.

Layout of a cache folder:
    manifest.json          what was encoded with what (VAE fingerprint, clip geometry, shards done)
    shard-00000.safetensors ...
Each clip `i` is stored in both flip orientations `f` (0 = as read, 1 = horizontally flipped):
    "{i}.{f}.video"        (f_v, C, h, w)  latents of the first `num_frames` frames
    "{i}.{f}.images"       (f_i, C, h, w)  latents of `num_images` frames of other videos, one chunk
    "{i}.{f}.flow.{layer}" (f_v, l, d)     alignment targets per DINO layer (with --flow), fp16
A shard is written atomically (its clips and failures in its own metadata) and recorded in the manifest
afterwards, so an interrupted run resumes at the missing shards; under torchrun the processes share the shards.
A cache built with another VAE or clip geometry is refused, never overwritten.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .config import Config, latent_frames
from .data.clips import ClipDataset
from .data.video import VideoError
from .errors import MedsoraError
from .runtime import init_distributed

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
CACHE_VERSION = 1


class CacheError(MedsoraError, RuntimeError):
    pass


def _geometry(cfg: Config) -> dict:
    d = cfg.data
    return {"num_frames": d.num_frames, "frame_stride": d.frame_stride, "size": d.size, "num_images": d.num_images}


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _check_same(manifest: dict, key: str, ours, cache_dir: Path, fix: str) -> None:
    if manifest.get(key) != ours:
        raise CacheError(f"the cache {cache_dir} was built with {key}={manifest.get(key)!r}, this run has "
                         f"{key}={ours!r}; {fix}. Nothing was written.")


@dataclass
class FlowTargets:
    """What `--flow` needs: fn(clip (F+1, 3, H, W) in [-1, 1]) -> ({layer: (f_v, l, d)} as read, same flipped)."""

    fn: object
    layers: tuple[int, ...]
    description: str


def flow_targets_from_config(cfg: Config, device: str | torch.device = "cpu") -> FlowTargets:
    """Flow estimator + DINO + Sampling() as the config says; a missing weight file is a clear error."""
    from .flow.dino import load_dino
    from .flow.flow import build_flow
    from .flow.targets import Sampling, clip_targets

    f, m = cfg.flow, cfg.model
    if not m.align_layers:
        raise CacheError("model.align_layers is empty: no block is aligned, so there is no flow target to cache")
    if not f.dino_weights:
        raise CacheError("flow targets need DINO ViT-S/8 weights: set flow.dino_weights=/path/to/"
                         "dino_deitsmall8_pretrain.pth (see README, 'Pretrained weights')")
    method = "raft_large" if f.method == "raft" else f.method
    estimator = build_flow(method, f.raft_weights or "hub").to(device)
    dino = load_dino(f.dino_weights, img_size=cfg.data.size).to(device)
    tokens = (m.input_size[0] // m.patch_size) * (m.input_size[1] // m.patch_size)
    sampling = Sampling(cfg.data.num_frames, latent_frames(cfg.data.num_frames), (tokens, m.hidden_size))
    layers = tuple(sorted(set(m.align_layers)))

    def fn(clip: torch.Tensor):
        return clip_targets(clip.to(device), estimator, dino, layers, sampling, f.colour)

    desc = f"{method}:{Path(f.raft_weights).name if f.raft_weights else 'default'}|dino:{Path(f.dino_weights).name}" \
           f"|{f.colour}|{tokens}x{m.hidden_size}"
    return FlowTargets(fn, layers, desc)


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
    records the shards the others wrote (also those of a run killed before it could: on the next run)."""
    rank, world, _, started_pg = init_distributed()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    ds = ClipDataset(cfg.data.root, cfg.data, seed=cfg.train.seed, progress=progress and rank == 0)
    manifest_path = cache_dir / MANIFEST
    fresh = {"version": CACHE_VERSION, "vae": vae.fingerprint, "geometry": _geometry(cfg),
             "root": str(Path(cfg.data.root).resolve()), "num_clips": len(ds), "shard_size": shard_size,
             "flow": flow.description if flow else None, "flow_layers": list(flow.layers) if flow else [],
             "shards": {}, "failed": []}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
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
        _adopt_shards(cache_dir, manifest, len(shards))
        _write_json(manifest_path, manifest)
    if world > 1:
        dist.barrier()
    todo = [k for k in range(len(shards)) if _shard_name(k) not in manifest["shards"]][rank::world]
    if world > 1:
        log.info("process %d of %d encodes shards %s", rank, world, todo)
    bar = tqdm(total=sum(len(shards[k]) for k in todo), desc="caching clips", unit="clip",
               disable=not (progress and rank == 0))
    for k in todo:
        tensors, done, failed = {}, [], []
        for i in shards[k]:
            try:
                tensors.update(_encode_clip(ds, i, vae, flow))
                done.append(i)
            except VideoError as e:
                src = ds.sources[ds.clips[i][0]].path
                log.warning("clip %d of %s could not be decoded (%s); skipped", i, src, e)
                failed.append({"clip": i, "source": src, "reason": str(e)})
            bar.update(1)
        tmp = cache_dir / (_shard_name(k) + ".tmp")
        save_file(tensors, str(tmp), metadata={"clips": json.dumps(done), "failed": json.dumps(failed)})
        os.replace(tmp, cache_dir / _shard_name(k))
        if world == 1:  # recorded at once; with several processes, process 0 records them all at the end
            _adopt_shards(cache_dir, manifest, len(shards))
            _write_json(manifest_path, manifest)
    bar.close()
    if world > 1:
        dist.barrier()
        if rank == 0:
            _adopt_shards(cache_dir, manifest, len(shards))
            _write_json(manifest_path, manifest)
        dist.barrier()
        manifest = json.loads(manifest_path.read_text())
        if started_pg:
            dist.destroy_process_group()
    if not any(manifest["shards"].values()):
        raise CacheError(f"no clip of {cfg.data.root} could be encoded; run `medsora data check {cfg.data.root}`")
    return cache_dir


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def _adopt_shards(cache_dir: Path, manifest: dict, n_shards: int) -> None:
    """Record in `manifest` the shard files on disk it does not list yet (clips and failures from their metadata).
    A shard file is complete by construction (written to a temporary name, then renamed)."""
    for k in range(n_shards):
        name = _shard_name(k)
        if name not in manifest["shards"] and (cache_dir / name).exists():
            with safe_open(str(cache_dir / name), framework="pt") as f:
                meta = f.metadata() or {}
            manifest["shards"][name] = json.loads(meta.get("clips", "[]"))
            manifest["failed"] += json.loads(meta.get("failed", "[]"))


def _encode_clip(ds: ClipDataset, i: int, vae, flow: FlowTargets | None) -> dict[str, torch.Tensor]:
    item = ds.load_clip(i, flip=False)
    video = item["video"]                                     # (F+1, 3, S, S)
    both = torch.stack([video, video.flip(-1)])               # (2, F+1, 3, S, S): as read, flipped
    device = vae.device
    z = vae.encode(both[:, :-1].to(device)).float().cpu()     # the VAE sees F frames -> (2, f_v, C, h, w)
    out = {f"{i}.{f}.video": z[f].contiguous() for f in (0, 1)}
    if item["images"].shape[0]:
        imgs = torch.stack([item["images"], item["images"].flip(-1)])  # one chunk of N frames, as the authors
        zi = vae.encode(imgs.to(device)).float().cpu()
        out.update({f"{i}.{f}.images": zi[f].contiguous() for f in (0, 1)})
    if flow is not None:
        for f, targets in enumerate(flow.fn(video)):           # as read, flipped: {layer: (f_v, l, d)}
            for layer, h in targets.items():
                out[f"{i}.{f}.flow.{layer}"] = h.to(torch.float16).cpu().contiguous()
    return out


class LatentDataset(torch.utils.data.Dataset):
    """Reads a cache: item = {"video": (f_v,C,h,w), "images": (f_i,C,h,w), "flow": (n_layers,f_v,l,d)?, "flip"}.

    The flip orientation of each item is drawn from (seed, epoch, index), like the pixel dataset.
    `clips` selects a subset (e.g. training vs held-out clips).
    """

    def __init__(self, cache_dir: str | Path, seed: int = 0, clips: list[int] | None = None, hflip: bool = True):
        self.cache_dir = Path(cache_dir)
        path = self.cache_dir / MANIFEST
        if not path.exists():
            raise CacheError(f"{self.cache_dir} holds no latent cache ({MANIFEST} missing); run `medsora cache` first")
        self.manifest = json.loads(path.read_text())
        self.where = {i: name for name, ids in self.manifest["shards"].items() for i in ids}
        all_clips = sorted(self.where)
        self.clips = all_clips if clips is None else [all_clips[j] for j in clips]
        self.layers = self.manifest.get("flow_layers", [])
        self.seed, self.epoch, self.hflip = seed, 0, hflip
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def subset(self, clips, hflip: bool | None = None) -> "LatentDataset":
        """The same cache restricted to `clips` (positions in this dataset), without reading the manifest again."""
        sub = copy.copy(self)
        sub.clips, sub._handles = [self.clips[j] for j in clips], {}
        sub.hflip = self.hflip if hflip is None else hflip
        return sub

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _open(self, name: str):
        if name not in self._handles:  # opened lazily (memory-mapped), once per worker
            self._handles[name] = safe_open(str(self.cache_dir / name), framework="pt")
        return self._handles[name]

    def get(self, index: int, flip: int) -> dict:
        i = self.clips[index]
        f = self._open(self.where[i])
        item = {"video": f.get_tensor(f"{i}.{flip}.video"), "flip": bool(flip), "clip": i}
        if self.manifest["geometry"]["num_images"]:
            item["images"] = f.get_tensor(f"{i}.{flip}.images")
        else:
            item["images"] = torch.empty(0, *item["video"].shape[1:])
        if self.layers:
            item["flow"] = torch.stack([f.get_tensor(f"{i}.{flip}.flow.{layer}").float() for layer in self.layers])
        return item

    def __getitem__(self, index: int) -> dict:
        flip = int(self.hflip and np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5)
        return self.get(index, flip)

    def __getstate__(self):  # safe_open handles are not picklable: reopen in each DataLoader worker
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state
