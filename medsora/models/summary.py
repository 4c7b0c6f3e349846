"""Parameter table per component of a MedSora backbone (for `medsora model summary PRESET`).

    print(summary_table("B"))                  # a preset name, a ModelConfig or a built MedSora
"""
from __future__ import annotations

import torch
from torch import nn

from medsora.config import ModelConfig
from medsora.models.medsora import MedSora, build_model

_TOP = {"x_embedder": "patch embedding", "pos_embed": "position embedding (fixed sin-cos)",
        "t_embedder": "timestep embedder"}
_BLOCK = {"adaLN_modulation": "adaLN modulation", "norm": "LayerNorms (3)", "attn": "local attention q, k, v",
          "spatial.mamba": "spatial Mamba-2 (4 spiral scans)", "spatial.gate": "spatial gated fusion (Eq. 9)",
          "temporal": "temporal Mamba-2"}


def _count(module: nn.Module, prefix: str = "") -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n.startswith(prefix))


def parameter_table(model: MedSora) -> list[tuple[str, int, int]]:
    """Rows (component, parameters per block or 0, total parameters); block rows are summed over all blocks."""
    rows = [(label, 0, _count(model, key)) for key, label in _TOP.items()]
    for key, label in _BLOCK.items():
        per_block = [_count(block, key) for block in model.blocks]
        rows.append((f"blocks: {label}", per_block[0], sum(per_block)))
    rows.append(("final layer (adaLN + linear)", 0, _count(model, "final_layer")))
    return rows


def summary_table(model: str | ModelConfig | MedSora = "B") -> str:
    """A text table of parameters per component; a preset or config is built on the meta device (no memory)."""
    if not isinstance(model, MedSora):
        with torch.device("meta"):
            model = build_model(model)
    rows = parameter_table(model)
    total = _count(model)
    assert sum(r[2] for r in rows) == total, "a parameter is missing from the table"
    cfg = model.cfg
    lines = [f"MedSora-{cfg.name}: depth {cfg.depth}, width {cfg.hidden_size}, patch {cfg.patch_size}, "
             f"latent {cfg.in_channels}x{cfg.input_size[0]}x{cfg.input_size[1]}",
             f"{'component':<42}{'per block':>14}{'total':>16}"]
    for label, per_block, count in rows:
        lines.append(f"{label:<42}{(f'{per_block:,}' if per_block else ''):>14}{count:>16,}")
    lines.append(f"{'total':<42}{_count(model.blocks[0]):>14,}{total:>16,}")
    return "\n".join(lines)

