"""Frequency-compensation modules (paper Sec. 3.3, Fig. 4) hooked into a frozen `AutoencoderKLCogVideoX`.

- Encoder: a residual 2D-conv module applied frame by frame *before* each 2D down-sampling layer
  (`CogVideoXDownsample3D`), through a forward pre-hook.
- Decoder: a residual causal 3D-conv module in the *middle* of each up block (after resnet
  (n - 1) // 2 of its n resnets), through a forward hook. It uses diffusers' own
  `CogVideoXCausalConv3d` and keeps its causal cache inside the resnet's conv cache, so decoding in
  chunks of latent frames gives the same result as the base's own chunked loop.

Each module computes x + conv_b(SiLU(conv_a(x))) with conv_b zero-initialised, so an attached, untrained
`Compensation` leaves the VAE output exactly unchanged. Nothing of diffusers is copied or subclassed: the
base model object is untouched and `detach()` restores it.

Saved alone with safetensors (metadata: base config, width ratio) plus a small JSON sidecar.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLCogVideoX
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXCausalConv3d
from einops import rearrange
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..weights_check import WeightsError, fit_problems, unreadable

CACHE_KEY = "medsora_compensation"  # our entry in the hooked resnet's conv-cache dict
FORMAT = "medsora-vae-compensation-v1"
_BASE_KEYS = ("block_out_channels", "latent_channels", "layers_per_block", "temporal_compression_ratio")


class Residual2d(nn.Module):
    """x + conv_b(SiLU(conv_a(x))) on every frame; 3x3 convs, conv_b zero-initialised."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv_a = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv_b = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.conv_b.weight)
        nn.init.zeros_(self.conv_b.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = rearrange(x, "b c t h w -> (b t) c h w")
        y = self.conv_b(F.silu(self.conv_a(y)))
        return x + rearrange(y, "(b t) c h w -> b c t h w", b=b)


class ResidualCausal3d(nn.Module):
    """x + conv_b(SiLU(conv_a(x))) with 3x3x3 causal convs (CogVideoX's); conv_b zero-initialised.
    `cache` carries the last frames of the previous chunk, as in the base VAE."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv_a = CogVideoXCausalConv3d(channels, hidden, kernel_size=3)
        self.conv_b = CogVideoXCausalConv3d(hidden, channels, kernel_size=3)
        nn.init.zeros_(self.conv_b.conv.weight)
        nn.init.zeros_(self.conv_b.conv.bias)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> tuple[torch.Tensor, dict]:
        cache = cache or {}
        y, cache_a = self.conv_a(x, conv_cache=cache.get("a"))
        y, cache_b = self.conv_b(F.silu(y), conv_cache=cache.get("b"))
        return x + y, {"a": cache_a, "b": cache_b}


class _CompensateInput:
    """Forward pre-hook: replace a down-sampler's input x with module(x)."""

    def __init__(self, module: Residual2d):
        self.module = module

    def __call__(self, downsampler, args):
        return (self.module(args[0]), *args[1:])


class _CompensateOutput:
    """Forward hook (with kwargs) on a decoder resnet: compensate its output, thread our causal cache
    through the resnet's own conv-cache dict (called as resnet(h, temb, zq, conv_cache=...) or, under
    gradient checkpointing, with conv_cache as the 4th positional argument)."""

    def __init__(self, module: ResidualCausal3d):
        self.module = module

    def __call__(self, resnet, args, kwargs, output):
        hidden, cache = output
        previous = kwargs["conv_cache"] if "conv_cache" in kwargs else (args[3] if len(args) > 3 else None)
        hidden, cache[CACHE_KEY] = self.module(hidden, (previous or {}).get(CACHE_KEY))
        return hidden, cache


def _middle(n_resnets: int) -> int:
    """Index of the resnet after which the decoder module sits: 4 resnets -> after #1 (2 | 2)."""
    return (n_resnets - 1) // 2


class Compensation(nn.Module):
    """All compensation modules for one VAE architecture; `attach(vae)` hooks them in."""

    def __init__(self, vae: AutoencoderKLCogVideoX, width_ratio: float = 0.5):
        super().__init__()
        self.width_ratio = float(width_ratio)
        hidden = lambda c: max(1, round(c * self.width_ratio))  # noqa: E731
        self.encoder = nn.ModuleDict({
            f"down{i}": Residual2d(blk.downsamplers[0].conv.in_channels, hidden(blk.downsamplers[0].conv.in_channels))
            for i, blk in enumerate(vae.encoder.down_blocks) if blk.downsamplers is not None})
        self.decoder = nn.ModuleDict()
        for i, blk in enumerate(vae.decoder.up_blocks):
            c = blk.resnets[_middle(len(blk.resnets))].out_channels
            self.decoder[f"up{i}"] = ResidualCausal3d(c, hidden(c))
        self._handles: list = []

    def attach(self, vae: AutoencoderKLCogVideoX) -> "Compensation":
        self.detach()
        for name, module in self.encoder.items():
            target = vae.encoder.down_blocks[int(name[len("down"):])].downsamplers[0]
            self._handles.append(target.register_forward_pre_hook(_CompensateInput(module)))
        for name, module in self.decoder.items():
            blk = vae.decoder.up_blocks[int(name[len("up"):])]
            target = blk.resnets[_middle(len(blk.resnets))]
            self._handles.append(target.register_forward_hook(_CompensateOutput(module), with_kwargs=True))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    # ------------------------------------------------------------------------------------------
    # files

    def save(self, path: str | Path, vae: AutoencoderKLCogVideoX) -> Path:
        """Write `path` (safetensors, compensation weights only) and `path.json` (base config, shapes)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        base = _base_summary(vae)
        save_file(state, str(path), metadata={"format": FORMAT, "width_ratio": str(self.width_ratio),
                                               "base_config": json.dumps(base)})
        side = {"format": FORMAT, "width_ratio": self.width_ratio, "base_config": base,
                "num_parameters": sum(v.numel() for v in state.values()),
                "shapes": {k: list(v.shape) for k, v in state.items()}}
        path.with_suffix(".json").write_text(json.dumps(side, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, vae: AutoencoderKLCogVideoX) -> "Compensation":
        """Build the modules for `vae` and load `path` into them; a file made for another
        architecture raises a ValueError naming the mismatching shapes."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"compensation file {path} not found (written by `medsora vae train`)")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
            width_ratio = float(meta.get("width_ratio", 0.5))
        except Exception as e:  # noqa: BLE001 - truncated or foreign file: safetensors raises several types
            raise unreadable(path, e, fix="re-download (copy again) the file its training run wrote, or retrain "
                                          "it with `medsora vae train`") from None
        comp = cls(vae, width_ratio=width_ratio)
        problems = fit_problems(state, comp.state_dict(), label="this VAE", examples=8)
        if problems:
            made_for = meta.get("base_config", "unknown")
            raise WeightsError(
                f"compensation file {path} does not fit this VAE: {problems}; file made for {made_for}; this VAE is "
                f"{json.dumps(_base_summary(vae))}. Load it on the VAE it was trained on, or retrain it "
                "(`medsora vae train`)")
        comp.load_state_dict(state)
        return comp


def _base_summary(vae: AutoencoderKLCogVideoX) -> dict:
    return {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in vae.config.items() if k in _BASE_KEYS}
