"""Training cost of MedSora-S/B/L against the Latte/Endora video DiT (the paper's Fig. 6), and its growth.

Question: at the Fig. 6 setting (batch 1, 16 frames of 128×128 plus 8 joint images) how many parameters,
training FLOPs (forward + backward), peak memory and CPU seconds does each backbone need, and how do FLOPs and
memory grow with the video (16 -> 64 frames, 128 -> 256 px)?

Inputs. MedSora sees 3D-causal-VAE latents: 16 frames -> 4 latent frames, 8 images -> 2, 16 channels, 8×
spatial. The baselines see image-VAE latents: 16 + 8 latent frames, 4 channels, 8× spatial (as Endora).

How. FLOPs on the meta device (shapes only, no arithmetic) with `torch.utils.flop_counter.FlopCounterMode`
(with a groups-aware convolution backward: the stock formula ignores `groups`), checked against a hand count
from the layer shapes (Linear layers, attention matmuls, the SSD scan's matmuls). Both count matmul and
convolution FLOPs only, recomputation included; elementwise ops are not counted. Peak memory: a real CPU
forward + backward under `torch.distributed._tools.mem_tracker.MemTracker` (peak of live tensors: weights,
gradients, activations; no optimizer state; float32). Time: one more real forward + backward on the CPU.

No model uses gradient checkpointing (the paper's Fig. 6 rule). MedSora's layers keep for the backward what
the fused GPU kernels keep (`model.recompute`, default on): a Mamba-2 mixer its projection, recomputing
conv, scan and gated norm (as mamba_ssm's `mamba_split_conv1d_scan_combined`); the local attention q, k and
v, recomputing the attention weights (as flash attention). No matmul of a projection is recomputed. The
row "recompute off" keeps every intermediate. The baselines' attention is torch SDPA (on CPU its fused kernel).

    python benchmarks/backbone.py                 # writes benchmarks/results/backbone.md
    python benchmarks/backbone.py --no-time       # FLOPs and memory only
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import platform
import time
from pathlib import Path

import torch
from torch import nn
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils.flop_counter import FlopCounterMode

from medsora.models.attention import LocalAttention
from medsora.models.blocks import SpatialMamba
from medsora.models.baseline import build_baseline
from medsora.models.mamba2 import Mamba2
from medsora.models.medsora import build_model

RESULTS = Path(__file__).parent / "results" / "backbone.md"

# name -> (builder(input_size), kind)
MODELS = {
    "MedSora-S": (lambda size: build_model("S", input_size=size), "medsora"),
    "MedSora-B": (lambda size: build_model("B", input_size=size), "medsora"),
    "MedSora-L": (lambda size: build_model("L", input_size=size), "medsora"),
    "MedSora-B, recompute off": (lambda size: build_model("B", input_size=size, recompute=False), "medsora"),
    "Endora-B (Latte-B/2, w768)": (lambda size: build_baseline("B", input_size=size), "baseline"),
    "Latte-B/2 at w512": (lambda size: build_baseline("B", hidden_size=512, num_heads=8, input_size=size), "baseline"),
}


def latent_input(kind: str, frames: int, px: int, images: int) -> tuple[tuple[int, ...], int]:
    """Shape (1, F, C, h, w) of the latents a backbone sees for a clip, and the number of video latent frames."""
    if kind == "medsora":   # 3D causal VAE: 4× temporal, 16 channels; the images are encoded as one chunk
        fv, fi, c = frames // 4, images // 4, 16
    else:                   # image VAE: every frame and image is a latent frame, 4 channels
        fv, fi, c = frames, images, 4
    return (1, fv + fi, c, px // 8, px // 8), fv


# ---------------------------------------------------------------------------------------------- counting


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, _transposed,
                        _output_padding, _groups, output_mask, out_shape=None) -> int:
    """Groups-aware: grad_input and grad_weight each cost one forward convolution (w_shape[1] = C_in / groups)."""
    forward = 2 * math.prod(grad_out_shape) * math.prod(w_shape[1:])
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def hand_count_hooks(model: nn.Module) -> tuple[dict, list]:
    """Forward hooks that add up training FLOPs (forward + backward) from layer shapes."""
    count = {"linear": 0, "attention": 0, "ssd": 0, "conv": 0}

    def linear(m, inputs, out):
        factor = 2 + inputs[0].requires_grad                       # forward, grad_weight, grad_input if needed
        count["linear"] += factor * 2 * out.numel() * m.in_features

    def conv(m, inputs, out):
        factor = 1 + m.weight.requires_grad + inputs[0].requires_grad
        count["conv"] += factor * 2 * out.numel() * math.prod(m.weight.shape[1:])

    def local_attention(m, inputs, out):                            # windows of w queries × (lb+1+lf)·w keys
        b, n, d = inputs[0].shape
        queries, keys = -(-n // m.window) * m.window, (m.look_backward + 1 + m.look_forward) * m.window
        matmul = 2 * b * queries * keys * d                         # QK^T or AV, forward
        # forward and backward (2×) of both; the recomputation stops after QK^T (checkpoint's early stop)
        count["attention"] += 2 * 3 * matmul + m.recompute * matmul

    def full_attention(m, inputs, out):
        b, n, d = inputs[0].shape
        count["attention"] += 3 * 2 * 2 * b * n * n * d

    def ssd(m, bsz, seqlen):                                       # the chunked SSD scan's matmuls
        g, n, h, p = m.ngroups, m.d_state, m.nheads, m.headdim
        q = max(1, min(m.chunk_size, seqlen))
        nc = -(-seqlen // q)
        fwd = 2 * bsz * nc * (g * q * q * n + h * q * q * p)       # C·B^T per group, (decay ∘ CB)·x per head
        fwd += 2 * bsz * (nc - 1) * q * n * h * p * 2               # chunk states and their contribution
        count["ssd"] += 4 * fwd        # forward, recomputed forward (mix or scan recompute), backward (2×)

    def mamba(m, inputs, out):                                       # a Mamba2 layer called as a whole
        ssd(m, *inputs[0].shape[:2])

    def spatial(m, inputs, out):                                     # 4 scans of the f×w̄ and f×h̄ planes
        x, fv, (gh, gw) = inputs
        b, frames = x.shape[:2]
        clips = [(b, fv)] * (fv > 0) + [(b * (frames - fv), 1)] * (frames > fv)   # video clip, each image
        for n, f in clips:
            ssd(m.mamba, 2 * n * gh, f * gw)                         # width: spiral + reverse over (n·h̄, f·w̄)
            ssd(m.mamba, 2 * n * gw, f * gh)                         # height

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
        elif isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, LocalAttention):
            hooks.append(m.register_forward_hook(local_attention))
        elif type(m).__name__ == "Attention":                       # timm's full self-attention
            hooks.append(m.register_forward_hook(full_attention))
        elif isinstance(m, SpatialMamba):
            hooks.append(m.register_forward_hook(spatial))
        elif isinstance(m, Mamba2):                                 # the temporal Mamba (the spatial one's
            hooks.append(m.register_forward_hook(mamba))            # forward is never called)
    return count, hooks


def _frozen_to_buffers(model: nn.Module) -> None:
    """MemTracker hooks every parameter's gradient; the frozen pos-embed becomes a buffer (same memory)."""
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and not p.requires_grad:
                del mod._parameters[name]
                mod.register_buffer(name, p.data)


