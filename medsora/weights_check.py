"""The one rule every network loader of medsora follows (VAE, compensation, DINO, RAFT, I3D, Inception,
VideoMAE, CLIP, LPIPS):

1. the weight file must be readable: a truncated, empty or foreign file (not safetensors, not a torch state dict
   loadable with `torch.load(weights_only=True)`) raises `WeightsError` naming the file and saying to re-download it;
2. its tensors must cover the network's state dict exactly: missing, unexpected or wrongly shaped tensors raise
   `WeightsError` with the counts and one example of each ("weights/vae: 243 of 244 tensors missing
   (e.g. encoder.conv_in.weight); re-download the folder"). Nothing is ever randomly initialised.

Every message is one line; `WeightsError` is a `MedsoraError` (the CLI prints `error: ...`, exit code 2) and a
`ValueError` (what the loaders raised before).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .errors import MedsoraError


class WeightsError(MedsoraError, ValueError):
    """A weight file that cannot be read, or whose tensors do not fit the network; the message names the file."""


def one_line(e: BaseException | str, limit: int = 200) -> str:
    """An exception's message on one line, cut to `limit` characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def unreadable(path: str | Path, reason: BaseException | str, source: str | None = None,
               fix: str | None = None) -> WeightsError:
    """The error for a file that cannot be read: names it, says why in a few words, and to re-download it."""
    path = Path(path)
    kind = "safetensors" if _is_safetensors(path) else "torch (weights_only)"
    fix = fix or ("re-download it" + (f" from {source}" if source else ""))
    return WeightsError(f"{path}: not a readable {kind} weight file ({one_line(reason)}); it is truncated or "
                        f"damaged: {fix}")


def read_weights(path: str | Path, source: str | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file, or of a torch.save'd state dict read with weights_only=True
    (a {'model': ...}, {'state_dict': ...} or {'module': ...} wrapper is unwrapped, non-tensor entries dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} not found" + (f": download it from {source}" if source else ""))
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - safetensors/pickle/zip raise many types for a broken file
        raise unreadable(path, e, source) from None
    return state_dict_of(sd, path, source)


def state_dict_of(obj, path: str | Path, source: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a loaded torch file (unwrapping the usual {'model'|'state_dict'|'module': ...} wrappers)."""
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise unreadable(path, f"holds a {type(obj).__name__}, not a state dict", source)
    sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not sd:
        raise unreadable(path, "holds no tensors", source)
    return sd


def file_shapes(path: str | Path, source: str | None = None) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a weight file; for safetensors only its header is read (cheap for multi-GB files)."""
    path = Path(path)
    if not _is_safetensors(path):
        return {k: tuple(v.shape) for k, v in read_weights(path, source).items()}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise unreadable(path, e, source) from None


def _shapes(d: Mapping) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in d.items()}


def fit_problems(found: Mapping, expected: Mapping, label: str = "model", examples: int = 1) -> str | None:
    """None when `found` (tensors or shapes) covers `expected` exactly; else the counts, one clause each:
    'N of M tensors missing (e.g. k); N unexpected tensors (e.g. k); N of M tensors size mismatch (e.g. k: file
    (a,) vs model (b,))'."""
    found, expected = _shapes(found), _shapes(expected)
    missing = [k for k in expected if k not in found]
    unexpected = sorted(k for k in found if k not in expected)
    wrong = [(k, found[k], expected[k]) for k in expected if k in found and found[k] != expected[k]]
    if not (missing or unexpected or wrong):
        return None
    n = len(expected)
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {n} tensors missing (e.g. {missing[0]})")
    if wrong:
        eg = ", ".join(f"{k}: file {a} vs {label} {b}" for k, a, b in wrong[:examples])
        parts.append(f"{len(wrong)} of {n} tensors size mismatch (e.g. {eg})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    return "; ".join(parts)


def check_fit(found: Mapping, expected: Mapping, where: str | Path, fix: str, label: str = "model") -> None:
    """Raise `WeightsError` "`where`: <counts>; `fix`" unless `found` covers `expected` exactly."""
    problems = fit_problems(found, expected, label)
    if problems:
        raise WeightsError(f"{where}: {problems}; {fix}")


def load_checked(module: torch.nn.Module, sd: Mapping[str, torch.Tensor], where: str | Path, fix: str,
                 label: str = "model") -> torch.nn.Module:
    """`check_fit` against the module's state dict, then `load_state_dict(strict=True)`."""
    check_fit(sd, module.state_dict(), where, fix, label)
    module.load_state_dict(dict(sd), strict=True)
    return module
