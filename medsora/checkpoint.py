"""The one checkpoint writer and reader. Tensors go to safetensors, scalars to JSON: no pickle, no code.

A checkpoint is a folder `<run>/checkpoints/step-00001000/` with
    model.safetensors      the trained weights
    ema.safetensors        the EMA weights (what sampling uses)
    optimizer.safetensors  the optimizer state, flattened (state.<param>.<name>)
    rng.safetensors        torch / numpy RNG states, so a resumed run continues exactly
    meta.json              step, epoch, the resolved config, optimizer param groups, sha256 of each file
It is written into a temporary folder, fsynced and renamed, so a kill never leaves a broken one; the
newest `keep` are kept. `latest_checkpoint` skips folders whose files do not match their checksums.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import MedsoraError

log = logging.getLogger(__name__)
FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors")


class CheckpointError(MedsoraError, RuntimeError):
    pass


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temporary name, then rename: readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {f"state.{i}.{k}": v.detach().cpu().contiguous() if torch.is_tensor(v) else torch.tensor(v)
               for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, i, name = key.split(".", 2)
        state.setdefault(int(i), {})[name] = v
    return {"state": state, "param_groups": groups}


def _rng_state() -> dict[str, torch.Tensor]:
    np_state = np.random.get_state()
    out = {"torch": torch.get_rng_state(), "numpy.keys": torch.from_numpy(np_state[1].astype(np.int64)),
           "numpy.meta": torch.tensor([np_state[2], np_state[3]], dtype=torch.float64)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda.{i}"] = s
    return out


def _set_rng_state(t: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(t["torch"])
    meta = t["numpy.meta"].tolist()
    np.random.set_state(("MT19937", t["numpy.keys"].numpy().astype(np.uint32), int(meta[0]), meta[1]))
    cuda = [t[k] for k in sorted(k for k in t if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def state_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: str | Path, step: int, model, ema, optimizer, config: dict,
                    epoch: int = 0, extra: dict | None = None, keep: int = 3) -> Path:
    """Write checkpoint `step` atomically and keep the newest `keep`; returns its folder. `ema=None`: no EMA file."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:08d}"
    tmp = ckpt_root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        opt_tensors, groups = _flatten_optimizer(optimizer)
        save_file(state_tensors(model), tmp / "model.safetensors")
        if ema is not None:
            save_file(state_tensors(ema), tmp / "ema.safetensors")
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        save_file(_rng_state(), tmp / "rng.safetensors")
        files = [name for name in FILES if (tmp / name).exists()]
        for name in files:
            _fsync(tmp / name)
        meta = {"step": step, "epoch": epoch, "config": config, "param_groups": groups, "extra": extra or {},
                "sha256": {name: file_sha256(tmp / name) for name in files}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _fsync(tmp / "meta.json")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the previous checkpoints stay intact
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# what save_checkpoint writes into meta.json: key -> (test of its type, the type in words)
_META_TYPES = {
    "step": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "config": (lambda v: isinstance(v, dict), "an object (the resolved config)"),
    "sha256": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and k in FILES and isinstance(d, str)
                                                   for k, d in v.items()),
               f"an object of file name ({', '.join(FILES)}) -> hex digest"),
    "epoch": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "extra": (lambda v: isinstance(v, dict), "an object"),
    "param_groups": (lambda v: isinstance(v, list) and all(isinstance(g, dict) for g in v),
                     "a list of objects (the optimizer's parameter groups)"),
}
_NEEDED_FIRST = ("step", "config", "sha256")   # checked before the checksums; the others after them


def _meta_problem(meta, path: Path, keys) -> None:
    lacking = [k for k in keys if k not in meta]
    if lacking:
        raise CheckpointError(f"{path} lacks {', '.join(lacking)}; not a checkpoint written by medsora "
                              "train (pass a run folder or one of its checkpoints/step-* folders)")
    for k in keys:
        ok, words = _META_TYPES[k]
        if not ok(meta[k]):
            raise CheckpointError(f"{path}: {k!r} is {json.dumps(meta[k])[:60]}, it must be {words}; the file was "
                                  "edited or damaged: use an earlier checkpoint")


def verify(ckpt: Path) -> dict:
    """meta.json of a checkpoint whose files all match their checksums; CheckpointError otherwise."""
    path = Path(ckpt) / "meta.json"
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:   # missing, unreadable, not UTF-8, not JSON
        raise CheckpointError(f"{ckpt}: meta.json missing or unreadable ({e}); the checkpoint is incomplete") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} holds a JSON {type(meta).__name__}, not an object; not a checkpoint written "
                              "by medsora train (pass a run folder or one of its checkpoints/step-* folders)")
    _meta_problem(meta, path, _NEEDED_FIRST)
    for name, digest in meta["sha256"].items():
        file = Path(ckpt) / name
        if not file.exists() or file_sha256(file) != digest:
            raise CheckpointError(f"{file}: missing or corrupt (checksum mismatch); use an earlier checkpoint")
    _meta_problem(meta, path, [k for k in _META_TYPES if k not in _NEEDED_FIRST])
    return meta


def newest_checkpoint(run_dir: str | Path, failures: list[str] | None = None) -> tuple[Path, dict] | None:
    """The newest complete checkpoint of a run and its verified meta, skipping broken ones with a warning (their
    reasons appended to `failures` when given)."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            return ckpt, verify(ckpt)
        except CheckpointError as e:
            log.warning("skipping checkpoint: %s", e)
            if failures is not None:
                failures.append(str(e))
    return None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, skipping broken ones with a warning."""
    found = newest_checkpoint(run_dir)
    return found[0] if found else None


def load_weights(path: str | Path, module: torch.nn.Module, what: str = "model") -> None:
    """Load a safetensors file into `module`, with an error naming the mismatching shapes."""
    path = Path(path)
    try:
        sd = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a broken file
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch " + ", ".join(f"{k}: file {a} vs {what} {b}" for k, a, b in wrong[:3]))
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise CheckpointError(f"{path} does not fit this {what}: {'; '.join(parts)}. Was it written with another "
                              "preset or config? Use the config stored with the checkpoint.")
    module.load_state_dict(sd)


def load_checkpoint(ckpt: str | Path, model=None, ema=None, optimizer=None, restore_rng: bool = False) -> dict:
    """Restore what is given from a checkpoint folder; returns its meta (step, epoch, config, extra)."""
    ckpt = Path(ckpt)
    meta = verify(ckpt)
    if model is not None:
        load_weights(ckpt / "model.safetensors", model)
    if ema is not None:
        load_weights(ckpt / "ema.safetensors", ema, "EMA model")
    if optimizer is not None:
        sd = _unflatten_optimizer(load_file(str(ckpt / "optimizer.safetensors")), meta["param_groups"])
        optimizer.load_state_dict(sd)
    if restore_rng:
        _set_rng_state(load_file(str(ckpt / "rng.safetensors")))
    return meta