def _model(name: str, frames: int, px: int, images: int, device: str):
    build, kind = MODELS[name]
    shape, fv = latent_input(kind, frames, px, images)
    torch.manual_seed(0)
    with torch.device(device):
        model = build((shape[3], shape[4])).train()
        x, t = torch.randn(shape), torch.tensor([500])
    params = sum(p.numel() for p in model.parameters())
    _frozen_to_buffers(model)
    return model, x, t, fv, params


def flops_and_memory(name: str, frames: int, px: int, images: int) -> dict:
    """Parameters, training FLOPs (counter and hand count, meta device) and peak memory in bytes (CPU).

    Memory is tracked on a real CPU forward + backward, so that each attention uses the kernel torch picks
    (SDPA's fused CPU kernel keeps q, k, v, out and the log-sum-exp, as flash attention does on GPU; on meta it
    decomposes and keeps the attention weights), and without the flop counter (with FlopCounterMode active,
    MemTracker read MedSora-B's peak as 1,280 MiB instead of 706: the counter keeps the checkpoint-recomputed
    intermediates alive)."""
    model, x, t, fv, params = _model(name, frames, px, images, "meta")
    hand, hooks = hand_count_hooks(model)
    flop_counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})
    with flop_counter:
        model(x, t, fv).mean().backward()
    for h in hooks:
        h.remove()

    with multiprocessing.get_context("spawn").Pool(1) as pool:   # a fresh process: nothing left from the last
        peak = pool.apply(peak_memory, (name, frames, px, images))
    return dict(params=params, flops=flop_counter.get_total_flops(), hand=sum(hand.values()), hand_parts=hand,
                memory=peak, shape=tuple(x.shape), fv=fv)


