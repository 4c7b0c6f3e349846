"""DINO ViT-S/8 features of flow images: every layer asked for, CLS dropped, LayerNorm-ed without affine.

    dino = load_dino("dino_deitsmall8_pretrain.pth", img_size=128)      # or timm's model.safetensors, or "hub"
    feats = dino_features(dino, rgb, layers=(0, 2, 4))   # rgb (N, 3, 128, 128) in [0, 1] -> {layer: (N, 256, 384)}

The model is timm's `vit_small_patch8_224.dino` built for the clip size: its 28x28 position embeddings are
resampled to the clip's grid when the weights are loaded (timm's `checkpoint_filter_fn`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from .patch_features import FlowPatchFeatures
from ..weights_check import WeightsError, load_checked, one_line, state_dict_of, unreadable

DINO_NAME = "vit_small_patch8_224.dino"
DINO_SOURCES = ("https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth "
                "(the original DINO file) or model.safetensors from https://huggingface.co/timm/vit_small_patch8_224.dino")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or .pth file: timm's keys, the original DINO release, or a DINO training
    checkpoint (its `teacher` backbone)."""
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated/foreign files raise many types
        raise unreadable(path, e, DINO_SOURCES) from None
    if isinstance(sd, dict) and isinstance(sd.get("teacher"), dict):
        sd = sd["teacher"]
    sd = state_dict_of(sd, path, DINO_SOURCES)                  # also unwraps {'model'|'state_dict': ...}
    for prefix in ("module.", "backbone."):                    # DDP and DINO's MultiCropWrapper
        sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if not k.startswith("head")}   # DINO's projection head is not the ViT


def load_dino(weights: str | Path | None, img_size: int | tuple[int, int] = 128, name: str = DINO_NAME,
              **model_kwargs) -> VisionTransformer:
    """timm ViT `name` at `img_size`, frozen, in eval mode, weights from a local file.

    weights: path to a .safetensors/.pth state dict (timm keys or the original DINO release), "hub" for timm's
    download (needs internet), or None for random initialisation (tests and benchmarks only).
    model_kwargs go to `timm.create_model` (tests pass a small depth/width through the same path).
    """
    model_kwargs = dict(num_classes=0, **model_kwargs)
    if weights == "hub":
        try:
            model = timm.create_model(name, pretrained=True, img_size=img_size, **model_kwargs)
        except (OSError, RuntimeError) as e:           # offline and not in the Hugging Face cache
            raise FileNotFoundError(f"could not get {name} weights from the hub: {e}. "
                                    f"Download {DINO_SOURCES} and pass its path.") from e
    else:
        model = timm.create_model(name, pretrained=False, img_size=img_size, **model_kwargs)
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"DINO weights not found: {path}. Download {DINO_SOURCES}.")
            sd = _read_state_dict(path)
            try:
                sd = checkpoint_filter_fn(sd, model)  # resamples pos_embed to img_size
            except Exception as e:  # noqa: BLE001 - another network's tensors fail anywhere in the filter
                raise WeightsError(f"{path} does not hold {name} weights ({type(e).__name__}: {one_line(e)}); "
                                   f"use {DINO_SOURCES}") from None
            load_checked(model, sd, f"{path} does not hold {name} weights", f"use {DINO_SOURCES}")
    return model.eval().requires_grad_(False)


@torch.no_grad()
def dino_features(model: VisionTransformer, images: torch.Tensor, layers: Sequence[int],
                  batch_size: int = 64) -> dict[int, torch.Tensor]:
    """Patch-token features of each layer in `layers` for images (N, 3, H, W) in [0, 1].

    ImageNet-normalised input (the model's pretrained_cfg mean/std); every layer through the model's final norm
    (`norm=True`, as DINO's get_intermediate_layers), CLS dropped, then LayerNorm without affine.
    Returns {layer: (N, H/p · W/p, dim)} in float32.
    """
    if isinstance(model, FlowPatchFeatures):   # the weight-free stand-in (flow.features=patches)
        return model(images, layers)
    layers = sorted(set(int(i) for i in layers))
    depth = len(model.blocks)
    if not layers or layers[0] < 0 or layers[-1] >= depth:
        raise ValueError(f"DINO layers must be in [0, {depth}), got {layers}")
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"], device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=images.device).view(1, 3, 1, 1)
    out: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
    for chunk in images.float().split(batch_size):
        x = (chunk - mean) / std
        feats = model.forward_intermediates(x, indices=layers, norm=True, output_fmt="NLC",
                                            intermediates_only=True, stop_early=True)  # [(n, tokens, dim)], no CLS
        for i, f in zip(layers, feats):
            out[i].append(F.layer_norm(f, f.shape[-1:]))
    return {i: torch.cat(v) for i, v in out.items()}

