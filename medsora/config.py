"""Typed configuration: dataclasses, named presets (tiny, S, B, L), YAML files and `key=value` overrides.

    cfg = load_config("B", yaml_path=None, overrides=["train.lr=2e-4", "data.root=/data/colon"])

Every value is checked by `validate` before any work starts; an error names the field and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import re
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
    first_frame: bool = False        # image-to-video: a zero-initialised patch embedding of a given first latent frame (docs/first_frame.md); off = the paper's model


@dataclass
class DataConfig:
    """Clips: `num_frames + 1` frames every `frame_stride` (the extra one for optical flow)."""

    root: str = ""                   # folder of videos and/or frame folders; "" = none given
    num_frames: int = 16             # frames the VAE sees; F+1 are read for flow
    frame_stride: int = 3            # take every k-th frame of the source
    size: int = 128                  # short side resize then centre crop to size x size
    num_images: int = 8              # joint-training single frames from other videos; 0 switches it off
    hflip: bool = True               # random horizontal flip (the cache stores both orientations)
    clip_offsets: int = 2            # start offsets per clip window the cache encodes (training draws one per epoch)
    index_dir: str = ""              # where the dataset index is cached; "" = <root>/.medsora-index.json
    num_workers: int = 2             # DataLoader workers for pixel data


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000  # diffusion steps T
    beta_start: float = 1e-4  # linear beta schedule start
    beta_end: float = 0.02  # linear beta schedule end
    learn_sigma: bool = True         # learned-range variance (model outputs 2x channels)
    sampler: str = "ddim"            # ddim | ddpm | dpmpp-2m | dpmpp-2m-sde | unipc (the last three: diffusers' multistep solvers)
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
    posterior: str = "sample"        # sample (a latent drawn from the VAE posterior each step, the authors) or mode
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
    compile: bool = False            # torch.compile the backbone's forward (checkpoints are the same either way)
    first_frame_prob: float = 0.9    # model.first_frame: probability a clip is given its first latent frame (else dropped: unconditional)
    init_from: str = ""              # start from this run's / checkpoint's weights (step 0, fresh optimizer); may turn model.first_frame on


@dataclass
class VAEConfig:
    """The 3D causal VAE: a CogVideoX `vae` folder (or hub id), or "tiny" (trained from scratch)."""

    path: str = ""                   # folder with config.json + weights; "" = must be given
    compensation: str = ""           # frequency-compensation weights (safetensors), optional
    tiling: bool = False             # tile large frames (slower, less memory)
    latent_norm: str = "auto"        # auto, measured or published: per-channel shift/scale measured over the cache (auto: for a VAE without CogVideoX's published factor)


@dataclass
class FlowConfig:
    """Optical flow -> flow images -> DINO features (the alignment targets), computed by `medsora cache --flow`.
    A cache built with another `method`, `raft_iters`, `colour` or `resize` is refused. Where each default comes
    from: docs/method.md, "Optical-flow representation alignment".
    """

    method: str = "raft"             # raft or farneback (no weights needed)
    raft_weights: str = ""           # torchvision raft_large .pth; "" = torchvision cache / hub
    dino_weights: str = ""           # DINO ViT-S/8 weights file
    features: str = "dino"           # dino (the paper), patches (weight-free, NOT the paper's) or auto (dino when dino_weights is set)
    raft_iters: int = 20             # RAFT refinement iterations (the authors: 20; torchvision's default: 12)
    colour: str = "hsv"              # hsv (paper Eq. 13) or middlebury (the authors' code)
    resize: str = "tokens"           # Sampling()'s resize: tokens (raster token axis; Table 1, the authors) or grid (2D grid)
    variant: str = "channel"         # channel (per sample), batch (Eq. 14 as written) or token (the authors' code)


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
            data=DataConfig(num_frames=16, frame_stride=2, size=64, num_images=4, num_workers=0, clip_offsets=4),
            diffusion=DiffusionConfig(sample_steps=50),
            train=TrainConfig(epochs=20, warm_epochs=0, lr=1e-3, batch_size=4, warm_batch_size=4,
                              ema_decay=0.99, grad_clip_from_epoch=0, out_dir="runs/tiny", ckpt_every=200),
            flow=FlowConfig(features="auto"),   # weight-free flow features where no DINO weights are given
        )
    return Config(preset=name, model=model)


PRESETS = ("tiny", "S", "B", "L")


# ----------------------------------------------------------------------------------------------
# loading: preset -> YAML file -> key=value overrides -> validation

VAE_TEMPORAL = 4   # 3D causal VAE: 4k or 1 + 4k frames -> k or 1 + k latent frames
VAE_SPATIAL = 8


MAX_CONFIG_BYTES = 1 << 20    # a --config file holds a few dozen keys; anything larger is the wrong file
_MAX_DEPTH = 16               # nesting levels a --config file may use (it needs 3: section, key, list)
_MAX_NODES = 10_000           # values (keys included) a --config file may hold; every section in full is ~250
_NULL_TAG = "tag:yaml.org,2002:null"


def load_config(preset_name: str = "B", yaml_path: str | Path | None = None,
                overrides: list[str] | None = None) -> Config:
    """Resolve a config: start from a preset (or the YAML's `preset:` key), apply the YAML, then overrides.

    Values are typed by the schema (the dataclass field), not by YAML: a `str` field takes the text as written
    (`data.root=2024_01` stays "2024_01"), int/float/bool fields parse strictly, tuple fields take `[0,1]`.
    """
    file_values: list[tuple[str, yaml.Node]] = []
    path = None
    if yaml_path is not None:
        path = Path(yaml_path)
        file_preset, file_values = _read_config_file(path)
        if file_preset is not None:
            preset_name = file_preset
    if preset_name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {_short(preset_name)}; choose one of {', '.join(PRESETS)}")
    cfg = preset(preset_name)
    explicit: set[str] = set()
    for dotted, node in file_values:
        try:
            _set_node(cfg, dotted, node)
        except ConfigError as e:
            raise ConfigError(f"config file {path}, line {node.start_mark.line + 1}: {e}") from None
        explicit.add(dotted)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {_short(item)} must look like section.key=value (e.g. train.lr=1e-4)")
        key, text = item.split("=", 1)
        _set_text(cfg, key.strip(), text)
        explicit.add(key.strip())
    if "model.input_size" not in explicit:  # the latent grid follows the clip size unless set by hand
        side = cfg.data.size // VAE_SPATIAL
        cfg.model.input_size = (side, side)
    validate(cfg)
    return cfg


# --- the --config file: size-bounded, UTF-8, composed (never constructed) without anchors or aliases

class _Refused(yaml.MarkedYAMLError):
    """Something the config loader does not accept, at a place in the file."""


class _ConfigLoader(yaml.SafeLoader):
    """Composes the node tree only: no Python object is ever built from the file, aliases are refused before
    anything can expand (a "billion laughs" file stops at its first anchor); nesting depth and node count are
    bounded, so a hostile file stops early instead of being composed in full."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(problem="YAML anchors and aliases (&name / *name) are not supported in a config file; "
                                   "write each value out", problem_mark=event.start_mark)
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _Refused(problem=f"more than {_MAX_NODES} values; a config file holds a few sections of "
                                   "key: value", problem_mark=event.start_mark)
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise _Refused(problem=f"values nested more than {_MAX_DEPTH} levels deep; a config file holds "
                                       "sections of key: value", problem_mark=event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _read_text(path: Path) -> str:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; pass a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file; pass a YAML file")
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror or e}); check its permissions") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than 1 MiB ({path.stat().st_size} bytes); a config file "
                          "holds a few sections of key: value, pass the right file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                          "save it as UTF-8") from None


