"""Typed configuration: dataclasses, named presets (tiny, S, B, L), YAML files and `key=value` overrides.

    cfg = load_config("B", yaml_path=None, overrides=["train.lr=2e-4", "data.root=/data/colon"])

Every value is checked by `validate` before any work starts; an error names the field and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from .errors import MedsoraError


class ConfigError(MedsoraError, ValueError):
    """A config value that is not allowed; the message names the field."""


# ----------------------------------------------------------------------------------------------
# sections


@dataclass
class ModelConfig:
    """The MedSora backbone (SPEC.md, "Backbone block", Table 1 of the paper)."""

    name: str = "B"  # preset name (stored with checkpoints)
    depth: int = 12  # number of MedSora blocks
    hidden_size: int = 512  # token width d
    patch_size: int = 2  # patch size on the latent grid
    in_channels: int = 16            # VAE latent channels
    input_size: tuple[int, int] = (16, 16)  # latent (height, width); 128 px / 8
    learn_sigma: bool = True         # output 2x channels (eps and the variance interpolation)
    # local window attention
    attn_heads: int = 1  # heads of the local window attention
    attn_window: int = 8  # window of the local attention (tokens, raster order per frame)
    attn_look_backward: int = 1  # windows each query also sees before its own
    attn_look_forward: int = 1  # windows it sees after
    attn_dropout: float = 0.1  # attention dropout in training
    # Mamba-2
    d_state: int = 128  # Mamba-2 state size N
    d_conv: int = 4  # Mamba-2 causal conv width
    expand: int = 2  # Mamba-2 inner width = expand * hidden_size
    headdim: int = 64  # Mamba-2 head dimension P
    ngroups: int = 1  # Mamba-2 B/C groups
    chunk_size: int = 256  # SSD chunk length (shorter sequences use their own length)
    recompute: bool = True  # backward keeps only Mamba projections and attention q/k/v, recomputes the rest (as fused kernels)
    # DINO layer aligned with each block (Table 1); empty = no block is aligned
    align_layers: tuple[int, ...] = tuple(range(12))  # DINO layer aligned with each block


@dataclass
class DataConfig:
    """Clips: `num_frames + 1` frames every `frame_stride` (the extra one for optical flow)."""

    root: str = ""                   # folder of videos and/or frame folders; "" = none given
    num_frames: int = 16             # frames the VAE sees; F+1 are read for flow
    frame_stride: int = 3            # take every k-th frame of the source
    size: int = 128                  # short side resize then centre crop to size x size
    num_images: int = 8              # joint-training single frames from other videos; 0 switches it off
    hflip: bool = True               # random horizontal flip (the cache stores both orientations)
    index_dir: str = ""              # where the dataset index is cached; "" = <root>/.medsora-index.json
    num_workers: int = 2             # DataLoader workers for pixel data


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000  # diffusion steps T
    beta_start: float = 1e-4  # linear beta schedule start
    beta_end: float = 0.02  # linear beta schedule end
    learn_sigma: bool = True         # learned-range variance (model outputs 2x channels)
    sampler: str = "ddim"            # ddim | ddpm
    sample_steps: int = 250  # respaced sampling steps
    eta: float = 0.0  # DDIM eta (0 = deterministic)


@dataclass
class TrainConfig:
    """Section 4.1: lr 1e-3 / batch 16 for `warm_epochs`, then lr 1e-4 / batch 2."""

    epochs: int = 100  # epochs to train
    warm_epochs: int = 2  # epochs of the warm phase
    warm_lr: float = 1e-3  # AdamW lr of the warm phase
    warm_batch_size: int = 16  # global batch of the warm phase
    lr: float = 1e-4  # AdamW lr of the main phase
    batch_size: int = 2  # global batch of the main phase
    weight_decay: float = 0.0  # AdamW weight decay
    ema_decay: float = 0.9999  # EMA decay of the sampling weights
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    grad_clip_from_epoch: int = 25  # first epoch with gradient clipping
    align_weight: float = 0.01       # alpha of L_align (the authors' code uses 0.1)
    align_margin: float = 0.01  # hinge margin of L_align
    align: bool = True               # optical-flow representation alignment (needs `medsora cache --flow`)
    joint_images: bool = True        # append the cached joint-training image latents to each clip
    seed: int = 0                    # seeds data order, noise, timesteps and dropout
    out_dir: str = "runs/medsora"  # run folder when --run-dir is not given
    log_every: int = 10  # steps between metrics.jsonl rows
    ckpt_every: int = 1000  # steps between checkpoints
    max_steps: int = 0               # 0 = run all epochs
    holdout_clips: int = 0           # clips of the cache kept out of training for the held-out denoising loss
    eval_every: int = 500            # steps between held-out evaluations (EMA weights)
    keep_checkpoints: int = 3  # newest checkpoints kept
    grad_accum: int = 1              # micro-batches per optimizer step (the batch size stays the global batch)
    precision: str = "fp32"          # fp32 | bf16 | fp16 (mixed precision on CUDA; the CPU always runs fp32)
    on_checkpoint_error: str = "stop"  # stop | continue: what a failed checkpoint write (disk full, ...) does


@dataclass
class VAEConfig:
    """The 3D causal VAE: a CogVideoX `vae` folder (or hub id), or "tiny" (trained from scratch)."""

    path: str = ""                   # folder with config.json + weights; "" = must be given
    compensation: str = ""           # frequency-compensation weights (safetensors), optional
    tiling: bool = False             # tile large frames (slower, less memory)


@dataclass
class FlowConfig:
    """Optical flow -> flow images -> DINO features (the alignment targets), computed by `medsora cache --flow`."""

    method: str = "raft"             # raft | farneback (no weights needed)
    raft_weights: str = ""           # torchvision raft_large .pth; "" = torchvision cache / hub
    dino_weights: str = ""           # DINO ViT-S/8 weights file
    colour: str = "hsv"              # hsv (paper Eq. 13) | middlebury (the authors' code)
    variant: str = "channel"         # channel (Eq. 14) | token (the authors' code)


@dataclass
class Config:
    preset: str = "B"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)


# ----------------------------------------------------------------------------------------------
# presets

_DINO_LAYERS = {
    "S": tuple(range(0, 12, 2)),                       # [0, 2, 4, 6, 8, 10]: block i <-> layer 2i
    "B": tuple(range(12)),                             # block i <-> layer i
    "L": tuple(i // 2 for i in range(24)),             # 0, 0 -> 11, 11: block i <-> layer i // 2
}


def model_preset(name: str) -> ModelConfig:
    """The backbone of a named preset: tiny (CPU-sized), S/B/L (the paper's Table 1)."""
    if name == "tiny":
        return ModelConfig(name="tiny", depth=2, hidden_size=64, in_channels=4, input_size=(8, 8),
                           attn_window=8, d_state=16, headdim=16, chunk_size=64, align_layers=(0, 1),
                           recompute=False)   # memory is no issue at this size; recomputing costs ~30% of a CPU step
    depths = {"S": 6, "B": 12, "L": 24}
    if name not in depths:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return ModelConfig(name=name, depth=depths[name], align_layers=_DINO_LAYERS[name])


def preset(name: str) -> Config:
    model = model_preset(name)
    if name == "tiny":
        return Config(
            preset="tiny",
            model=model,
            data=DataConfig(num_frames=16, frame_stride=2, size=64, num_images=4, num_workers=0),
            diffusion=DiffusionConfig(sample_steps=50),
            train=TrainConfig(epochs=20, warm_epochs=0, lr=1e-3, batch_size=4, warm_batch_size=4,
                              ema_decay=0.99, grad_clip_from_epoch=0, out_dir="runs/tiny", ckpt_every=200),
        )
    return Config(preset=name, model=model)


PRESETS = ("tiny", "S", "B", "L")


# ----------------------------------------------------------------------------------------------
# loading: preset -> YAML file -> key=value overrides -> validation

VAE_TEMPORAL = 4   # 3D causal VAE: 4k or 1 + 4k frames -> k or 1 + k latent frames
VAE_SPATIAL = 8


def load_config(preset_name: str = "B", yaml_path: str | Path | None = None,
                overrides: list[str] | None = None) -> Config:
    """Resolve a config: start from a preset (or the YAML's `preset:` key), apply the YAML, then overrides."""
    raw: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping (section: {{key: value}}), got {type(raw).__name__}")
        preset_name = raw.pop("preset", preset_name)
    if preset_name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    cfg = preset(preset_name)
    explicit: set[str] = set()
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping of keys, got {values!r}")
        for key, value in values.items():
            _set(cfg, f"{section}.{key}", value)
            explicit.add(f"{section}.{key}")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.lr=1e-4)")
        key, text = item.split("=", 1)
        _set(cfg, key.strip(), yaml.safe_load(text) if text.strip() else "")
        explicit.add(key.strip())
    if "model.input_size" not in explicit:  # the latent grid follows the clip size unless set by hand
        side = cfg.data.size // VAE_SPATIAL
        cfg.model.input_size = (side, side)
    validate(cfg)
    return cfg


