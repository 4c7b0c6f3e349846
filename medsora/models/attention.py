"""Local window attention over one frame's tokens (MedSora block, sub-layer 1).

Semantics of lucidrains' `local-attention` with `look_backward=1, look_forward=1, exact_windowsize=True`:
tokens (raster order of a frame) are cut into windows of `window` tokens; a query in window w sees the keys
of windows w-1, w, w+1, and of those only the ones at most `window * look_backward` positions before and
`window * look_forward` after it. Rotary position embedding on q and k (rotate-half layout, theta 1e4).

Why SDPA with a window mask instead of the package: each window attends to its 3·window look-around keys
(cost linear in tokens), `F.scaled_dot_product_attention` runs it fused on GPU, and rotary uses the tokens'
true positions (the package gives queries the positions of the last look-around window, shifting every
relative offset by `window * look_forward`).

With `recompute` the backward keeps only q, k and v and recomputes the windows and the attention weights
from them, as flash attention does; the projections are never recomputed (off by default, as for `Mamba2`;
the model sets both from `model.recompute`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint


def rotary(x: torch.Tensor, pos: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotate x (..., n, d) by angle pos * theta^(-2i/d) on the pairs (i, i + d/2) (rotate-half layout)."""
    d = x.shape[-1]
    dtype = torch.promote_types(x.dtype, torch.float32)  # angles at least in float32
    inv_freq = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=dtype) / d)
    freqs = torch.outer(pos.to(dtype), inv_freq)
    cos, sin = freqs.cos().repeat(1, 2).to(x.dtype), freqs.sin().repeat(1, 2).to(x.dtype)  # (n, d)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _look_around(x: torch.Tensor, backward: int, forward: int, pad_value: float) -> torch.Tensor:
    """(..., nw, w, e) -> (..., nw, (backward + 1 + forward) * w, e): each window with its neighbours,
    windows past either end filled with `pad_value`."""
    dim, nw = x.dim() - 3, x.shape[-3]  # the window axis
    pad = [0, 0, 0, 0, backward, forward]
    x = F.pad(x, pad, value=pad_value)
    return torch.cat([x.narrow(dim, i, nw) for i in range(backward + 1 + forward)], dim=dim + 1)


def window_mask(n: int, window: int, backward: int, forward: int, device=None) -> torch.Tensor:
    """Boolean mask (nw, window, (backward + 1 + forward) * window): query i of window w may see look-around
    key j. Keys past the sequence (padding) and, as `exact_windowsize`, keys outside
    [pos - window * backward, pos + window * forward] are masked."""
    nw = -(-n // window)
    pos = torch.arange(nw * window, device=device).view(nw, window, 1)      # (nw, w, 1) padded positions
    qpos = pos.squeeze(-1)
    kpos = _look_around(pos.float(), backward, forward, -1.0).squeeze(-1).long()  # (nw, K)
    kpos, qpos = kpos[:, None, :], qpos[:, :, None]
    return (kpos >= 0) & (kpos < n) & (kpos >= qpos - window * backward) & (kpos <= qpos + window * forward)


class LocalAttention(nn.Module):
    """q, k, v = Linear(dim, dim, bias=False); windowed multi-head attention; no output projection.

    x: (B, n, dim) -> (B, n, dim). B is (batch · frames): each frame's tokens are one sequence.
    """

    def __init__(self, dim: int, heads: int = 1, window: int = 8, look_backward: int = 1, look_forward: int = 1,
                 dropout: float = 0.1, recompute: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attn_heads ({heads}) must divide hidden_size ({dim})")
        self.heads, self.window, self.look_backward, self.look_forward, self.dropout = (
            heads, window, look_backward, look_forward, dropout)
        self.recompute = recompute
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(proj(x), "b n (h e) -> b h n e", h=self.heads) for proj in (self.to_q, self.to_k, self.to_v))
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(self._attend, q, k, v, use_reentrant=False)
        return self._attend(q, k, v)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v (B, heads, n, e) -> (B, n, heads·e): rotary, windows, masked attention."""
        n = q.shape[2]
        w, lb, lf = self.window, self.look_backward, self.look_forward
        pos = torch.arange(n, device=q.device)
        q, k = rotary(q, pos), rotary(k, pos)
        pad = -n % w
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        q = rearrange(q, "b h (nw w) e -> b h nw w e", w=w)
        k, v = (_look_around(rearrange(t, "b h (nw w) e -> b h nw w e", w=w), lb, lf, 0.0) for t in (k, v))  # b h nw K e
        mask = window_mask(n, w, lb, lf, device=q.device)                                                  # nw w K
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        out = rearrange(out, "b h nw w e -> b (nw w) (h e)")
        return out[:, :n]
