"""Frame consistency (FC, Esser et al. 2023): mean CLIP cosine similarity of consecutive frames × 100.

Each frame is embedded with a CLIP image encoder and its projection (transformers'
`CLIPVisionModelWithProjection`, ViT-L/14 by default), preprocessed as CLIP's processor does:
bicubic resize of the short side to the model's size, centre crop, CLIP mean/std. A video's FC is
the mean over its t-1 consecutive pairs; the reported FC is the mean over videos.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torchvision.transforms.v2 import functional as TF

from ..weights_check import WeightsError, one_line
from .weights import check_loading_info, refetch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_clip(path: str | Path, device="cpu") -> torch.nn.Module:
    """CLIP image tower + projection from a local folder (a full CLIPModel or a vision-only save)."""
    from transformers import AutoConfig, CLIPConfig, CLIPVisionModelWithProjection

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CLIP folder {path} does not exist")
    from transformers.utils import logging as hf_logging

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - missing/garbled config.json
        raise WeightsError(f"{path / 'config.json'}: not a readable CLIP config ({one_line(e)}); "
                           f"{refetch('clip-vit-large-patch14')}") from None
    if isinstance(config, CLIPConfig):  # a full CLIP save: keep its vision tower and its projection width
        config.vision_config.projection_dim = config.projection_dim
        config = config.vision_config
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the text tower's weights are unused on purpose: no report about them
    try:
        model, info = CLIPVisionModelWithProjection.from_pretrained(path, config=config, output_loading_info=True)
    except Exception as e:  # noqa: BLE001 - truncated weights, shapes that do not fit config.json
        raise WeightsError(f"the CLIP folder {path} could not be loaded ({one_line(e)}); "
                           f"{refetch('clip-vit-large-patch14')}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    # a full CLIPModel save also holds the text tower, unused here on purpose
    check_loading_info(info, path, "CLIP image encoder", allow_unexpected=("text_model.", "text_projection",
                                                                            "logit_scale"))
    return model.eval().to(device)


def _processor_stats(path: str | Path | None):
    """Mean/std from the folder's preprocessor_config.json when present, else CLIP's."""
    import json

    cfg = Path(path) / "preprocessor_config.json" if path else None
    if cfg is not None and cfg.exists():
        d = json.loads(cfg.read_text())
        return tuple(d.get("image_mean", CLIP_MEAN)), tuple(d.get("image_std", CLIP_STD))
    return CLIP_MEAN, CLIP_STD


class CLIPEmbeddings:
    """Callable: uint8 frames (n, h, w, 3) → L2-normalised image embeddings (n, projection_dim)."""

    name = "clip"

    def __init__(self, model: torch.nn.Module, device="cpu", folder: str | Path | None = None):
        self.model, self.device = model.to(device).eval(), torch.device(device)
        self.size = model.config.image_size
        self.mean, self.std = _processor_stats(folder)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = rearrange(torch.as_tensor(frames).to(self.device), "n h w c -> n c h w")
        x = TF.resize(x, self.size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, [self.size, self.size]).float() / 255.0
        x = TF.normalize(x, self.mean, self.std)
        emb = self.model(pixel_values=x).image_embeds
        return F.normalize(emb.float(), dim=-1)


def frame_consistency(emb: torch.Tensor) -> torch.Tensor:
    """(b, t, d) frame embeddings → (b,) mean cosine similarity of consecutive frames × 100."""
    emb = F.normalize(emb.float(), dim=-1)
    return (emb[:, 1:] * emb[:, :-1]).sum(-1).mean(1) * 100
