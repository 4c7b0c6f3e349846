"""How fast and how lean is our Mamba-2 layer on CPU? Forward+backward time and peak memory at
d_model 512 with the paper settings, against

  (a) ours          medsora.models.mamba2.Mamba2 (chunked SSD scan, backward recomputes the chunks)
  (b) transformers  Mamba2Mixer's pure-PyTorch path, loaded with the same weights (outputs checked to 1e-4)
  (c) sequential    the same layer with the token-by-token recurrence as its scan
  (d) matmul floor  the layer's in_proj + out_proj matmuls alone (no scan can beat it)

on long sequences (batch 1, L = 256, 1024, 4096) and MedSora's own shapes (1024 sequences of 4 tokens:
the temporal scan at batch 16; 128 of 32 and 16 of 48: the spatial spiral scans).

    python benchmarks/ssd_scan.py                  # writes benchmarks/results/ssd_scan.md
    python benchmarks/ssd_scan.py --repeats 5 --threads 2
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from medsora.models import mamba2 as mamba2_module
from medsora.models.mamba2 import Mamba2
from medsora.models.ssd import ssd_recurrent

SHAPES = [(1, 256), (1, 1024), (1, 4096), (1024, 4), (128, 32), (16, 48)]
SEQUENTIAL_MAX_LEN = 256       # the recurrence runs one Python step per token (about 9 s per fwd+bwd at L=256 here)
HF_MAX_PADDED = 64 * 256       # transformers pads every sequence to its 256-token chunk; run it in micro-batches


def peak_bytes(fn):
    """Peak of (allocated - freed) CPU bytes while fn runs, from the profiler's memory events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    cur = peak = 0
    for _, nbytes in events:
        cur += nbytes
        peak = max(peak, cur)
    return peak


