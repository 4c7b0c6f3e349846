"""The SSD scan of Mamba-2 (scalar-A state-space duality), chunked, in pure PyTorch.

For each head, with a_t = dt_t·A (A < 0):

    h_t = exp(a_t)·h_{t-1} + dt_t·x_t ⊗ B_t        h: (headdim, d_state)
    y_t = h_t·C_t + D·x_t

`ssd_scan` computes it the way the Mamba-2 paper does ("ssd_minimal"): the sequence is cut into
chunks of Q tokens; inside a chunk the output is a masked quadratic form (like causal attention with
decay weights), and the state at each chunk boundary is passed on by a small recurrence over chunks.
Cost is linear in the length; a sequence that fits one chunk never builds a state at all.

Written by hand because no library scans on CPU (mamba_ssm's kernels are CUDA/Triton only). The
arguments mirror `mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined`, so the layer can call
either one. The backward recomputes the chunk intermediates (decay matrices, chunk states) instead of
storing them, as the fused kernels do: a call keeps only its inputs for the backward.

`ssd_recurrent` is the plain token-by-token recurrence, for reference and benchmarks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint

__all__ = ["ssd_scan", "ssd_chunked", "ssd_recurrent", "effective_chunk_size"]

_NO_LIMIT = (0.0, float("inf"))


def effective_chunk_size(seqlen: int, chunk_size: int) -> int:
    """Chunk length actually used: `chunk_size`, but never longer than the sequence, so a batch of
    4-token sequences is not padded to 256-token chunks. The output does not depend on it."""
    return max(1, min(chunk_size, seqlen))


def _discretize(dt, dt_bias, dt_softplus, dt_limit):
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    if tuple(dt_limit) != _NO_LIMIT:
        dt = dt.clamp(dt_limit[0], dt_limit[1])
    return dt


def _d_skip(D, x):
    # D: (h,) or (h, p); x: (b, l, h, p)
    return x * (D[:, None] if D.dim() == 1 else D)


def ssd_chunked(x, dt, A, B, C, chunk_size=256, D=None, dt_bias=None, dt_softplus=False,
                dt_limit=_NO_LIMIT):
    """The chunked SSD scan as plain differentiable torch ops (autograd keeps every intermediate;
    `ssd_scan` wraps it with recomputation).

    x: (b, l, h, p), dt: (b, l, h), A: (h,), B, C: (b, l, g, n), D: (h,) or (h, p) -> y: (b, l, h, p)
    """
    b, seqlen, h, p = x.shape
    g = B.shape[2]
    r = h // g  # heads per group (B and C are shared by the r heads of a group)
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):  # the scan runs in float32, as mamba_ssm's does
        x, dt, B, C = x.float(), dt.float(), B.float(), C.float()
    dt = _discretize(dt.to(x.dtype), dt_bias, dt_softplus, dt_limit)
    q = effective_chunk_size(seqlen, chunk_size)
    pad = -seqlen % q
    xdt = x * dt[..., None]
    if pad:  # zero dt and zero input past the end: no decay, no contribution, outputs dropped
        xdt, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (xdt, dt, B, C))
    nc = (seqlen + pad) // q

    # decay inside each chunk: cumulative sum of dt·A over the chunk's positions
    acs = rearrange(dt * A.to(dt.dtype), "b (c q) h -> b h c q", q=q).cumsum(-1)   # (b, h, c, q)
    # (b, (c q), (g r), p) -> (b, g, r, c, q, p): heads as batch for the quadratic form
    xs = rearrange(xdt, "b (c q) (g r) p -> b g r c q p", q=q, g=g)
    Bc = rearrange(B, "b (c q) g n -> b g c q n", q=q)
    Cc = rearrange(C, "b (c q) g n -> b g c q n", q=q)

    # 1. intra-chunk: y_i = sum_{j<=i} (C_i·B_j) exp(acs_i - acs_j) dt_j x_j
    above = torch.ones(q, q, dtype=torch.bool, device=x.device).triu(1)
    seg = (acs[..., :, None] - acs[..., None, :]).masked_fill(above, -torch.inf)
    decay = rearrange(seg.exp(), "b (g r) c i j -> b g r c i j", g=g)          # (b, g, r, c, q, q)
    cb = Cc @ Bc.transpose(-1, -2)                                             # (b, g, c, q, q), once per group
    y = (decay * cb[:, :, None]) @ xs                                          # (b, g, r, c, q, p)
    y = rearrange(y, "b g r c q p -> b (c q) (g r) p")

    if nc > 1:
        # 2. state at the end of each chunk from that chunk's own tokens (the last chunk's is not needed)
        #    S_c = sum_j exp(acs_last - acs_j) dt_j x_j ⊗ B_j
        xw = xdt * rearrange((acs[..., -1:] - acs).exp(), "b h c q -> b (c q) h 1")
        xw = rearrange(xw, "b (c q) (g r) p -> b g c q (r p)", q=q, g=g)[:, :, :-1]
        local = xw.transpose(-1, -2) @ Bc[:, :, :-1]                           # (b, g, c-1, (r p), n)
        local = rearrange(local, "b g c (r p) n -> c b (g r) p n", r=r)
        # 3. pass states across chunks: entering chunk c+1 = exp(a_c)·(entering chunk c) + S_c
        chunk_decay = rearrange(acs[..., :-1, -1].exp(), "b h c -> c b h 1 1")
        state, entering = local[0], [local[0]]
        for c in range(1, nc - 1):
            state = torch.addcmul(local[c], chunk_decay[c], state)
            entering.append(state)
        states = rearrange(torch.stack(entering), "c b (g r) p n -> b g c n (r p)", g=g)
        # 4. contribution of the entering state to chunks 1..c-1: y_i += exp(acs_i) C_i·S
        y_off = rearrange(Cc[:, :, 1:] @ states, "b g c q (r p) -> b g c q r p", r=r)
        y_off = y_off * rearrange(acs[..., 1:, :].exp(), "b (g r) c q -> b g c q r 1", g=g)
        y_off = rearrange(y_off, "b g c q r p -> b (c q) (g r) p")
        y[:, q:] += y_off                                                      # y is a fresh tensor here

    y = y[:, :seqlen]
    if D is not None:
        y = y + _d_skip(D.to(y.dtype), x)
    return y.to(dtype)


class _SSDScan(torch.autograd.Function):
    """ssd_chunked whose backward recomputes the forward's intermediates (keeps only the inputs)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, dt_bias, chunk_size, dt_softplus, dt_limit):
        ctx.save_for_backward(x, dt, A, B, C, D, dt_bias)
        ctx.options = (chunk_size, dt_softplus, dt_limit)
        return ssd_chunked(x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, dt_limit)

    @staticmethod
    def backward(ctx, dy):
        inputs = ctx.saved_tensors
        needs = ctx.needs_input_grad[:7]
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(n) if t is not None else None for t, n in zip(inputs, needs)]
            y = ssd_chunked(*inputs[:5], ctx.options[0], inputs[5], inputs[6], *ctx.options[1:])
            wrt = [t for t, n in zip(inputs, needs) if n and t is not None]
            grads = iter(torch.autograd.grad(y, wrt, dy, allow_unused=True)) if wrt else iter(())
        out = [next(grads) if n and t is not None else None for t, n in zip(inputs, needs)]
        return (*out, None, None, None)


