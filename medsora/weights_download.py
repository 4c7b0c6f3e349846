"""`medsora weights download [NAME ...] [--dir DIR] [--mirror URL]`: every pretrained network the package can use,
fetched from its published source into the folder the commands search (`--weights`, `$MEDSORA_WEIGHTS`,
`~/.cache/medsora/weights`).

    download(["i3d", "c3d"], "weights")    # -> {"i3d": Path("weights/i3d_torchscript.pt"), ...}

Each file is written to `NAME.part` (a partial download resumes with an HTTP Range request), verified, then
renamed: a failed or mismatching download leaves nothing under its final name and no partial file when the
checksum fails. Verification: the sha256 pinned below where the source publishes it or the file name carries its
prefix (torchvision's and pytorch-fid's `-<hash>.pth`); otherwise the size and sha256 of the first download are
recorded in `DIR/weights.lock.json` and every later download or `--verify` checks against them.
Hub folders (CLIP, the CogVideoX VAE) come through `huggingface_hub` (its own `HF_ENDPOINT` and cache apply).
A mirror (`--mirror URL` or `$MEDSORA_WEIGHTS_MIRROR`) stands in for the direct sources: file F is fetched from
URL/F, for institutions behind a proxy. Written by hand over urllib because no library here does resumable,
verified, atomic downloads of arbitrary URLs (torch.hub's download_url_to_file neither resumes nor takes a mirror).
"""
from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import file_sha256, write_json_atomic
from .errors import MedsoraError

LOCK = "weights.lock.json"
MIRROR_ENV = "MEDSORA_WEIGHTS_MIRROR"
CHUNK = 1 << 20


class DownloadError(MedsoraError, RuntimeError):
    pass


@dataclass(frozen=True)
class Remote:
    """One network: a file at `url` saved as `file`, or a hub folder (`repo`, `subfolder`) saved as folder `file`."""

    name: str
    network: str
    file: str
    url: str = ""
    sha256: str = ""          # full digest, or the prefix the file name carries
    repo: str = ""
    subfolder: str = ""
    use: str = ""             # what to set so the commands use it ("" = found in the weights folder)


CATALOG = {r.name: r for r in (
    Remote("i3d", "I3D (FVD, StyleGAN-V's TorchScript)", "i3d_torchscript.pt",
           "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"),
    Remote("c3d", "C3D UCF-101 (video IS, StyleGAN-V's TorchScript)", "c3d_ucf101.pt",
           "https://www.dropbox.com/s/jxpu7avzdc9n97q/c3d_ucf101.pt?dl=1"),
    Remote("inception", "Inception-v3 of FID (pytorch-fid)", "pt_inception-2015-12-05-6726825d.pth",
           "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
           sha256="6726825d"),
    Remote("videomae", "VideoMAE-v2 ViT-g/14 SSv2 (CD-FVD)", "vit_g_hybrid_pt_1200e_ssv2_ft.pth",
           "https://huggingface.co/OpenGVLab/InternVideoMAE_models/resolve/main/mae-g/vit_g_hybrid_pt_1200e_ssv2_ft.pth"),
    Remote("clip", "CLIP ViT-L/14 (FC)", "clip-vit-large-patch14", repo="openai/clip-vit-large-patch14"),
    Remote("raft", "RAFT-large (torchvision, optical flow)", "raft_large_C_T_SKHT_V2-ff5fadd5.pth",
           "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth", sha256="ff5fadd5",
           use="flow.raft_weights"),
    Remote("dino", "DINO ViT-S/8 (alignment targets)", "dino_deitsmall8_pretrain.pth",
           "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
           use="flow.dino_weights"),
    Remote("cogvideox-vae", "CogVideoX-2b 3D causal VAE", "CogVideoX-2b-vae", repo="THUDM/CogVideoX-2b",
           subfolder="vae", use="vae.path"),
    Remote("lpips-vgg", "VGG16 ImageNet trunk of LPIPS (torchvision)", "vgg16-397923af.pth",
           "https://download.pytorch.org/models/vgg16-397923af.pth", sha256="397923af",
           use="the LPIPS trunk path (vae train --lpips-trunk)"),
)}


