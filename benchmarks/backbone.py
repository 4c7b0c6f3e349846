"""Training cost of MedSora-S/B/L against the Latte/Endora video DiT (the paper's Fig. 6), and its growth.

Question: at the Fig. 6 setting (batch 1, 16 frames of 128×128 plus 8 joint images) how many parameters,
training FLOPs (forward + backward), peak memory and CPU seconds does each backbone need, and how do FLOPs and
memory grow with the video (16 -> 64 frames, 128 -> 256 px)?

Inputs. MedSora sees 3D-causal-VAE latents: 16 frames -> 4 latent frames, 8 images -> 2, 16 channels, 8×
spatial. The baselines see image-VAE latents: 16 + 8 latent frames, 4 channels, 8× spatial (as Endora).

How. FLOPs and peak memory are measured on the meta device (shapes only, no arithmetic):
`torch.utils.flop_counter.FlopCounterMode` (with a groups-aware convolution backward: the stock formula
ignores `groups`) and `torch.distributed._tools.mem_tracker.MemTracker` (peak of live tensors: weights,
gradients, activations; no optimizer state; float32). Each FLOP total is checked against a hand count
from the layer shapes (Linear layers, attention matmuls, the SSD scan's matmuls — the backward of the
scan recomputes its forward). Both count matmul/convolution FLOPs only; elementwise ops are not counted.
Time: one real forward + backward on the CPU.

    python benchmarks/backbone.py                 # writes benchmarks/results/backbone.md
    python benchmarks/backbone.py --no-time       # FLOPs and memory only
"""
from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch
from torch import nn
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils.flop_counter import FlopCounterMode

from medsora.models.attention import LocalAttention
from medsora.models.baseline import build_baseline
from medsora.models.mamba2 import Mamba2
from medsora.models.medsora import build_model

RESULTS = Path(__file__).parent / "results" / "backbone.md"

# name -> (builder(input_size), kind)
MODELS = {
    "MedSora-S": (lambda size: build_model("S", input_size=size), "medsora"),
    "MedSora-B": (lambda size: build_model("B", input_size=size), "medsora"),
    "MedSora-L": (lambda size: build_model("L", input_size=size), "medsora"),
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
        count["attention"] += 3 * 2 * 2 * b * queries * keys * d    # QK^T and AV; backward = 2× forward

    def full_attention(m, inputs, out):
        b, n, d = inputs[0].shape
        count["attention"] += 3 * 2 * 2 * b * n * n * d

    def ssd(m, inputs, out):                                         # the chunked SSD scan's matmuls
        bsz, seqlen, _ = inputs[0].shape
        g, n, h, p = m.ngroups, m.d_state, m.nheads, m.headdim
        q = max(1, min(m.chunk_size, seqlen))
        nc = -(-seqlen // q)
        fwd = 2 * bsz * nc * (g * q * q * n + h * q * q * p)       # C·B^T per group, (decay ∘ CB)·x per head
        fwd += 2 * bsz * (nc - 1) * q * n * h * p * 2               # chunk states and their contribution
        count["ssd"] += 4 * fwd                                      # forward, recomputed forward, backward (2×)

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
        elif isinstance(m, Mamba2):                                 # `mix` is a method: wrap it to see its input
            m.mix = _counted(m.mix, lambda z, m=m: ssd(m, (z,), None))
    return count, hooks


def _counted(fn, before):
    def wrapped(*args):
        before(*args)
        return fn(*args)
    return wrapped


def _frozen_to_buffers(model: nn.Module) -> None:
    """MemTracker hooks every parameter's gradient; the frozen pos-embed becomes a buffer (same memory)."""
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and not p.requires_grad:
                del mod._parameters[name]
                mod.register_buffer(name, p.data)


def flops_and_memory(name: str, frames: int, px: int, images: int) -> dict:
    """On the meta device: parameters, training FLOPs (counter and hand count), peak memory in bytes."""
    build, kind = MODELS[name]
    shape, fv = latent_input(kind, frames, px, images)
    with torch.device("meta"):
        model = build((shape[3], shape[4])).train()
        x, t = torch.randn(shape), torch.tensor([500])
    params = sum(p.numel() for p in model.parameters())
    _frozen_to_buffers(model)
    hand, hooks = hand_count_hooks(model)
    tracker = MemTracker()
    tracker.track_external(model)
    flop_counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})
    with tracker, flop_counter:
        model(x, t, fv).mean().backward()
    for h in hooks:
        h.remove()
    peak = tracker.get_tracker_snapshot("peak")[torch.device("meta")]["Total"]
    return dict(params=params, flops=flop_counter.get_total_flops(), hand=sum(hand.values()), hand_parts=hand,
                memory=peak, shape=shape, fv=fv)


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
             "FLOPs and peak memory: meta device (FlopCounterMode with a groups-aware conv backward; MemTracker peak "
             "of weights + gradients + activations, no optimizer state). Hand count: Linear layers, attention "
             "matmuls and SSD-scan matmuls from layer shapes. Time: one real forward + backward on a 2-core CPU "
             "**shared with other jobs** (noisy; compare within a run only).", ""]

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
              " | 64 vs 16 frames | 256 vs 128 px |", "|" + "---|" * (len(settings) + 3)]
    for name in MODELS:
        rows = {s: flops_and_memory(name, *s, images=0) for s in settings}
        print(name, {s: (r["flops"], r["memory"]) for s, r in rows.items()}, flush=True)
        base = rows[(16, 128)]
        cells = [f"{r['flops'] / 1e9:.1f} / {r['memory'] / 2**20:.0f}" for r in rows.values()]
        ratio = lambda s: f"{rows[s]['flops'] / base['flops']:.2f}× / {rows[s]['memory'] / base['memory']:.2f}×"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio((64, 128))} | {ratio((16, 256))} |")

    b, e = paper["MedSora-B"], paper[ref]
    lines += ["", "## Reading", "",
              f"- MedSora-B / Endora-B at the Fig. 6 setting: training FLOPs {b['flops'] / e['flops']:.2f}×, "
              f"peak memory {b['memory'] / e['memory']:.2f}× (target ≤ 0.5× for both).",
              "- Growth ratios are (FLOPs / memory) against 16 frames at 128 px; linear growth is 4× for 64 vs 16 "
              "frames and for 256 vs 128 px. The SSD scan is quadratic inside a chunk (256 tokens), so a spatial "
              "plane (f·w̄ tokens) pays a little more than linear until it passes the chunk length.",
              f"- Total benchmark time {time.perf_counter() - started:.0f} s."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