def _set(cfg: Config, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise ConfigError(f"{dotted}: keys are section.key, sections: {', '.join(f.name for f in fields(Config) if f.name != 'preset')}")
    section_name, key = parts
    section = getattr(cfg, section_name, None)
    if not is_dataclass(section):
        allowed = [f.name for f in fields(Config) if f.name != "preset"]
        raise ConfigError(f"{dotted}: unknown section {section_name!r}; allowed: {', '.join(allowed)}")
    names = {f.name for f in fields(section)}
    if key not in names:
        import difflib

        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean {section_name}.{close[0]}?)" if close else ""
        raise ConfigError(f"{dotted}: unknown key{hint}; allowed: {', '.join(sorted(names))}")
    typ = get_type_hints(type(section))[key]
    setattr(section, key, _coerce(dotted, value, typ))


def _coerce(name: str, value: Any, typ: Any) -> Any:
    origin = get_origin(typ)
    try:
        if origin is tuple:
            if isinstance(value, (int, float)):
                value = [value]
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            args = get_args(typ)
            elem = args[0]
            items = tuple(_coerce(name, v, elem) for v in value)
            if len(args) == 2 and args[1] is not Ellipsis or len(args) > 2:
                if len(items) != len(args):
                    raise ConfigError(f"{name}: expected {len(args)} values, got {len(items)}")
            return items
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a valid {getattr(typ, '__name__', typ)}") from None
    return value


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed: {allowed}")


