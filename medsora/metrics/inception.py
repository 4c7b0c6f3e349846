"""FID and IS features: the Inception-v3 of FID (TF graph inception-2015-12-05), frame by frame.

The network is torchvision's Inception-v3 with pytorch-fid's `FIDInception*` blocks (the TF graph
pools differently from torchvision: average pools exclude padding, Mixed_7c max-pools) and a
1008-way classifier, so pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` loads strictly.
Frames: uint8 → [0, 1] → bilinear resize to 299×299 → [-1, 1] (pytorch-fid's protocol).
FID features: the 2048-d pool3 output. IS (Salimans et al. 2016): softmax over the 1008 logits
computed without the classifier bias (as StyleGAN and torch-fidelity), 10 splits.
StyleGAN's TorchScript `inception-2015-12-05.pt` is accepted too (it resizes and scales itself).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..weights_check import load_checked
from .weights import is_torchscript, load_state_dict, load_torchscript, refetch

FID_SIZE = 299


def fid_inception_v3() -> torch.nn.Module:
    """The FID Inception-v3 architecture, randomly initialised (weights come from `load_inception`)."""
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net.eval()


_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")


def pool3(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(n, 3, 299, 299) in [-1, 1] → (n, 2048) pool3 features."""
    for name in _TRUNK:
        x = getattr(net, name)(x)
    return x.flatten(1)


def load_inception(path: str | Path, device="cpu") -> torch.nn.Module:
    """FID Inception from pytorch-fid's state dict, or StyleGAN's TorchScript detector."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Inception weights {path} do not exist")
    if is_torchscript(path):
        return load_torchscript(path, device)
    sd = load_state_dict(path)
    net = fid_inception_v3()
    load_checked(net, sd, f"{path} does not hold FID Inception-v3 weights", refetch(path))
    return net.eval().to(device)


class InceptionFeatures:
    """Callable: uint8 frames (n, h, w, 3) → (pool3 (n, 2048), class probabilities (n, 1008) or None)."""

    name = "inception"

    def __init__(self, net, device="cpu", size: int = FID_SIZE):
        self.net, self.device, self.size = net.to(device).eval(), torch.device(device), size
        self.scripted = isinstance(net, torch.jit.ScriptModule)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor, with_probs: bool = True):
        frames = torch.as_tensor(frames).to(self.device)
        if self.scripted:  # StyleGAN's detector: uint8 (n, 3, h, w), resizes to 299 itself
            x = rearrange(frames, "n h w c -> n c h w").contiguous()
            feats = self.net(x, return_features=True).float()
            return feats, self.net(x, no_output_bias=True).float() if with_probs else None
        x = rearrange(frames, "n h w c -> n c h w").float() / 255.0
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False) * 2 - 1
        feats = pool3(self.net, x)
        if not with_probs:
            return feats.float(), None
        logits = feats @ self.net.fc.weight.T  # no bias, as the IS of StyleGAN / torch-fidelity
        return feats.float(), logits.softmax(-1).float()


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) per split; returns (mean, std) over `splits` splits."""
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    splits = max(1, min(splits, n))
    scores = []
    for i in range(splits):
        part = probs[i * n // splits:(i + 1) * n // splits]
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(py, 1e-30, None)))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
