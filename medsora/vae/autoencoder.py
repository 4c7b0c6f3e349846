"""`VideoVAE`: diffusers' 3D causal `AutoencoderKLCogVideoX` behind the package's clip/latent contract.

    vae = VideoVAE.from_pretrained("/models/CogVideoX-2b/vae", compensation="runs/vae/compensation.safetensors")
    z = vae.encode(x)        # x (B, T, 3, H, W) in [-1, 1]  ->  z (B, f, C, H/8, W/8), times scaling_factor
    x_hat = vae.decode(z)    # back to (B, T', 3, H, W), clamped to [-1, 1]

Three ways to get one:
- `from_pretrained(path)`: the `vae` folder of CogVideoX-2b (or its root folder), or a folder written by
  `save_pretrained` (e.g. a trained `tiny` VAE); a hub id only when the machine has internet.
- `tiny(seed)`: the same class with small widths (8x spatial, 4x temporal, 4 latent channels), random init,
  for tests, the demo and machines without the CogVideoX weights.
- `from_config(COGVIDEOX_2B_CONFIG, seed)`: the CogVideoX-2b-sized architecture with random weights
  (tests and the memory benchmark only; it reconstructs nothing).

Frames are encoded in chunks of 8 with a causal conv cache (diffusers' own loop), so a clip of
1 + 4k frames gives 1 + k latent frames and 8k frames give 2k (`latent_frames`).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX
from einops import rearrange
from torch import nn

from ..weights_check import WeightsError, file_shapes, fit_problems, one_line

# The `vae/config.json` of THUDM/CogVideoX-2b (diffusers' defaults for this class).
COGVIDEOX_2B_CONFIG = dict(
    in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 512), latent_channels=16,
    layers_per_block=3, norm_num_groups=32, temporal_compression_ratio=4,
    sample_height=480, sample_width=720, scaling_factor=1.15258426,
)

# Same class, small widths: 3 spatial down-samplings (8x), 2 temporal ones (4x), 4 latent channels.
TINY_CONFIG = dict(
    in_channels=3, out_channels=3, block_out_channels=(16, 32, 64, 64), latent_channels=4,
    layers_per_block=1, norm_num_groups=8, temporal_compression_ratio=4,
    sample_height=128, sample_width=128, scaling_factor=1.0,
)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
COGVIDEOX_URL = "https://huggingface.co/THUDM/CogVideoX-2b/tree/main/vae"
SAMPLE_FRAMES_PER_CHUNK = 8  # diffusers encodes 8 frames at a time (AutoencoderKLCogVideoX.num_sample_frames_batch_size)


class VideoVAE(nn.Module):
    """The frozen-or-trainable CogVideoX VAE plus optional frequency-compensation modules.

    `self.vae` is the diffusers model, untouched; `self.compensation` (or None) holds the residual
    modules that `Compensation.attach` hooks into it (see compensation.py).
    """

    def __init__(self, vae: AutoencoderKLCogVideoX, name: str = "cogvideox"):
        super().__init__()
        self.vae = vae
        self.name = name
        self.compensation = None

    # ------------------------------------------------------------------------------------------
    # construction

    @classmethod
    def from_config(cls, config: dict | None = None, seed: int = 0, name: str = "cogvideox") -> "VideoVAE":
        """A randomly initialised VAE of the given architecture (default: CogVideoX-2b's)."""
        torch.manual_seed(seed)
        return cls(AutoencoderKLCogVideoX(**(config or COGVIDEOX_2B_CONFIG)).eval(), name=name)

    @classmethod
    def tiny(cls, seed: int = 0, latent_channels: int = 4, block_out_channels: tuple[int, ...] | None = None,
             layers_per_block: int | None = None, norm_num_groups: int | None = None) -> "VideoVAE":
        """The `tiny` VAE, randomly initialised (train it with `train_tiny_vae`). `block_out_channels`,
        `layers_per_block` and `norm_num_groups` (None: TINY_CONFIG's) change its widths and depth; 4 widths
        keep 8x spatial compression, 3 give 4x."""
        config = {**TINY_CONFIG, "latent_channels": latent_channels}
        for key, value in (("block_out_channels", block_out_channels), ("layers_per_block", layers_per_block),
                           ("norm_num_groups", norm_num_groups)):
            if value is not None:
                config[key] = tuple(value) if key == "block_out_channels" else value
        n = len(config["block_out_channels"])
        if n != len(TINY_CONFIG["block_out_channels"]):   # one block per width (diffusers' defaults list 4)
            config["down_block_types"] = ("CogVideoXDownBlock3D",) * n
            config["up_block_types"] = ("CogVideoXUpBlock3D",) * n
        return cls.from_config(config, seed=seed, name="tiny")

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, compensation: str | Path | None = None,
                        subfolder: str = "vae", torch_dtype: torch.dtype = torch.float32) -> "VideoVAE":
        """Load a VAE folder (config.json + diffusion_pytorch_model.safetensors) and, optionally, a
        compensation file on top of it.

        `path_or_hub_id` may be the `vae` folder itself, a folder that contains it (the CogVideoX-2b
        root), a folder written by `save_pretrained`, or a hub id such as "THUDM/CogVideoX-2b" (needs internet).
        """
        path = Path(path_or_hub_id).expanduser()
        if path.exists():
            folder = path / subfolder if not (path / "config.json").exists() and (path / subfolder).is_dir() else path
            if not (folder / "config.json").exists():
                raise FileNotFoundError(
                    f"{folder / 'config.json'} not found. Expected the `vae` folder of CogVideoX-2b "
                    f"(config.json + {WEIGHTS_NAME}, from {COGVIDEOX_URL}) or a folder written by train_tiny_vae.")
            if not any(folder.glob("diffusion_pytorch_model*.safetensors")) and not any(folder.glob("diffusion_pytorch_model*.bin")):
                raise FileNotFoundError(
                    f"{folder / WEIGHTS_NAME} not found: the VAE weights are missing. Download them from "
                    f"{COGVIDEOX_URL} into {folder}, or train a tiny VAE (`train_tiny_vae`).")
            _check_vae_folder(folder)  # config builds, every tensor there with its shape: else one-line error
            try:
                vae, info = AutoencoderKLCogVideoX.from_pretrained(folder, torch_dtype=torch_dtype,
                                                                   output_loading_info=True, **_LOW_MEM)
            except (RuntimeError, ValueError, OSError) as e:  # weights that do not fit config.json, broken files
                raise WeightsError(f"the VAE in {folder} could not be loaded: {one_line(e, 400)}. Its weights must "
                                   f"match its config.json (the `vae` folder of CogVideoX-2b as downloaded from "
                                   f"{COGVIDEOX_URL}, or a folder written by train_tiny_vae).") from None
            bad = {k: info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
            if bad:  # never keep diffusers' random init of what the folder lacks
                raise WeightsError(f"the VAE in {folder} could not be loaded: " + "; ".join(
                    f"{len(v)} {k.replace('_', ' ')} (e.g. {v[0] if isinstance(v[0], str) else v[0][0]})"
                    for k, v in bad.items()) + f"; re-download the folder from {COGVIDEOX_URL}")
            name = json.loads((folder / "config.json").read_text()).get("_medsora_name", "cogvideox")
        elif _looks_like_hub_id(str(path_or_hub_id)):
            try:
                vae = AutoencoderKLCogVideoX.from_pretrained(str(path_or_hub_id), subfolder=subfolder,
                                                              torch_dtype=torch_dtype, **_LOW_MEM)
            except Exception as e:  # no internet, no such repo, gated repo ...
                raise OSError(
                    f"could not load {path_or_hub_id!r} (subfolder {subfolder!r}) from the Hugging Face hub: {e}. "
                    f"Without internet, download {COGVIDEOX_URL} elsewhere and pass the local folder.") from e
            name = "cogvideox"
        else:
            raise FileNotFoundError(
                f"VAE folder {path} does not exist. Pass the `vae` folder of CogVideoX-2b "
                f"(config.json + {WEIGHTS_NAME}, from {COGVIDEOX_URL}) or a trained tiny VAE folder.")
        out = cls(vae.eval(), name=name)
        if compensation is not None:
            out.load_compensation(compensation)
        return out

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the base VAE (config.json + safetensors weights) so `from_pretrained(folder)` reloads it.
        Compensation weights are saved separately (`save_compensation`)."""
        folder = Path(folder)
        self.vae.save_pretrained(folder, safe_serialization=True)
        cfg = json.loads((folder / "config.json").read_text())
        cfg["_medsora_name"] = self.name
        (folder / "config.json").write_text(json.dumps(cfg, indent=2))
        return folder

    # ------------------------------------------------------------------------------------------
    # compensation

    def add_compensation(self, **kwargs) -> "Compensation":
        """Attach fresh zero-initialised compensation modules (the VAE output is unchanged)."""
        from medsora.vae.compensation import Compensation

        self.remove_compensation()
        comp = Compensation(self.vae, **kwargs).to(device=self.device, dtype=self.dtype)
        comp.attach(self.vae)
        self.compensation = comp
        return comp

    def remove_compensation(self) -> None:
        if self.compensation is not None:
            self.compensation.detach()
            self.compensation = None

    def load_compensation(self, path: str | Path) -> "Compensation":
        """Load compensation weights saved by `save_compensation` on top of this base VAE.
        A file made for another architecture raises a ValueError that names the shapes."""
        from medsora.vae.compensation import Compensation

        self.remove_compensation()
        comp = Compensation.load(path, self.vae).to(device=self.device, dtype=self.dtype)
        comp.attach(self.vae)
        self.compensation = comp
        return comp

    def save_compensation(self, path: str | Path) -> Path:
        if self.compensation is None:
            raise ValueError("this VAE has no compensation modules to save (call add_compensation first)")
        return self.compensation.save(path, self.vae)

    @contextlib.contextmanager
    def compensation_disabled(self):
        """Run the base VAE alone inside the block (hooks removed, then put back)."""
        comp = self.compensation
        if comp is None:
            yield self
            return
        comp.detach()
        try:
            yield self
        finally:
            comp.attach(self.vae)

    def freeze_base(self) -> list[nn.Parameter]:
        """Freeze every base weight; return the compensation parameters (the only trainable ones)."""
        self.vae.requires_grad_(False)
        if self.compensation is None:
            return []
        self.compensation.requires_grad_(True)
        return list(self.compensation.parameters())

    # ------------------------------------------------------------------------------------------
    # the contract

    @property
    def config(self):
        return self.vae.config

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def temporal_factor(self) -> int:
        return int(self.vae.config.temporal_compression_ratio)

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for a clip of `num_frames` (16 -> 4, 17 -> 5, 8 -> 2, 1 -> 1).

        Mirrors diffusers' encode loop: chunks of 8 frames, the remainder joined to the first chunk,
        and each temporal down-sampling maps n frames to ceil(n / 2) (an odd first frame is kept).
        """
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        n_chunks = max(num_frames // SAMPLE_FRAMES_PER_CHUNK, 1)
        rest = num_frames % SAMPLE_FRAMES_PER_CHUNK
        sizes = [num_frames] if num_frames < SAMPLE_FRAMES_PER_CHUNK else \
            [SAMPLE_FRAMES_PER_CHUNK + rest] + [SAMPLE_FRAMES_PER_CHUNK] * (n_chunks - 1)
        levels = max(int(self.temporal_factor).bit_length() - 1, 0)  # log2(temporal factor)
        out = 0
        for n in sizes:
            for _ in range(levels):
                n = (n + 1) // 2
            out += n
        return out

    def enable_tiling(self, tile_size: int | None = None) -> "VideoVAE":
        """Spatial tiling (overlapping tiles, blended) and batch slicing, for large or long videos.
        `tile_size` is the pixel tile side (default: half of the config's sample size)."""
        self.vae.enable_tiling(tile_sample_min_height=tile_size, tile_sample_min_width=tile_size)
        self.vae.use_slicing = True  # one clip of the batch at a time
        return self

    def disable_tiling(self) -> "VideoVAE":
        self.vae.use_tiling = False
        self.vae.use_slicing = False
        return self

    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T, 3, H, W) in [-1, 1] -> latents (B, f, C, H/8, W/8), multiplied by `scaling_factor`.
        Deterministic (the posterior mean) unless `sample=True`."""
        f = self.spatial_factor
        if x.ndim != 5 or x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"expected clips (B, T, 3, H, W) with H and W multiples of {f}, got {tuple(x.shape)}")
        x = rearrange(x.to(device=self.device, dtype=self.dtype), "b t c h w -> b c t h w")
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample(generator=generator) if sample else posterior.mode()
        self._check_tiling(z.shape[-2:], (x.shape[-2] // f, x.shape[-1] // f))
        return rearrange(z, "b c f h w -> b f c h w") * self.scaling_factor

    def encode_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) in [-1, 1] -> the posterior's (mean, std), each (B, f, C, H/8, W/8) and multiplied by
        `scaling_factor`: a latent drawn as mean + std * randn is what `encode(x, sample=True)` returns."""
        f = self.spatial_factor
        if x.ndim != 5 or x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"expected clips (B, T, 3, H, W) with H and W multiples of {f}, got {tuple(x.shape)}")
        x = rearrange(x.to(device=self.device, dtype=self.dtype), "b t c h w -> b c t h w")
        posterior = self.vae.encode(x).latent_dist
        self._check_tiling(posterior.mean.shape[-2:], (x.shape[-2] // f, x.shape[-1] // f))
        s = self.scaling_factor
        return (rearrange(posterior.mean, "b c f h w -> b f c h w") * s, rearrange(posterior.std, "b c f h w -> b f c h w") * s)

    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Latents (B, f, C, h, w) (scaled) -> pixels (B, T, 3, 8h, 8w), clamped to [-1, 1] unless `clamp=False`."""
        z = rearrange(z.to(device=self.device, dtype=self.dtype), "b f c h w -> b c f h w") / self.scaling_factor
        x = rearrange(self.vae.decode(z).sample, "b c t h w -> b t c h w")
        f = self.spatial_factor
        self._check_tiling(x.shape[-2:], (z.shape[-2] * f, z.shape[-1] * f))
        return x.clamp(-1, 1) if clamp else x

    def _check_tiling(self, got, expected) -> None:
        # diffusers' tile arithmetic (overlap 1/6 x 1/5 of the tile) only fits some frame sizes, e.g. the
        # default 240 px tiles fit 256 px and 480x720 frames; refuse silently misaligned latents
        if tuple(got) != tuple(expected):
            raise ValueError(
                f"tiled VAE produced {tuple(got)} instead of {tuple(expected)} (tile "
                f"{self.vae.tile_sample_min_height}x{self.vae.tile_sample_min_width} px); pick another "
                f"enable_tiling(tile_size=...) or call disable_tiling() for this frame size")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction through the posterior mean, unclamped (for training losses)."""
        return self.decode(self.encode(x), clamp=False)

    @property
    def fingerprint(self) -> str:
        """A short identity string: name + hash of the config and of every weight (base and compensation).
        Latent caches store it and refuse to mix latents from different VAEs."""
        h = hashlib.sha256(json.dumps(_plain(dict(self.vae.config)), sort_keys=True, default=str).encode())
        _hash_tensors(h, self.vae.state_dict())
        out = f"{self.name}-{h.hexdigest()[:12]}"
        if self.compensation is not None:
            hc = hashlib.sha256()
            _hash_tensors(hc, self.compensation.state_dict())
            out += f"+comp-{hc.hexdigest()[:12]}"
        return out


def load_vae(vae_cfg, device=None) -> VideoVAE:
    """The VAE a config's `vae` section names (folder, compensation, tiling), in eval mode."""
    if not vae_cfg.path:
        raise ValueError("no VAE given: set vae.path=FOLDER (a CogVideoX `vae` folder, or a tiny VAE trained with "
                         "`medsora vae train-tiny`)")
    vae = VideoVAE.from_pretrained(vae_cfg.path, compensation=vae_cfg.compensation or None)
    if device:
        vae.to(device)
    if vae_cfg.tiling:
        vae.enable_tiling()
    return vae.eval()


def _hash_tensors(h, state: dict[str, torch.Tensor]) -> None:
    for k in sorted(state):
        t = state[k].detach().to("cpu").contiguous().reshape(-1)
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _plain(cfg: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if not k.startswith("_")}


# diffusers loads with less memory through accelerate and says so on every load without it: ask only where it can
_LOW_MEM = {"low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}


def _vae_weight_files(folder: Path) -> list[Path]:
    """The weight files diffusers would read from `folder` (single file, sharded index, or .bin)."""
    single = folder / WEIGHTS_NAME
    if single.exists():
        return [single]
    index = folder / (WEIGHTS_NAME + ".index.json")
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise WeightsError(f"{index}: not a readable shard index ({one_line(e)}); re-download the folder "
                               f"from {COGVIDEOX_URL}") from None
        return [folder / name for name in shards]
    return [folder / "diffusion_pytorch_model.bin"] if (folder / "diffusion_pytorch_model.bin").exists() else []


def _check_vae_folder(folder: Path) -> None:
    """The weights-check rule for a diffusers VAE folder: config.json must build a CogVideoX VAE, and its weight
    files must be readable and hold exactly that model's tensors; else a one-line `WeightsError`."""
    config_path = folder / "config.json"
    fix = (f"use the config.json of CogVideoX-2b's `vae` folder ({COGVIDEOX_URL}) or the one written by "
           "train_tiny_vae")
    try:
        config = AutoencoderKLCogVideoX.load_config(folder)
    except Exception as e:  # noqa: BLE001 - JSON and diffusers errors alike
        raise WeightsError(f"{config_path}: not a readable VAE config ({one_line(e)}); {fix}") from None
    try:
        with torch.device("meta"):  # shapes only, no memory
            expected = AutoencoderKLCogVideoX.from_config(config).state_dict()
    except Exception as e:  # noqa: BLE001 - a config of the wrong structure fails anywhere in the constructor
        raise WeightsError(f"{config_path} does not build a CogVideoX VAE ({type(e).__name__}: {one_line(e)}); "
                           f"{fix}") from None
    files = _vae_weight_files(folder)
    if not files:
        return  # only variant files (e.g. fp16): diffusers' own loading info is checked after loading
    found: dict = {}
    for f in files:
        if not f.is_file():
            raise WeightsError(f"{f} (listed in the shard index) not found; re-download the folder from {COGVIDEOX_URL}")
        found.update(file_shapes(f, source=COGVIDEOX_URL))
    problems = fit_problems(found, expected, label="config.json")
    if problems:
        where = files[0] if len(files) == 1 else folder
        raise WeightsError(f"the VAE in {folder} could not be loaded: {where} does not fit {config_path}: {problems}; "
                           f"re-download the folder (from {COGVIDEOX_URL}), or fix config.json")


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "~")) and "\\" not in s
