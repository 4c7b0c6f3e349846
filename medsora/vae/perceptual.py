"""LPIPS (Zhang et al. 2018) from the `lpips` package, with the ImageNet trunk read from a local file.

The package ships its linear calibration weights; the trunk (torchvision VGG16 or AlexNet ImageNet
weights) is never downloaded here: pass its path, or have it in the torch hub cache
(`~/.cache/torch/hub/checkpoints/`), where torchvision itself puts it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..weights_check import load_checked, read_weights

TRUNK_FILES = {  # net -> (torchvision file name, where to get it)
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}


def load_lpips(net: str = "vgg", trunk_path: str | Path | None = None, pretrained: bool = True):
    """A frozen `lpips.LPIPS` taking images (N, 3, H, W) in [-1, 1].

    pretrained=True: calibrated linear layers (from the package) on the ImageNet trunk at `trunk_path`
    (default: the torch hub cache); a missing file raises FileNotFoundError naming it and its URL.
    pretrained=False: random trunk and linear layers (tests only).
    """
    import lpips

    if net not in TRUNK_FILES:
        raise ValueError(f"LPIPS net must be one of {sorted(TRUNK_FILES)}, got {net!r}")
    model = lpips.LPIPS(net=net, pretrained=pretrained, pnet_rand=True, verbose=False)
    if pretrained:
        name, url = TRUNK_FILES[net]
        path = Path(trunk_path).expanduser() if trunk_path else Path(torch.hub.get_dir()) / "checkpoints" / name
        if not path.is_file():
            raise FileNotFoundError(
                f"LPIPS needs the torchvision ImageNet {net} weights: {path} not found. Download {url} and pass "
                f"its path (lpips trunk), or set the LPIPS weight to 0.")
        state = read_weights(path, url)
        # lpips slices torchvision's `features` keeping the layer indices: sliceK.<i>.weight <- features.<i>.weight
        wanted = {k: "features." + k.split(".", 1)[1] for k in model.net.state_dict()}
        load_checked(model.net, {k: state[src] for k, src in wanted.items() if src in state},
                     f"{path} does not hold torchvision's ImageNet {net} weights (LPIPS trunk)",
                     f"download {url} and pass its path")
    return model.eval().requires_grad_(False)