def ssd_scan(x, dt, A, B, C, chunk_size=256, D=None, dt_bias=None, dt_softplus=False,
             dt_limit=_NO_LIMIT, recompute=True):
    """Chunked SSD scan, same arguments and result as mamba_ssm's `mamba_chunk_scan_combined`
    (without z, initial states and variable-length packing).

    x: (b, l, h, p), dt: (b, l, h), A: (h,), B, C: (b, l, g, n), D: (h,) or (h, p), dt_bias: (h,)
    -> y: (b, l, h, p). Any l >= 1; each of the b sequences is independent.
    With `recompute` (default) the backward recomputes the chunk intermediates instead of storing them.
    """
    if not recompute or not torch.is_grad_enabled():
        return ssd_chunked(x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, dt_limit)
    if torch.compiler.is_compiling():   # torch.compile traces checkpoint (not autograd.grad in a Function)
        return checkpoint(ssd_chunked, x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, dt_limit,
                          use_reentrant=False)
    return _SSDScan.apply(x, dt, A, B, C, D, dt_bias, chunk_size, dt_softplus, tuple(dt_limit))


def ssd_recurrent(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=_NO_LIMIT):
    """The same scan as the token-by-token recurrence (O(l) sequential steps). Shapes as `ssd_scan`."""
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    dt = _discretize(dt.to(x.dtype), dt_bias, dt_softplus, dt_limit)
    h, g = x.shape[2], B.shape[2]
    Bh = B.to(x.dtype).repeat_interleave(h // g, dim=2)                        # (b, l, h, n)
    Ch = C.to(x.dtype).repeat_interleave(h // g, dim=2)
    decay = torch.exp(dt * A.to(x.dtype))                                      # (b, l, h)
    state = x.new_zeros(x.shape[0], h, x.shape[3], B.shape[3])                 # (b, h, p, n)
    ys = []
    for t in range(x.shape[1]):
        state = decay[:, t, :, None, None] * state + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None]
        ys.append((state @ Ch[:, t, :, :, None]).squeeze(-1))                 # (b, h, p)
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + _d_skip(D.to(y.dtype), x)
    return y.to(dtype)