def valid_frame_count(n: int) -> bool:
    """Frame counts the 3D causal VAE compresses 4x in time: 4k or 1 + 4k."""
    return n >= 1 and n % VAE_TEMPORAL in (0, 1)


def latent_frames(n: int) -> int:
    return n // VAE_TEMPORAL if n % VAE_TEMPORAL == 0 else 1 + n // VAE_TEMPORAL


def validate(cfg: Config) -> Config:
    m, d, df, t = cfg.model, cfg.data, cfg.diffusion, cfg.train
    _check(m.depth >= 1, "model.depth", m.depth, "an integer >= 1")
    _check(m.hidden_size >= 1 and m.hidden_size % m.attn_heads == 0, "model.hidden_size", m.hidden_size,
           f"a positive multiple of model.attn_heads={m.attn_heads}")
    _check(m.patch_size >= 1, "model.patch_size", m.patch_size, "an integer >= 1")
    _check((m.hidden_size * m.expand) % m.headdim == 0, "model.headdim", m.headdim,
           f"a divisor of hidden_size*expand={m.hidden_size * m.expand}")
    _check(m.in_channels >= 1, "model.in_channels", m.in_channels, "an integer >= 1")
    _check(len(m.input_size) == 2 and all(s >= 1 and s % m.patch_size == 0 for s in m.input_size),
           "model.input_size", m.input_size, f"two latent sizes divisible by model.patch_size={m.patch_size}")
    _check(0.0 <= m.attn_dropout < 1.0, "model.attn_dropout", m.attn_dropout, "a number in [0, 1)")
    _check(m.attn_window >= 1 and m.attn_look_backward >= 0 and m.attn_look_forward >= 0, "model.attn_window",
           m.attn_window, "window >= 1, look_backward/look_forward >= 0")
    for name in ("d_state", "d_conv", "expand", "ngroups", "chunk_size"):
        _check(getattr(m, name) >= 1, f"model.{name}", getattr(m, name), "an integer >= 1")
    _check(len(m.align_layers) in (0, m.depth), "model.align_layers", m.align_layers,
           f"one DINO layer per block ({m.depth} values) or none")
    _check(all(0 <= i < 12 for i in m.align_layers), "model.align_layers", m.align_layers,
           "DINO ViT-S/8 layer indices in 0..11")

    _check(valid_frame_count(d.num_frames), "data.num_frames", d.num_frames,
           "a frame count the 3D causal VAE compresses 4x in time: 4k or 4k+1 (e.g. 16 or 17)")
    _check(d.frame_stride >= 1, "data.frame_stride", d.frame_stride, "an integer >= 1")
    grid = VAE_SPATIAL * m.patch_size
    _check(d.size >= grid and d.size % grid == 0, "data.size", d.size,
           f"a multiple of {grid} (VAE factor {VAE_SPATIAL} x patch {m.patch_size}), e.g. 128 or 256")
    _check(d.num_images == 0 or valid_frame_count(d.num_images), "data.num_images", d.num_images,
           "0 (joint training off) or 4k / 4k+1 frames (e.g. 8)")
    _check(d.num_workers >= 0, "data.num_workers", d.num_workers, "an integer >= 0")

    _check(df.num_timesteps >= 2, "diffusion.num_timesteps", df.num_timesteps, "an integer >= 2")
    _check(0 < df.beta_start < df.beta_end < 1, "diffusion.beta_start", (df.beta_start, df.beta_end),
           "0 < beta_start < beta_end < 1")
    _check(df.sampler in ("ddim", "ddpm"), "diffusion.sampler", df.sampler, "ddim or ddpm")
    _check(1 <= df.sample_steps <= df.num_timesteps, "diffusion.sample_steps", df.sample_steps,
           f"1..diffusion.num_timesteps={df.num_timesteps}")
    _check(df.eta >= 0, "diffusion.eta", df.eta, "a number >= 0")

    for name in ("lr", "warm_lr"):
        _check(getattr(t, name) > 0 and math.isfinite(getattr(t, name)), f"train.{name}", getattr(t, name),
               "a positive learning rate, e.g. 1e-4")
    for name in ("batch_size", "warm_batch_size", "epochs", "log_every", "ckpt_every"):
        _check(getattr(t, name) >= 1, f"train.{name}", getattr(t, name), "an integer >= 1")
    _check(t.precision in ("fp32", "bf16", "fp16"), "train.precision", t.precision, "fp32, bf16 or fp16")
    for name in ("eval_every", "keep_checkpoints", "grad_accum"):
        _check(getattr(t, name) >= 1, f"train.{name}", getattr(t, name), "an integer >= 1")
    for name in ("warm_epochs", "grad_clip_from_epoch", "max_steps", "holdout_clips"):
        _check(getattr(t, name) >= 0, f"train.{name}", getattr(t, name), "an integer >= 0")
    _check(0.0 <= t.ema_decay < 1.0, "train.ema_decay", t.ema_decay, "a number in [0, 1), e.g. 0.9999")
    for name in ("grad_clip", "align_weight", "align_margin", "weight_decay"):
        _check(getattr(t, name) >= 0, f"train.{name}", getattr(t, name), "a number >= 0")
    _check(t.on_checkpoint_error in ("stop", "continue"), "train.on_checkpoint_error", t.on_checkpoint_error,
           "stop or continue")
    f = cfg.flow
    _check(f.method in ("raft", "farneback"), "flow.method", f.method, "raft or farneback")
    _check(f.colour in ("hsv", "middlebury"), "flow.colour", f.colour, "hsv or middlebury")
    _check(f.variant in ("channel", "token"), "flow.variant", f.variant, "channel or token")
    return cfg


def to_dict(cfg: Config) -> dict:
    def plain(v):
        return list(v) if isinstance(v, tuple) else v

    out = dataclasses.asdict(cfg)
    return {k: ({kk: plain(vv) for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in out.items()}


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def from_dict(d: dict) -> Config:
    """Rebuild (and validate) a config saved by `to_dict`, e.g. from a checkpoint."""
    d = dict(d)
    cfg = preset(d.pop("preset", "B"))
    for section, values in d.items():
        for key, value in values.items():
            _set(cfg, f"{section}.{key}", value)
    return validate(cfg)