def _read_lock(folder: Path) -> dict:
    try:
        lock = json.loads((folder / LOCK).read_text())
        return lock if isinstance(lock, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise DownloadError(f"{folder / LOCK} is unreadable ({e}); fix or delete it (it only records checksums)")


def _write_lock(folder: Path, lock: dict) -> None:
    write_json_atomic(folder / LOCK, dict(sorted(lock.items())))


def _verify(path: Path, digest: str, remote: Remote, lock: dict) -> str | None:
    """None when `path` (whose sha256 is `digest`) is the right file; else why not."""
    if remote.sha256 and not digest.startswith(remote.sha256):
        return f"sha256 {digest[:12]}... does not match the published {remote.sha256}"
    known = lock.get(remote.file)
    if known and (known.get("sha256") != digest or known.get("size") != path.stat().st_size):
        return f"sha256 {digest[:12]}... / {path.stat().st_size} bytes differ from {LOCK} ({known.get('sha256', '')[:12]}...)"
    return None


def _fetch(url: str, part: Path, progress: bool, desc: str, timeout: float) -> None:
    """Download `url` into `part`, continuing after the bytes it already holds."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "medsora", **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:      # the part is already whole
            return
        raise
    with response:
        if have and response.status != 206:   # the server ignored the range: start over
            have = 0
        total = response.headers.get("Content-Length")
        total = int(total) + have if total is not None else None
        with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                           desc=desc, disable=not progress) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                f.write(chunk)
                bar.update(len(chunk))
            got = f.tell()
    if total is not None and got < total:   # the connection dropped: what arrived stays in `part`
        raise OSError(f"the transfer stopped at {got} of {total} bytes")


def _download_file(remote: Remote, folder: Path, lock: dict, mirror: str, progress: bool, timeout: float) -> Path:
    dest = folder / remote.file
    if dest.exists():
        why = _verify(dest, file_sha256(dest), remote, lock)
        if why is None:
            return dest
        raise DownloadError(f"{dest} is there but is not the right file ({why}); delete it and run the command again")
    url = f"{mirror.rstrip('/')}/{remote.file}" if mirror else remote.url
    part = dest.with_name(dest.name + ".part")
    try:
        _fetch(url, part, progress, remote.file, timeout)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"could not download {remote.file} from {url} ({reason}); check the connection, or "
                            f"use a mirror ({MIRROR_ENV}=URL or --mirror URL); a rerun resumes what arrived") from None
    digest = file_sha256(part)   # read once: for the check and for the lock record
    why = _verify(part, digest, remote, lock)
    if why is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{remote.file} from {url} failed its check ({why}); nothing was kept; rerun, or "
                            "check the mirror")
    os.replace(part, dest)
    if not remote.sha256 and remote.file not in lock:
        lock[remote.file] = {"sha256": digest, "size": dest.stat().st_size, "source": url}
    return dest


def _download_hub(remote: Remote, folder: Path, progress: bool) -> Path:
    """A hub folder via huggingface_hub (resumes, verifies and renames itself; honours HF_ENDPOINT)."""
    from huggingface_hub import snapshot_download

    dest = folder / remote.file
    patterns = [f"{remote.subfolder}/*"] if remote.subfolder else ["*.json", "*.safetensors", "*.txt"]
    try:
        got = Path(snapshot_download(remote.repo, allow_patterns=patterns, local_dir=str(dest)))
    except Exception as e:  # noqa: BLE001 - the hub raises many types (offline, gated, HTTP)
        raise DownloadError(f"could not download {remote.repo} from the Hugging Face hub ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); check the connection, or set HF_ENDPOINT "
                            "to a mirror") from None
    return got / remote.subfolder if remote.subfolder else got


def download(names: list[str] | None, folder: str | Path, mirror: str | None = None, progress: bool = True,
             timeout: float = 30.0) -> dict[str, Path]:
    """Fetch the networks `names` (None: all) that are not in `folder` yet; returns {name: path}."""
    names = list(names or CATALOG)
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise DownloadError(f"unknown network(s) {', '.join(unknown)}; choose from {', '.join(CATALOG)}")
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "")
    lock = _read_lock(folder)
    out = {}
    try:
        for name in names:
            remote = CATALOG[name]
            out[name] = (_download_hub(remote, folder, progress) if remote.repo else
                         _download_file(remote, folder, lock, mirror, progress, timeout))
    finally:
        if lock:
            _write_lock(folder, lock)
    return out


def default_dir(weights_dir: str | Path | None = None) -> Path:
    """Where downloads go: --dir, else the first folder the commands search ($MEDSORA_WEIGHTS, ~/.cache/...)."""
    from .metrics.weights import search_dirs

    return Path(weights_dir) if weights_dir else search_dirs(None)[0]
