"""The video classifier of the downstream test: torchvision's VideoResNet, at the paper's size or a tiny one.

    build_classifier("r3d_18", num_classes=2, weights="r3d_18-b3b3357e.pth")   # Kinetics-400 weights, new head
    build_classifier("tiny", num_classes=2)                                     # random init, CPU-sized
    to_input(clips)    uint8 (B, T, C, H, W) -> float (B, C, T, H, W), Kinetics mean / std (torchvision's)

`r3d_18`, `mc3_18`, `r2plus1d_18` are torchvision's models (Tran et al. 2018; 33.2M / 11.7M / 31.5M parameters).
`tiny` is the same VideoResNet (BasicBlock, Conv3DSimple, one block per stage) with widths 16-32-64-128
instead of 64-128-256-512 and a 3x3x3 stem: 0.9M parameters, ~16x fewer FLOPs than one block per stage at full width.
A weight file (safetensors, or a PyTorch state dict read with `torch.load(weights_only=True)`) is loaded
strictly, except the final `fc` layer when its class count differs (a Kinetics head): that one starts fresh.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import video as tvv
from torchvision.models.video.resnet import BasicBlock, Conv3DSimple, VideoResNet

from ..errors import MedsoraError
from ..weights_check import fit_problems

log = logging.getLogger(__name__)
ARCHS = ("tiny", "r3d_18", "mc3_18", "r2plus1d_18")
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)   # torchvision's video classification transforms
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class ClassifierError(MedsoraError, ValueError):
    """A classifier that cannot be built or a weight file that does not fit it."""


class TinyVideoResNet(VideoResNet):
    """torchvision's VideoResNet with narrow stages (its `_make_layer`, `forward` and initialisation)."""

    def __init__(self, num_classes: int, widths=(16, 32, 64, 128), layers=(1, 1, 1, 1)):
        nn.Module.__init__(self)
        self.inplanes = widths[0]
        self.stem = nn.Sequential(  # BasicStem at widths[0] channels, 3x3 spatial kernel (small clips)
            nn.Conv3d(3, widths[0], kernel_size=3, stride=(1, 2, 2), padding=1, bias=False),
            nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True))
        self.layer1 = self._make_layer(BasicBlock, Conv3DSimple, widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(BasicBlock, Conv3DSimple, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, Conv3DSimple, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, Conv3DSimple, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # torchvision's VideoResNet initialisation
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


def build_classifier(arch: str, num_classes: int, weights: str | Path | None = None) -> nn.Module:
    """A randomly initialised classifier (the caller seeds torch), or one loaded from `weights`."""
    if arch not in ARCHS:
        raise ClassifierError(f"unknown classifier {arch!r}; choose one of {', '.join(ARCHS)}")
    model = TinyVideoResNet(num_classes) if arch == "tiny" else getattr(tvv, arch)(weights=None,
                                                                                   num_classes=num_classes)
    if weights:
        load_classifier_weights(model, weights, arch)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ClassifierError(f"classifier weights {path} do not exist (torchvision's r3d_18 Kinetics weights: "
                              "r3d_18-b3b3357e.pth from download.pytorch.org/models)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch / safetensors raise several types for a bad file
        raise ClassifierError(f"classifier weights {path}: not a readable state dict ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    for key in ("state_dict", "model"):          # common wrappers of training scripts
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ClassifierError(f"classifier weights {path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_classifier_weights(model: nn.Module, path: str | Path, arch: str) -> None:
    """Load `path` into `model` strictly; a head (`fc.*`) of another class count is left at its fresh init."""
    path = Path(path)
    sd, own = _read_state_dict(path), model.state_dict()
    head = [k for k in ("fc.weight", "fc.bias") if k in sd and k in own and sd[k].shape != own[k].shape]
    for k in head:
        sd[k] = own[k]
    if head:
        log.info("%s: new %d-class head (the file's fc has %d outputs)", path, own["fc.bias"].numel(),
                 len(sd.get("fc.bias", [])) if "fc.bias" not in head else -1)
    problems = fit_problems(sd, own, label=arch)
    if problems:
        raise ClassifierError(f"classifier weights {path} do not fit --arch {arch}: {problems}")
    model.load_state_dict(sd)


def to_input(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, C, H, W) -> float (B, C, T, H, W), normalised with the Kinetics mean and std."""
    x = clips.float().div_(255.0)
    mean = torch.tensor(KINETICS_MEAN, device=x.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(KINETICS_STD, device=x.device).view(1, 1, 3, 1, 1)
    return ((x - mean) / std).permute(0, 2, 1, 3, 4).contiguous()   # b t c h w -> b c t h w