def _compose(path: Path, text: str) -> yaml.Node | None:
    loader = None
    try:
        loader = _ConfigLoader(text)   # its reader refuses control characters right here
        return loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(str(e.problem or e.context or "not valid YAML").split())
        if e.context and e.problem:
            where = f" at line {e.context_mark.line + 1}" if e.context_mark else ""
            what += f" ({' '.join(str(e.context).split())}{where})"
        hint = "" if isinstance(e, _Refused) else "; fix the YAML there"
        loc = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path}{loc}: {_clip(what, 200)}{hint}") from None
    except yaml.reader.ReaderError as e:
        line = text[:e.position].count("\n") + 1
        raise ConfigError(f"config file {path}, line {line}: character {e.character:#x} is not allowed in "
                          "YAML; remove it") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {_clip(' '.join(str(e).split()), 200)}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply; a config file holds sections of key: value") \
            from None
    finally:
        if loader is not None:
            loader.dispose()


def _kind(node: yaml.Node) -> str:
    return {yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}.get(type(node), "a single value")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _read_config_file(path: Path) -> tuple[str | None, list[tuple[str, yaml.Node]]]:
    """The file's `preset:` (or None) and its (section.key, value node) pairs, in file order."""
    root = _compose(path, _read_text(path))
    if root is None or _is_null(root):
        return None, []
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"config file {path} must hold a mapping (section: {{key: value}}), got {_kind(root)}")
    sections = [f.name for f in fields(Config) if f.name != "preset"]

    def fail(node: yaml.Node, message: str):
        raise ConfigError(f"config file {path}, line {node.start_mark.line + 1}: {message}")

    def keys(mapping: yaml.MappingNode, prefix: str):
        seen: dict[str, int] = {}
        for knode, vnode in mapping.value:
            if not isinstance(knode, yaml.ScalarNode):
                fail(knode, f"keys{' of ' + prefix[:-1] if prefix else ''} must be plain names, got {_kind(knode)}")
            key = knode.value
            if key in seen:
                fail(knode, f"{_clip(prefix + key, 80) if prefix else _short(key)} is given twice (also on line "
                            f"{seen[key]}); keep one")
            seen[key] = knode.start_mark.line + 1
            yield knode, key, vnode

    preset_name: str | None = None
    out: list[tuple[str, yaml.Node]] = []
    for knode, section, vnode in keys(root, ""):
        if section == "preset":
            if isinstance(vnode, yaml.ScalarNode) and not _is_null(vnode):
                preset_name = vnode.value
                if preset_name not in PRESETS:
                    fail(vnode, f"preset: unknown preset {_short(preset_name)}; choose one of {', '.join(PRESETS)}")
            elif not _is_null(vnode):
                fail(vnode, f"preset: expected a preset name ({', '.join(PRESETS)}), got {_kind(vnode)}")
            continue
        if section not in sections:
            fail(knode, f"unknown section {_short(section)}{_did_you_mean(section, sections, '')}; allowed: "
                        f"preset, {', '.join(sections)}")
        if _is_null(vnode):   # a section with every key commented out
            continue
        if not isinstance(vnode, yaml.MappingNode):
            fail(vnode, f"{section}: expected a mapping of keys (key: value), got {_kind(vnode)}")
        for _, key, node in keys(vnode, f"{section}."):
            out.append((f"{section}.{key}", node))
    return preset_name, out


