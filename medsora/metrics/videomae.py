"""CD-FVD features: VideoMAE (Ge et al. 2024, "On the Content Bias in Fréchet Video Distance").

CD-FVD (songweige/content-debiased-fvd) uses VideoMAE-v2 ViT-g/14 fine-tuned on SSv2
(`vit_g_hybrid_pt_1200e_ssv2_ft.pth`), fed 16 frames scaled to [0, 1] (no mean/std normalisation)
and bilinearly resized to 224×224; the feature is the classifier's input: the mean of the last
layer's tokens through `fc_norm` (1408-d). The network here is transformers' `VideoMAE*`; the
VideoMAE-v2 checkpoint is converted to it on load (same blocks: q/v biases, no key bias, GELU MLP,
fixed sinusoid positions, no layer scale), or a transformers folder is loaded as is.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from einops import rearrange

from .fvd import resize_frames
from ..weights_check import WeightsError, load_checked, one_line
from .weights import check_loading_info, load_state_dict, refetch

# attention heads of the published VideoMAE(-v2) widths (not recoverable from weight shapes)
HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


def convert_videomae_v2(sd: dict, num_heads: int | None = None, image_size: int = 224, num_frames: int = 16):
    """VideoMAE-v2 fine-tune state dict → (VideoMAEConfig, state dict of VideoMAEForVideoClassification)."""
    from transformers import VideoMAEConfig

    w = sd["patch_embed.proj.weight"]  # (d, 3, tubelet, p, p)
    hidden, tubelet, patch = w.shape[0], w.shape[2], w.shape[-1]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    heads = num_heads or HEADS_BY_WIDTH.get(hidden, hidden // 64)
    config = VideoMAEConfig(
        image_size=image_size, patch_size=patch, num_frames=num_frames, tubelet_size=tubelet,
        hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=heads,
        intermediate_size=sd["blocks.0.mlp.fc1.weight"].shape[0], hidden_act="gelu", layer_norm_eps=1e-6,
        use_mean_pooling="fc_norm.weight" in sd, num_labels=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
    )
    out = {
        "videomae.embeddings.patch_embeddings.projection.weight": w,
        "videomae.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
    }
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"videomae.encoder.layer.{i}."
        q, k, v = sd[src + "attn.qkv.weight"].chunk(3)  # (3d, d) -> 3 × (d, d)
        out |= {
            dst + "attention.attention.query.weight": q,
            dst + "attention.attention.key.weight": k,
            dst + "attention.attention.value.weight": v,
            dst + "attention.attention.query.bias": sd[src + "attn.q_bias"],
            dst + "attention.attention.value.bias": sd[src + "attn.v_bias"],
            dst + "attention.output.dense.weight": sd[src + "attn.proj.weight"],
            dst + "attention.output.dense.bias": sd[src + "attn.proj.bias"],
            dst + "intermediate.dense.weight": sd[src + "mlp.fc1.weight"],
            dst + "intermediate.dense.bias": sd[src + "mlp.fc1.bias"],
            dst + "output.dense.weight": sd[src + "mlp.fc2.weight"],
            dst + "output.dense.bias": sd[src + "mlp.fc2.bias"],
            dst + "layernorm_before.weight": sd[src + "norm1.weight"],
            dst + "layernorm_before.bias": sd[src + "norm1.bias"],
            dst + "layernorm_after.weight": sd[src + "norm2.weight"],
            dst + "layernorm_after.bias": sd[src + "norm2.bias"],
        }
    for name in ("fc_norm.weight", "fc_norm.bias"):
        if name in sd:
            out[name] = sd[name]
    if "head.weight" in sd:
        out["classifier.weight"], out["classifier.bias"] = sd["head.weight"], sd["head.bias"]
    return config, {k: t.float() for k, t in out.items()}


def load_videomae(path: str | Path, device="cpu", num_heads: int | None = None) -> torch.nn.Module:
    """VideoMAE from a transformers folder, or from a VideoMAE-v2 `.pth` checkpoint (converted)."""
    from transformers import AutoConfig, VideoMAEForVideoClassification, VideoMAEModel

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"VideoMAE weights {path} do not exist")
    if path.is_dir():
        try:
            config = AutoConfig.from_pretrained(path)
        except Exception as e:  # noqa: BLE001 - missing/garbled config.json
            raise WeightsError(f"{path / 'config.json'}: not a readable VideoMAE config ({one_line(e)}); "
                               f"{refetch('videomae')}") from None
        classifier = "VideoMAEForVideoClassification" in (config.architectures or [])
        try:
            model, info = (VideoMAEForVideoClassification if classifier else VideoMAEModel).from_pretrained(
                path, output_loading_info=True)
        except Exception as e:  # noqa: BLE001 - truncated weights, shapes that do not fit config.json
            raise WeightsError(f"the VideoMAE folder {path} could not be loaded ({one_line(e)}); "
                               f"{refetch('videomae')}") from None
        check_loading_info(info, path, "VideoMAE")
    else:
        try:
            config, sd = convert_videomae_v2(load_state_dict(path), num_heads)
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            if isinstance(e, WeightsError):
                raise
            why = f"no tensor {one_line(e)}" if isinstance(e, KeyError) else f"{type(e).__name__}: {one_line(e)}"
            raise WeightsError(f"{path} does not hold VideoMAE-v2 weights ({why}); {refetch(path)}") from None
        model = VideoMAEForVideoClassification(config)
        own = model.state_dict()
        if any(k.endswith("attention.attention.q_bias") for k in own):  # transformers < 5: q_bias / v_bias
            sd = {k.replace("query.bias", "q_bias").replace("value.bias", "v_bias"): t for k, t in sd.items()}
        load_checked(model, sd, f"{path} does not hold VideoMAE-v2 weights", refetch(path))
        if model.fc_norm is not None:
            model.fc_norm.eps = 1e-6  # VideoMAE-v2's fc_norm epsilon (transformers builds it with 1e-5)
    return model.eval().to(device)


class VideoMAEFeatures:
    """Callable: uint8 videos (b, t, h, w, 3) → float32 (b, hidden) CD-FVD features."""

    name = "videomae"

    def __init__(self, model: torch.nn.Module, device="cpu"):
        self.model, self.device = model.to(device).eval(), torch.device(device)
        self.backbone = getattr(model, "videomae", model)
        self.fc_norm = getattr(model, "fc_norm", None)
        cfg = self.backbone.config
        self.size, self.num_frames = cfg.image_size, cfg.num_frames

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        videos = torch.as_tensor(videos).to(self.device)
        if videos.shape[1] != self.num_frames:
            raise ValueError(f"VideoMAE takes {self.num_frames} frames, got {videos.shape[1]}")
        x = resize_frames(videos, self.size) / 255.0  # (b, 3, t, s, s) in [0, 1], as CD-FVD
        x = rearrange(x, "b c t h w -> b t c h w")
        tokens = self.backbone(pixel_values=x).last_hidden_state  # (b, n, d)
        feats = tokens.mean(1)
        return (self.fc_norm(feats) if self.fc_norm is not None else feats).float()