def timed(fns, repeats):
    """Best wall and best process-CPU seconds of each fn; the fns take turns, so a shared machine's load
    falls on all of them alike."""
    for fn in fns.values():
        fn()  # warm-up
    best = {name: [float("inf"), float("inf")] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            best[name] = [min(best[name][0], time.perf_counter() - w0), min(best[name][1], time.process_time() - c0)]
    return best


def hf_mixer(layer):
    import transformers
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    transformers.logging.set_verbosity_error()
    cfg = transformers.Mamba2Config(
        hidden_size=layer.d_model, state_size=layer.d_state, conv_kernel=layer.d_conv, expand=layer.expand,
        head_dim=layer.headdim, n_groups=layer.ngroups, num_heads=layer.nheads, chunk_size=layer.chunk_size,
        use_bias=False, use_conv_bias=True, num_hidden_layers=1)
    mixer = Mamba2Mixer(cfg, layer_idx=0)
    mixer.load_state_dict(layer.state_dict())
    return mixer


class Sequential(torch.nn.Module):
    """The layer with the token-by-token recurrence as its scan."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        scan, recompute = mamba2_module.ssd_scan, self.layer.recompute
        mamba2_module.ssd_scan = lambda *a, chunk_size=None, recompute=None, **k: ssd_recurrent(*a, **k)
        self.layer.recompute = False                                  # autograd keeps every state
        try:
            return self.layer(x)
        finally:
            mamba2_module.ssd_scan, self.layer.recompute = scan, recompute


def step(module, x, micro_batch=None):
    """One forward+backward, optionally in micro-batches (gradients accumulate)."""
    def run():
        for p in module.parameters():
            p.grad = None
        for chunk in x.split(micro_batch or x.shape[0]):
            module(chunk).square().mean().backward()
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hf-max-seqs", type=int, default=0,
                    help="time (b) on at most this many sequences and scale its time linearly (sequences are "
                         "independent and it runs in micro-batches anyway); 0 = all")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ssd_scan.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    layer = Mamba2(512)  # paper settings: d_state 128, headdim 64, expand 2, chunk 256
    hf = hf_mixer(layer)
    floor_in, floor_out = layer.in_proj, layer.out_proj
    floor = lambda x: floor_out(floor_in(x)[..., :layer.d_inner])  # noqa: E731
    floor_module = torch.nn.ModuleList([floor_in, floor_out])

    rows, load = [], os.getloadavg()[0]
    for bsz, seqlen in SHAPES:
        x = torch.randn(bsz, seqlen, 512)
        with torch.no_grad():  # (b) must equal (a) before its time means anything
            n = min(bsz, max(1, HF_MAX_PADDED // 256))
            err = (layer(x[:n]) - hf(x[:n])).abs().max().item()
        assert err < 1e-4, f"transformers and ours differ by {err} at {bsz}x{seqlen}"
        padded = bsz * -(-seqlen // 256) * 256
        hf_mb = None if padded <= HF_MAX_PADDED else max(1, HF_MAX_PADDED // (-(-seqlen // 256) * 256))
        hf_n = bsz if not args.hf_max_seqs or bsz <= args.hf_max_seqs else args.hf_max_seqs
        cases = {
            "ours": step(layer, x),
            "transformers": step(hf, x[:hf_n], hf_mb),
            "sequential": step(Sequential(layer), x) if seqlen <= SEQUENTIAL_MAX_LEN else None,
            "floor": lambda: (floor(x).square().mean().backward(), [setattr(p, "grad", None) for p in floor_module.parameters()]),
        }
        times = timed({k: v for k, v in cases.items() if v is not None}, args.repeats)
        res = {k: None if v is None else (*times[k], peak_bytes(v)) for k, v in cases.items()}
        if hf_n < bsz:  # scaled from hf_n sequences to all of them
            w, c, m = res["transformers"]
            res["transformers"] = (w * bsz / hf_n, c * bsz / hf_n, m)
            hf_mb = f"{hf_mb}, timed on {hf_n} sequences and scaled ×{bsz / hf_n:g}"
        for name, r in res.items():
            if r is not None:
                print(f"{bsz}x{seqlen} {name}: {r[0]*1e3:.0f} ms wall, {r[1]*1e3:.0f} ms CPU, {r[2]/2**20:.0f} MiB",
                      flush=True)
        rows.append(((bsz, seqlen), res, hf_mb, err))

    def cell(r):
        return "—" if r is None else f"{r[0]*1e3:.0f} / {r[1]*1e3:.0f} ms, {r[2]/2**20:.0f} MiB"

    lines = [
        "# Mamba-2 layer, forward+backward on CPU (d_model 512, d_state 128, headdim 64, expand 2, chunk 256)",
        "",
        f"torch {torch.__version__}, {args.threads} threads, float32. Each cell: best wall / best process-CPU "
        f"time of one forward+backward over {args.repeats} turns after a warm-up (the four methods take turns), "
        "and peak memory = most bytes allocated at once during the step (profiler). "
        f"Shared machine, load average {load:.1f} at start: wall times are noisy, CPU times less so.",
        "",
        "| shape (seqs × tokens) | (a) ours | (b) transformers | (c) sequential | (d) matmul floor "
        "| (b)/(a) time wall / CPU | (b)/(a) memory | (a)/(d) time wall / CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (bsz, seqlen), res, hf_mb, err in rows:
        a, b, d = res["ours"], res["transformers"], res["floor"]
        note = f" (in micro-batches of {hf_mb})" if hf_mb else ""
        lines.append(f"| {bsz} × {seqlen} | {cell(a)} | {cell(b)}{note} | {cell(res['sequential'])} | {cell(d)} "
                     f"| {b[0]/a[0]:.2f}× / {b[1]/a[1]:.2f}× | {b[2]/a[2]:.2f}× | {a[0]/d[0]:.2f}× / {a[1]/d[1]:.2f}× |")
    t = {shape: res["ours"] for shape, res, *_ in rows}
    lines += [
        "",
        f"Scaling of (a): t(4096)/t(1024) = {t[(1, 4096)][0] / t[(1, 1024)][0]:.2f} wall, "
        f"{t[(1, 4096)][1] / t[(1, 1024)][1]:.2f} CPU.",
        "(b) is checked against (a) on every shape first (max |difference| < 1e-4). Where its padding to 256-token "
        "chunks would need tens of GB, (b) runs in micro-batches (gradients accumulate): its time is for all sequences, "
        "its peak is that of one micro-batch. (c) is skipped above 256 steps (one Python step per token; its backward keeps every state).",
        "",
        "Command: `python benchmarks/ssd_scan.py" + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
        + (f" --hf-max-seqs {args.hf_max_seqs}" if args.hf_max_seqs else "") + "`",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