# --- setting one value: from override text, a file's node, or a Python value (from_dict)

def _short(value: Any, limit: int = 60) -> str:
    return _clip(repr(value), limit)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _did_you_mean(key: str, names, prefix: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(names), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _field(cfg: Config, dotted: str) -> tuple[Any, str, Any]:
    """(section object, key, declared type) of `section.key`, or a ConfigError naming what is allowed."""
    parts = dotted.split(".")
    allowed = [f.name for f in fields(Config) if f.name != "preset"]
    if len(parts) != 2:
        raise ConfigError(f"{_clip(dotted, 80)}: keys are section.key, sections: {', '.join(allowed)}")
    section_name, key = parts
    section = getattr(cfg, section_name, None) if section_name in allowed else None
    if not is_dataclass(section):
        raise ConfigError(f"{_clip(dotted, 80)}: unknown section {_short(section_name)}; allowed: {', '.join(allowed)}")
    names = {f.name for f in fields(section)}
    if key not in names:
        hint = _did_you_mean(key, names, f"{section_name}.")
        raise ConfigError(f"{_clip(dotted, 80)}: unknown key{hint}; allowed: {', '.join(sorted(names))}")
    return section, key, get_type_hints(type(section))[key]


def _set(cfg: Config, dotted: str, value: Any) -> None:
    """Set a Python value (e.g. from a checkpoint's saved config), converted to the field's type."""
    section, key, typ = _field(cfg, dotted)
    setattr(section, key, _coerce(dotted, value, typ, getattr(section, key)))


def _set_text(cfg: Config, dotted: str, text: str) -> None:
    """Set `section.key=text` from the command line: the text is parsed by the field's type, never by YAML."""
    section, key, typ = _field(cfg, dotted)
    setattr(section, key, _parse_text(dotted, text, typ, getattr(section, key)))


def _set_node(cfg: Config, dotted: str, node: yaml.Node) -> None:
    """Set a value of the --config file from its YAML node: the written text, parsed by the field's type."""
    section, key, typ = _field(cfg, dotted)
    current = getattr(section, key)
    if isinstance(node, yaml.ScalarNode):
        if _is_null(node) and (typ is str or get_origin(typ) is tuple):
            value = "" if typ is str else ()      # `key:` / `key: null` = empty
        elif _is_null(node):
            raise ConfigError(f"{dotted}: no value given; expected {_expected(typ)}, e.g. {_example(dotted, current)}")
        else:
            value = _parse_text(dotted, node.value, typ, current)
    elif isinstance(node, yaml.SequenceNode) and get_origin(typ) is tuple:
        if any(not isinstance(n, yaml.ScalarNode) or _is_null(n) for n in node.value):
            raise _list_error(dotted, "a nested list", typ, current)
        value = _parse_items(dotted, [n.value for n in node.value], typ, current, "the list")
    else:
        raise ConfigError(f"{dotted}: got {_kind(node)}; expected {_expected(typ)}, e.g. {_example(dotted, current)}")
    setattr(section, key, value)


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _expected(typ: Any) -> str:
    if get_origin(typ) is tuple:
        return f"a list of {get_args(typ)[0].__name__}"
    return {str: "text", int: "an integer", float: "a number", bool: "true/false"}.get(typ, str(typ))


def _example(name: str, current: Any) -> str:
    if isinstance(current, tuple):
        shown = "[" + ",".join(map(str, current or (0, 1))) + "]"
    elif isinstance(current, bool):
        shown = str(current).lower()
    else:
        shown = str(current) if current not in ("", None) else "/path"
    return f"{name}={_clip(shown, 40)}"


def _list_error(name: str, text: Any, typ: Any, current: Any) -> ConfigError:
    shown = text if text == "a nested list" else _short(text)
    return ConfigError(f"{name}: {shown} is not {_expected(typ)}; write e.g. {_example(name, current)}")


def _parse_text(name: str, text: str, typ: Any, current: Any = None) -> Any:
    """Text of an override or a YAML scalar -> the field's type; a ConfigError names the key and the form."""
    if typ is str:
        return text
    if get_origin(typ) is tuple:
        return _parse_list(name, text, typ, current)
    s = text.strip()
    if typ is bool:
        if s.lower() in _TRUE:
            return True
        if s.lower() in _FALSE:
            return False
        raise ConfigError(f"{name}: {_short(text)} is not true/false (write true, false, yes, no, 1 or 0)")
    if typ is int:
        if re.fullmatch(r"[+-]?[0-9]+(?:_[0-9]+)*", s):
            if len(s.replace("_", "").lstrip("+-0")) > 18:
                raise ConfigError(f"{name}: {_short(text)} is too large; write e.g. {_example(name, current)}")
            return int(s)
        try:
            f = float(s)
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f.is_integer() and abs(f) < 2 ** 53:   # 2.0, 1e3
            return int(f)
        raise ConfigError(f"{name}: {_short(text)} is not an integer; write e.g. {_example(name, current)}")
    if typ is float:
        try:
            f = float(s)
        except ValueError:
            raise ConfigError(f"{name}: {_short(text)} is not a number; write e.g. {_example(name, current)}") \
                from None
        if not math.isfinite(f):
            raise ConfigError(f"{name}: {_short(text)} is not a finite number; write e.g. {_example(name, current)}")
        return f
    raise ConfigError(f"{name}: fields of type {typ} cannot be set from text")


def _parse_list(name: str, text: str, typ: Any, current: Any) -> tuple:
    """`[0,1]`, `(0, 1)`, `0,1`, `0 1` or `` (empty) -> a tuple of the element type; nothing nested."""
    s = text.strip()
    if s[:1] in ("[", "("):
        close = "]" if s[0] == "[" else ")"
        if len(s) < 2 or s[-1] != close:
            raise _list_error(name, text, typ, current)
        s = s[1:-1]
    if any(c in s for c in "[](){}"):
        raise _list_error(name, text, typ, current)
    tokens = re.split(r"\s*,\s*|\s+", s.strip())
    if tokens and tokens[-1] == "":      # "", "[]", a trailing comma
        tokens.pop()
    quoted = [t[1:-1] if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"" else t for t in tokens]
    return _parse_items(name, quoted, typ, current, text)


def _parse_items(name: str, items: list[str], typ: Any, current: Any, shown: Any) -> tuple:
    args = get_args(typ)
    try:
        if any(t == "" for t in items):
            raise ConfigError("empty item")
        values = tuple(_parse_text(name, t, args[0]) for t in items)
    except ConfigError:
        raise _list_error(name, shown, typ, current) from None
    if not (len(args) == 2 and args[1] is Ellipsis) and len(values) != len(args):
        raise ConfigError(f"{name}: expected {len(args)} values, got {len(values)}; write e.g. "
                          f"{_example(name, current)}")
    return values


def _coerce(name: str, value: Any, typ: Any, current: Any = None) -> Any:
    """A Python value (e.g. from a checkpoint's JSON) -> the field's type."""
    if isinstance(value, str):
        return _parse_text(name, value, typ, current)
    bad = ConfigError(f"{name}: {_short(value)} is not {_expected(typ)}; write e.g. {_example(name, current)}")
    if get_origin(typ) is tuple:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or any(isinstance(v, (list, tuple, dict)) for v in value):
            raise bad
        return _parse_items(name, [str(v) for v in value], typ, current, value)
    if typ is str:
        if value is None:
            return ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if typ is bool:
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise bad
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if typ is int:
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise bad
        return int(value)
    if typ is float:
        if not math.isfinite(value):
            raise bad
        return float(value)
    return value


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={_short(value, 120)} is not allowed: {allowed}")


def valid_frame_count(n: int) -> bool:
    """Frame counts the 3D causal VAE compresses 4x in time: 4k or 1 + 4k."""
    return n >= 1 and n % VAE_TEMPORAL in (0, 1)


def latent_frames(n: int) -> int:
    return n // VAE_TEMPORAL if n % VAE_TEMPORAL == 0 else 1 + n // VAE_TEMPORAL


def validate(cfg: Config) -> Config:
    m, d, df, t = cfg.model, cfg.data, cfg.diffusion, cfg.train
    _check(m.depth >= 1, "model.depth", m.depth, "an integer >= 1")
    _check(m.attn_heads >= 1, "model.attn_heads", m.attn_heads, "an integer >= 1 that divides model.hidden_size")
    _check(m.hidden_size >= 1 and m.hidden_size % m.attn_heads == 0, "model.hidden_size", m.hidden_size,
           f"a positive multiple of model.attn_heads={m.attn_heads}")
    _check(m.patch_size >= 1, "model.patch_size", m.patch_size, "an integer >= 1")
    _check(m.expand >= 1, "model.expand", m.expand, "an integer >= 1")
    _check(m.headdim >= 1, "model.headdim", m.headdim, "an integer >= 1 that divides hidden_size*expand")
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
    nheads = m.hidden_size * m.expand // m.headdim   # Mamba-2 heads
    _check(nheads % m.ngroups == 0, "model.ngroups", m.ngroups,
           f"a divisor of the Mamba-2 head count hidden_size*expand/headdim={nheads}")
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
    _check(d.clip_offsets >= 1, "data.clip_offsets", d.clip_offsets, "an integer >= 1 (start offsets per clip window)")

    _check(df.num_timesteps >= 2, "diffusion.num_timesteps", df.num_timesteps, "an integer >= 2")
    _check(0 < df.beta_start < df.beta_end < 1, "diffusion.beta_start", (df.beta_start, df.beta_end),
           "0 < beta_start < beta_end < 1")
    _check(df.sampler in ("ddim", "ddpm", "dpmpp-2m", "dpmpp-2m-sde", "unipc"), "diffusion.sampler", df.sampler,
           "ddim, ddpm, dpmpp-2m, dpmpp-2m-sde or unipc")
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
    _check(0 <= t.seed < 2 ** 32, "train.seed", t.seed, "an integer in 0..4294967295")
    _check(0.0 <= t.ema_decay < 1.0, "train.ema_decay", t.ema_decay, "a number in [0, 1), e.g. 0.9999")
    for name in ("grad_clip", "align_weight", "align_margin", "weight_decay"):
        _check(getattr(t, name) >= 0, f"train.{name}", getattr(t, name), "a number >= 0")
    _check(t.posterior in ("sample", "mode"), "train.posterior", t.posterior, "sample or mode")
    _check(0.0 <= t.first_frame_prob <= 1.0, "train.first_frame_prob", t.first_frame_prob,
           "a probability in [0, 1] (0.9: 10% of the clips train the unconditional model for guidance)")
    _check(cfg.vae.latent_norm in ("auto", "measured", "published"), "vae.latent_norm", cfg.vae.latent_norm,
           "auto, measured or published")
    _check(t.on_checkpoint_error in ("stop", "continue"), "train.on_checkpoint_error", t.on_checkpoint_error,
           "stop or continue")
    f = cfg.flow
    _check(f.method in ("raft", "farneback"), "flow.method", f.method, "raft or farneback")
    _check(f.raft_iters >= 1, "flow.raft_iters", f.raft_iters, "an integer >= 1 (the authors use 20)")
    _check(f.colour in ("hsv", "middlebury"), "flow.colour", f.colour, "hsv or middlebury")
    _check(f.features in ("dino", "patches", "auto"), "flow.features", f.features, "dino, patches or auto")
    _check(f.resize in ("tokens", "grid"), "flow.resize", f.resize, "tokens or grid")
    _check(f.variant in ("channel", "batch", "token"), "flow.variant", f.variant, "channel, batch or token")
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
    if not isinstance(d, dict):
        raise ConfigError(f"a saved config must be a mapping of sections, got {type(d).__name__}")
    d = dict(d)
    name = d.pop("preset", "B")
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {_short(name)}; choose one of {', '.join(PRESETS)}")
    cfg = preset(name)
    for section, values in d.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{_short(section)}: a saved config section must be a mapping, got {_short(values)}")
        for key, value in values.items():
            _set(cfg, f"{section}.{key}", value)
    return validate(cfg)
