"""`medsora weights`: which pretrained weights this machine has, for every network the package can use.

Nothing is loaded or downloaded: each entry is looked up where the commands would look (the config's paths for
the VAE and the flow networks; `--weights`, $MEDSORA_WEIGHTS and ~/.cache/medsora/weights for the metric
networks) and reported as found, or missing with where to get it.
"""
from __future__ import annotations

from pathlib import Path

from .config import Config
from .metrics.weights import WEIGHTS, MissingWeights, find_weights
from .vae.autoencoder import COGVIDEOX_URL

RAFT_URL = "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth (torchvision)"
DINO_URL = ("https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth, or timm's "
            "vit_small_patch8_224.dino safetensors")


def _path_row(network: str, used_by: str, setting: str, value: str, source: str) -> dict:
    if not value:
        return {"network": network, "used by": used_by, "found": False, "where": f"not set: {setting}=PATH ({source})"}
    found = Path(value).expanduser().exists()
    return {"network": network, "used by": used_by, "found": found,
            "where": value if found else f"{setting}={value} does not exist ({source})"}


def _torchvision_cached(url: str) -> str:
    """Where torchvision keeps a downloaded weights file, if it is there (what an empty flow.raft_weights uses)."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return str(path) if path.exists() else ""


def inventory(cfg: Config, weights_dir: str | Path | None = None) -> list[dict]:
    """One row per network: {"network", "used by", "found", "where"} (the path, or what to set and get)."""
    rows = [_path_row("CogVideoX VAE", "cache, sample, vae", "vae.path", cfg.vae.path,
                      f"the vae/ folder of {COGVIDEOX_URL}, or `medsora vae train-tiny`")]
    if cfg.vae.compensation:
        rows.append(_path_row("VAE compensation modules", "cache, sample", "vae.compensation", cfg.vae.compensation,
                              "`medsora vae train`"))
    if cfg.flow.method == "raft":
        raft = cfg.flow.raft_weights or _torchvision_cached(RAFT_URL.split()[0])
        rows.append(_path_row("RAFT-large", "cache --flow", "flow.raft_weights", raft,
                              f"{RAFT_URL}; or flow.method=farneback, which needs none"))
    rows.append(_path_row("DINO ViT-S/8", "cache --flow (alignment)", "flow.dino_weights", cfg.flow.dino_weights,
                          DINO_URL))
    short = {"i3d": ("I3D", "eval: FVD"), "videomae": ("VideoMAE", "eval: CD-FVD"),
             "inception": ("Inception-v3", "eval: FID, IS (frames)"), "c3d": ("C3D UCF-101", "eval: IS (video)"),
             "clip": ("CLIP", "eval: FC")}
    for net in WEIGHTS:
        name, used_by = short[net]
        try:
            found, where = True, str(find_weights(net, weights_dir))
        except MissingWeights as e:
            found, where = False, str(e)
        rows.append({"network": name, "used by": used_by, "found": found, "where": where})
    return rows


def format_inventory(rows: list[dict]) -> str:
    lines = [f"{'found' if r['found'] else 'MISSING':8s} {r['network']}  [{r['used by']}]\n         {r['where']}"
             for r in rows]
    missing = [r["network"] for r in rows if not r["found"]]
    summary = f"{len(rows) - len(missing)} of {len(rows)} found"
    lines.append(f"{summary}; missing: {', '.join(missing)}" if missing else summary)
    return "\n".join(lines)
