"""Spiral visit orders of an R×C grid, their reverses and inverses (SPEC.md "Decision — spiral order").

A spiral starts at a corner, walks the outer ring clockwise or counter-clockwise and winds inwards, so
consecutive tokens are always grid neighbours. Its reverse starts in the centre and winds outwards.

    order = spiral_order(4, 6, pair=3)          # LongTensor (24,): flat index r * C + c of the k-th visit
    seq = x[:, order]                           # gather by the visit order: (B, R*C, D) -> (B, R*C, D)
    x_back = seq[:, inverse(order)]             # scatter back: the identity

The 8 orders (clockwise / counter-clockwise spirals, each plain, flipped horizontally, vertically or both,
i.e. from each corner in each direction) with their exact reverses are the 16 scans the MedSora blocks
cycle through as 8 (order, reverse) pairs: block i uses `pair=i % 8`. Hand-written: no library offers it.
"""
from __future__ import annotations

from functools import lru_cache

import torch

NUM_PAIRS = 8
# pair index -> (clockwise, flip_h, flip_v)
PAIRS = tuple((cw, fh, fv) for cw in (True, False) for fv in (False, True) for fh in (False, True))


def _clockwise(rows: int, cols: int) -> list[tuple[int, int]]:
    """(r, c) of a clockwise spiral from the top-left corner, ring by ring."""
    top, bottom, left, right = 0, rows - 1, 0, cols - 1
    path = []
    while top <= bottom and left <= right:
        path += [(top, c) for c in range(left, right + 1)]
        path += [(r, right) for r in range(top + 1, bottom + 1)]
        if top < bottom:
            path += [(bottom, c) for c in range(right - 1, left - 1, -1)]
        if left < right:
            path += [(r, left) for r in range(bottom - 1, top, -1)]
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return path


@lru_cache(maxsize=None)
def _order(rows: int, cols: int, clockwise: bool, flip_h: bool, flip_v: bool) -> tuple[int, ...]:
    if clockwise:
        path = _clockwise(rows, cols)
    else:  # counter-clockwise from the top-left corner is the transpose of a clockwise one
        path = [(r, c) for c, r in _clockwise(cols, rows)]
    path = [(rows - 1 - r if flip_v else r, cols - 1 - c if flip_h else c) for r, c in path]
    return tuple(r * cols + c for r, c in path)


def spiral_order(rows: int, cols: int, pair: int = 0, reverse: bool = False, device=None) -> torch.Tensor:
    """Visit order (flat indices `r * cols + c`) of spiral `pair % 8` over a rows×cols grid; `reverse` walks
    the same spiral backwards (centre -> corner). Returns a LongTensor of shape (rows * cols,)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"spiral_order needs a non-empty grid, got {rows}x{cols}")
    walk = _order.__wrapped__ if torch.compiler.is_compiling() else _order   # compile traces it once, uncached
    order = torch.tensor(walk(rows, cols, *PAIRS[pair % NUM_PAIRS]), dtype=torch.long, device=device)
    return order.flip(0) if reverse else order


def inverse(order: torch.Tensor) -> torch.Tensor:
    """Inverse permutation: `seq[..., inverse(order)]` puts a gathered sequence back in grid (raster) order."""
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    return inv