def peak_memory(name: str, frames: int, px: int, images: int) -> int:
    """Peak bytes of live tensors (MemTracker) over a real CPU forward + backward."""
    model, x, t, fv, _ = _model(name, frames, px, images, "cpu")
    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        model(x, t, fv).mean().backward()
    return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


def cpu_seconds(name: str, frames: int, px: int, images: int, reps: int = 1) -> float:
    """Mean wall time of a real forward + backward on the CPU (no warm-up beyond the first of `reps` + 1)."""
    build, kind = MODELS[name]
    shape, fv = latent_input(kind, frames, px, images)
    torch.manual_seed(0)
    model = build((shape[3], shape[4])).train()
    x, t = torch.randn(shape), torch.tensor([500])
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        model(x, t, fv).mean().backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return sum(times) / len(times)


# ---------------------------------------------------------------------------------------------- report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-time", action="store_true", help="skip the real CPU timing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    ref = "Endora-B (Latte-B/2, w768)"

    lines = ["# Backbone training cost: MedSora vs the Latte/Endora video DiT", "",
             f"`python benchmarks/backbone.py` · torch {torch.__version__} · {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads · batch 1, float32, forward + backward (`out.mean().backward()`).",
             "FLOPs: meta device (FlopCounterMode with a groups-aware conv backward), recomputation included. "
             "Hand count: Linear layers, attention matmuls and SSD-scan matmuls from layer shapes. Peak memory: "
             "MemTracker over a real CPU forward + backward (weights + gradients + activations, no optimizer "
             "state). No gradient checkpointing; MedSora keeps what the fused kernels keep (`model.recompute`, "
             "see the script's docstring), the \"recompute off\" row keeps every intermediate. Time: one real "
             "forward + backward on the CPU (compare within a run only).", ""]

    # Fig. 6 setting
    lines += ["## Fig. 6 setting: 16 frames of 128×128 + 8 joint images", "",
              "| model | latent input (F·C·h·w, video frames) | params | train GFLOPs (counter) | hand count | "
              "× Endora-B | peak memory MiB | × Endora-B | fwd+bwd s (CPU) |", "|" + "---|" * 9]
    paper = {}
    for name in MODELS:
        r = flops_and_memory(name, 16, 128, 8)
        r["time"] = "—" if args.no_time else f"{cpu_seconds(name, 16, 128, 8):.1f}"
        paper[name] = r
        print(name, r, flush=True)
    for name, r in paper.items():
        s = r["shape"]
        lines.append(
            f"| {name} | {s[1]}·{s[2]}·{s[3]}·{s[4]} ({r['fv']}) | {r['params'] / 1e6:.2f}M | {r['flops'] / 1e9:.1f} | "
            f"{r['hand'] / 1e9:.1f} ({r['hand'] / r['flops']:.3f}×) | {r['flops'] / paper[ref]['flops']:.2f} | "
            f"{r['memory'] / 2**20:.0f} | {r['memory'] / paper[ref]['memory']:.2f} | "
            f"{r['time']} |")

    # growth with the video (no joint images)
    settings = [(16, 128), (64, 128), (16, 256)]
    lines += ["", "## Growth with the video (no joint images)", "",
              "| model | " + " | ".join(f"{f} fr @ {px} px GFLOPs / MiB" for f, px in settings) +
              " | 64 vs 16 frames | 256 vs 128 px | 64 vs 16 frames, FLOPs without the SSD scan |",
              "|" + "---|" * (len(settings) + 4)]
    growth = {}
    no_scan = lambda r: r["hand"] - r["hand_parts"]["ssd"]           # noqa: E731  FLOPs without the SSD scan
    for name in MODELS:
        rows = growth[name] = {s: flops_and_memory(name, *s, images=0) for s in settings}
        print(name, {s: (r["flops"], r["memory"]) for s, r in rows.items()}, flush=True)
        base = rows[(16, 128)]
        cells = [f"{r['flops'] / 1e9:.1f} / {r['memory'] / 2**20:.0f}" for r in rows.values()]
        ratio = lambda s: f"{rows[s]['flops'] / base['flops']:.2f}× / {rows[s]['memory'] / base['memory']:.2f}×"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio((64, 128))} | {ratio((16, 256))} | "
                     f"{no_scan(rows[(64, 128)]) / no_scan(base):.2f}× |")

    b, e = paper["MedSora-B"], paper[ref]
    g16, g64 = growth["MedSora-B"][(16, 128)], growth["MedSora-B"][(64, 128)]
    share = g16["hand_parts"]["ssd"] / g16["hand"]
    scan_growth = g64["hand_parts"]["ssd"] / g16["hand_parts"]["ssd"]
    lines += ["", "## Reading", "",
              f"- MedSora-B / Endora-B at the Fig. 6 setting: training FLOPs {b['flops'] / e['flops']:.2f}×, "
              f"peak memory {b['memory'] / e['memory']:.2f}× (target ≤ 0.5× for both). Keeping every intermediate "
              f"(recompute off) MedSora-B needs {paper['MedSora-B, recompute off']['memory'] / e['memory']:.2f}× "
              "Endora-B's memory. Weights + gradients alone are "
              f"{b['params'] * 8 / 2**20:.0f} MiB for MedSora-B, {e['params'] * 8 / 2**20:.0f} MiB for Endora-B.",
              "- Growth ratios are (FLOPs / memory) against 16 frames at 128 px; linear growth is 4× for 64 vs 16 "
              "frames and for 256 vs 128 px.",
              f"- MedSora's FLOPs grow faster than linearly with frames only through the SSD scan: without it they "
              f"grow {no_scan(g64) / no_scan(g16):.2f}×. The scan is {share:.1%} of MedSora-B's training FLOPs at "
              f"16 frames and grows "
              f"{scan_growth:.1f}× at 64, because a spatial plane has f·w̄ tokens (32 -> 128) and one chunk of Q "
              "tokens costs 2·Q·(N + H·P) FLOPs per token (quadratic form). Passing chunk states instead costs "
              "4·N·H·P per token (524k at N = 128, H·P = 1024), more than the quadratic form's 2·Q·1152 for any "
              "Q < 228, so no chunk size lowers the 64-frame count: the ratio is what the exact SSD scan costs "
              "at these plane lengths (linear again past ~228 tokens with small chunks; mamba_ssm's 256-token "
              "chunks trade FLOPs for GPU speed).",
              f"- Total benchmark time {time.perf_counter() - started:.0f} s."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
