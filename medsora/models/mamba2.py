"""The Mamba-2 layer (scalar-A SSD), parameter-compatible with mamba_ssm's `Mamba2`.

    in_proj -> [z | xBC | dt];  xBC -> causal depthwise conv1d -> SiLU -> [x | B | C]
    y = SSD scan(x, dt, A, B, C) + D·x;  y = RMSNorm(y · SiLU(z)) per group;  out = out_proj(y)

The steps are exposed separately (`project`, `mix`, `out_proj`) so that a caller scanning the same
tokens in several orders projects them once:

    zxbcdt = m.project(x)                         # (B, L, d_in_proj)
    y = sum(unpermute(m.mix(permute(zxbcdt))))    # (B, L, d_inner), one mix per order
    out = m.out_proj(y)                           # (B, L, d_model)

The scan is the pure-PyTorch `ssd_scan` (any device); on CUDA, with mamba_ssm installed and
`use_kernels` allowing it, `mix` calls mamba_ssm's fused Triton scan instead.

Memory: with `recompute` `mix` keeps only its input `zxbcdt` for the backward and recomputes the conv,
scan and gated norm there (torch.utils.checkpoint), which is what mamba_ssm's fused training path
(`mamba_split_conv1d_scan_combined`) keeps too; the matmuls (in_proj, out_proj) are never recomputed.
It pays off in a deep stack, where every layer's activations wait for the backward (MedSora-B: 1,566 ->
706 MiB, `model.recompute`); for one layer alone the backward's own peak dominates and it only costs
time, so the layer's default is off.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from .ssd import ssd_scan

try:  # optional CUDA/Triton kernels (pip install medsora[cuda])
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
except ImportError:  # pragma: no cover - depends on the environment
    mamba_chunk_scan_combined = None

__all__ = ["Mamba2", "RMSNormGated", "causal_depthwise_conv", "kernels_available"]


def kernels_available() -> bool:
    """True when mamba_ssm's fused scan can be imported."""
    return mamba_chunk_scan_combined is not None


def causal_depthwise_conv(x, weight, bias=None):
    """Causal depthwise conv1d in (B, L, C) layout: out_t = bias + sum_j weight[:, 0, j]·x_{t-k+1+j}.

    Equals nn.Conv1d(C, C, k, groups=C, padding=k-1) cut to the first L outputs; written as k shifted
    multiply-adds because torch's CPU depthwise conv backward is several times slower and needs transposes.
    """
    k, seqlen = weight.shape[-1], x.shape[1]
    xp = F.pad(x, (0, 0, k - 1, 0))                                            # (B, k-1+L, C), zeros before t=0
    w = weight[:, 0, :]                                                         # (C, k)
    out = xp[:, :seqlen] * w[:, 0] if bias is None else torch.addcmul(bias, xp[:, :seqlen], w[:, 0])
    for j in range(1, k):
        out = torch.addcmul(out, xp[:, j:j + seqlen], w[:, j])
    return out


class RMSNormGated(nn.Module):
    """mamba_ssm's gated RMSNorm with norm_before_gate=False: weight · rmsnorm(x · SiLU(z)),
    normalised over groups of `group_size` channels."""

    def __init__(self, hidden_size, group_size=None, eps=1e-5, device=None, dtype=None):
        super().__init__()
        self.group_size = group_size or hidden_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))

    def forward(self, x, z=None):
        if z is not None:
            x = x * F.silu(z)
        xg = rearrange(x, "... (g d) -> ... g d", d=self.group_size)
        xg = F.rms_norm(xg, (self.group_size,), eps=self.eps)
        return rearrange(xg, "... g d -> ... (g d)") * self.weight


class Mamba2(nn.Module):
    """Mamba-2 mixer; parameter names and shapes as mamba_ssm's `Mamba2` (its checkpoints load).

    With the paper settings and d_model 512: 1,719,600 parameters.
    """

    def __init__(self, d_model, d_state=128, d_conv=4, expand=2, headdim=64, ngroups=1, chunk_size=256,
                 A_init_range=(1, 16), dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4,
                 dt_limit=(0.0, float("inf")), use_kernels="auto", recompute=False, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.headdim, self.ngroups, self.chunk_size = headdim, ngroups, chunk_size
        if self.d_inner % headdim:
            raise ValueError(f"d_inner = expand*d_model = {self.d_inner} must be a multiple of headdim {headdim}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"nheads {self.nheads} must be a multiple of ngroups {ngroups}")
        if use_kernels not in ("auto", True, False):
            raise ValueError(f"use_kernels must be 'auto', True or False, got {use_kernels!r}")
        if use_kernels is True and not kernels_available():
            raise ImportError("use_kernels=True needs mamba_ssm (pip install 'medsora[cuda]', CUDA only)")
        self.use_kernels = use_kernels
        self.recompute = recompute
        self.dt_limit = tuple(dt_limit)

        conv_dim = self.d_inner + 2 * ngroups * d_state
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads   # [z | x | B | C | dt]
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=False, **factory)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=True,
                                **factory)

        # dt bias: inverse softplus of dt ~ log-uniform in [dt_min, dt_max], floored
        dt = torch.exp(torch.rand(self.nheads, **factory) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))
        self.D = nn.Parameter(torch.ones(self.nheads, device=device))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True

        self.norm = RMSNormGated(self.d_inner, group_size=self.d_inner // ngroups, eps=1e-5, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False, **factory)

    def project(self, x):
        """(B, L, d_model) -> zxbcdt (B, L, d_in_proj)."""
        return self.in_proj(x)

    def _use_kernels(self, t):
        return self.use_kernels is not False and kernels_available() and t.is_cuda

    def mix(self, zxbcdt):
        """(B, L, d_in_proj) -> (B, L, d_inner): causal conv + SiLU + SSD scan + D skip + gated norm.
        Each of the B sequences is independent; any L >= 1. With `recompute`, only `zxbcdt` is kept for the
        backward."""
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(self.mix_stored, zxbcdt, use_reentrant=False)
        return self._mix(zxbcdt, scan_recompute=True)

    def mix_stored(self, zxbcdt):
        """`mix` with plain autograd (every intermediate kept), for a caller that recomputes a larger region."""
        return self._mix(zxbcdt, scan_recompute=False)

    def _mix(self, zxbcdt, scan_recompute):
        z, xbc, dt = zxbcdt.split([self.d_inner, self.d_inner + 2 * self.ngroups * self.d_state, self.nheads], -1)
        xbc = F.silu(causal_depthwise_conv(xbc, self.conv1d.weight, self.conv1d.bias))
        x, B, C = xbc.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], -1)
        kernels = self._use_kernels(zxbcdt)
        scan = mamba_chunk_scan_combined if kernels else ssd_scan
        options = {} if kernels else {"recompute": scan_recompute}
        if self.dt_limit != (0.0, float("inf")):
            options["dt_limit"] = self.dt_limit
        y = scan(
            rearrange(x, "b l (h p) -> b l h p", p=self.headdim),
            dt,
            -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32))),
            rearrange(B, "b l (g n) -> b l g n", g=self.ngroups),
            rearrange(C, "b l (g n) -> b l g n", g=self.ngroups),
            chunk_size=self.chunk_size, D=self.D, dt_bias=self.dt_bias, dt_softplus=True, **options,
        )
        return self.norm(rearrange(y, "b l h p -> b l (h p)"), z)

    def forward(self, x):
        """(B, L, d_model) -> (B, L, d_model)."""
        return self.out_proj(self.mix(self.project(x)))
