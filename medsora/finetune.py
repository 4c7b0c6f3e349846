"""Start a new run from another run's weights (`train.init_from`): fine-tuning, e.g. an unconditional checkpoint into
a first-frame one (docs/first_frame.md).

    ckpt = init_from(cfg, model, ema, norm)     # model and EMA take the checkpoint's weights; step 0, fresh optimizer

Unlike `--resume` (which continues a run exactly and refuses any other config), the new run starts at step 0 with a
fresh optimizer and its own schedule; the model config may differ from the checkpoint's only by turning
`model.first_frame` on, and the only weights the checkpoint may lack are then the zero-initialised `cond_embedder`'s,
which the new model keeps: it starts computing exactly what the checkpoint computes.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from .checkpoint import newest_checkpoint, verify
from .config import from_dict, to_dict
from .errors import MedsoraError
from .weights_check import fit_problems

NEW_WHEN_FIRST_FRAME = "cond_embedder."   # the modules `model.first_frame` adds (zero-initialised)


class InitError(MedsoraError, ValueError):
    pass


def checkpoint_of(path: str | Path) -> tuple[Path, dict]:
    """A checkpoint folder, or a run folder (its newest checkpoint that verifies), and its verified meta."""
    path = Path(path)
    if (path / "meta.json").exists():
        return path, verify(path)
    found = newest_checkpoint(path) if path.is_dir() else None
    if found is None:
        raise InitError(f"train.init_from={path}: no checkpoint there (give a run folder or a checkpoint folder with "
                        "meta.json)")
    return found


def init_from(cfg, model: torch.nn.Module, ema: torch.nn.Module, norm) -> Path:
    """Load the weights of the checkpoint at `cfg.train.init_from` into `model` and `ema`; returns the checkpoint.
    Refused with one line: another model config (beyond turning first_frame on), tensors that do not fit, or a
    checkpoint trained on latents with another normalisation (`norm`: the cache's LatentNorm)."""
    ckpt, meta = checkpoint_of(cfg.train.init_from)   # verified once: checksums read every file
    saved, now = to_dict(from_dict(meta["config"]))["model"], to_dict(cfg)["model"]
    diff = {k: (v, now.get(k)) for k, v in saved.items() if now.get(k) != v}
    if diff and diff != {"first_frame": (False, True)}:
        raise InitError(f"train.init_from={ckpt}: trained with another model config (checkpoint vs now: {diff}); only "
                        "model.first_frame may be turned on, so use the checkpoint's preset and overrides")
    theirs = meta.get("extra", {}).get("latent_norm")
    if theirs is not None and theirs != norm.to_dict():
        raise InitError(f"train.init_from={ckpt}: trained on latents with another normalisation than this cache's "
                        "(another VAE or data?); fine-tune on a cache made with the checkpoint's VAE")
    new = NEW_WHEN_FIRST_FRAME if diff else None
    for name, module in (("model", model), ("ema", ema)):
        sd = load_file(str(ckpt / f"{name}.safetensors"))
        expected = {k: v for k, v in module.state_dict().items() if new is None or not k.startswith(new)}
        problems = fit_problems(sd, expected, "model")
        if problems:
            raise InitError(f"train.init_from={ckpt}: {name}.safetensors does not fit this model: {problems}")
        module.load_state_dict(sd, strict=new is None)
    return ckpt
