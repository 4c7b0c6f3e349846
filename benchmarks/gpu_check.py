"""The prepared GPU check: one command, ≤ 10 minutes on one CUDA GPU, results appended to benchmarks/results/gpu.md.

    python benchmarks/gpu_check.py [--preset B] [--batch 2] [--out benchmarks/results/gpu.md]

1. the CUDA-marked tests (pytest -k cuda): CPU vs CUDA diffusion, mamba_ssm kernels vs the pure-PyTorch layer;
2. mamba_ssm's fused SSD scan vs medsora's pure-PyTorch `ssd_scan`: largest output difference and time
   (forward + backward), when mamba-ssm is installed (`pip install 'medsora[cuda]'`);
3. a training step of the preset (loss + backward + AdamW + EMA), eager vs torch.compile, fp32 and bf16
   (autocast), with step time, compile time and peak GPU memory;
4. sampling time of one batch: DDIM 250 steps vs DPM-Solver++ 20 steps.

On a machine without CUDA each part says it was skipped and why; `--smoke` then runs parts 2-4 on the CPU with
the tiny preset, eager only, 2 steps (what the test suite does to keep this script working).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medsora.config import latent_frames, load_config  # noqa: E402
from medsora.diffusion.samplers import ddim_sample, solver_sample  # noqa: E402
from medsora.models.mamba2 import kernels_available  # noqa: E402
from medsora.models.medsora import build_model  # noqa: E402
from medsora.models.ssd import ssd_scan  # noqa: E402
from medsora.train import make_diffusion, update_ema  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat: int) -> tuple[float, float]:
    """(first call s, best of `repeat` further calls s)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first, best = time.perf_counter() - t0, float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return first, best


def cuda_tests() -> list[str]:
    if not torch.cuda.is_available():
        return ["skipped: no CUDA device (torch.cuda.is_available() is False)"]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "", "-k", "cuda", "-p", "no:cacheprovider",
                        str(ROOT / "tests")], capture_output=True, text=True, cwd=ROOT)
    return [f"pytest -k cuda: exit {r.returncode}, {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ''}"]


def scan_check(device: torch.device, smoke: bool) -> list[str]:
    have = device.type == "cuda" and kernels_available()
    if not have and not smoke:
        return [f"skipped: mamba_ssm kernels need CUDA and mamba-ssm (CUDA: {torch.cuda.is_available()}, "
                f"mamba_ssm importable: {kernels_available()})"]
    b, seqlen, h, p, n = (2, 64, 4, 16, 16) if smoke else (8, 2048, 24, 64, 128)
    g = torch.Generator(device="cpu").manual_seed(0)
    x, dt = torch.randn(b, seqlen, h, p, generator=g), torch.randn(b, seqlen, h, generator=g)
    B, C = torch.randn(b, seqlen, 1, n, generator=g), torch.randn(b, seqlen, 1, n, generator=g)
    A, D, bias = -torch.rand(h, generator=g) - 0.5, torch.randn(h, generator=g), torch.randn(h, generator=g)
    args = [t.to(device).requires_grad_(True) for t in (x, dt, A, B, C)]
    rows = []
    scans = {"pure-PyTorch ssd_scan": ssd_scan}
    if have:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        scans["mamba_ssm fused"] = mamba_chunk_scan_combined
    outs = {}
    for name, scan in scans.items():
        def step():
            y = scan(*args, chunk_size=256 if not smoke else 16, D=D.to(device), dt_bias=bias.to(device),
                     dt_softplus=True)
            y.square().mean().backward()
            return y
        outs[name] = step().detach()
        _, best = timed(step, device, 3)
        rows.append(f"{name}: forward+backward {best * 1e3:.1f} ms (b={b}, l={seqlen}, heads={h}, headdim={p}, "
                    f"d_state={n})")
    if len(outs) == 2:
        a, k = outs.values()
        rows.append(f"max |fused - pure| = {(a - k).abs().max().item():.2e} (output scale {a.abs().max().item():.2f})")
    elif not smoke:
        rows.append("mamba_ssm not importable: only the pure scan was timed")
    return rows


def train_check(preset: str, batch: int, device: torch.device, smoke: bool) -> list[str]:
    if device.type != "cuda" and not smoke:
        return ["skipped: the training-step check (eager vs compiled, fp32 vs bf16, peak memory) needs CUDA"]
    rows = []
    modes = [("fp32", False)] if smoke else [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    for precision, compiled in modes:
        cfg = load_config(preset, overrides=["model.attn_dropout=0"])
        torch.manual_seed(0)
        model = build_model(cfg.model).to(device)
        ema = copy.deepcopy(model).requires_grad_(False)
        net = torch.compile(model) if compiled else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        diffusion = make_diffusion(cfg)
        fv, fi = latent_frames(cfg.data.num_frames), latent_frames(cfg.data.num_images)
        x0 = torch.randn(batch, fv + fi, cfg.model.in_channels, *cfg.model.input_size, device=device)
        t = torch.randint(0, 1000, (batch,), device=device)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

        def step():
            with amp:
                loss = diffusion.training_losses(lambda x, tt: net(x, tt, num_video_frames=fv), x0, t)["loss"].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            update_ema(ema, model, 0.9999)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        first, best = timed(step, device, 2 if smoke else 5)
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else "n/a (CPU)"
        rows.append(f"{preset} batch {batch} {precision} {'compiled' if compiled else 'eager'}: step {best:.3f} s, "
                    f"first step {first:.1f} s (compile included), peak memory {peak}")
        model = ema = net = opt = None   # free the GPU memory before the next mode
    return rows


def sampling_check(preset: str, batch: int, device: torch.device, smoke: bool) -> list[str]:
    if device.type != "cuda" and not smoke:
        return ["skipped: the sampling-time check needs CUDA"]
    cfg = load_config(preset)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).eval()
    fv = latent_frames(cfg.data.num_frames)
    shape = (batch, fv, cfg.model.in_channels, *cfg.model.input_size)
    diffusion = make_diffusion(cfg)

    def model_fn(x, t):
        return model(x, t, num_video_frames=fv)

    runs = {"DDIM 250 steps": lambda: ddim_sample(diffusion, model_fn, shape, steps=3 if smoke else 250, seed=0,
                                                  device=device, progress=False),
            "DPM-Solver++ 20 steps": lambda: solver_sample(diffusion, model_fn, shape, steps=3 if smoke else 20, seed=0,
                                                           device=device, progress=False)}
    rows = []
    with torch.no_grad():
        for name, fn in runs.items():
            _, best = timed(fn, device, 1)
            rows.append(f"{name}{' (smoke: 3 steps)' if smoke else ''}: {best:.2f} s for a batch of {batch}")
    return rows


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="B")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="without CUDA: run parts 2-4 on the CPU, tiny, eager")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.md"))
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    smoke = args.smoke and device.type != "cuda"
    preset = "tiny" if smoke else args.preset
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or 'unknown'})"
    parts = {"CUDA tests": cuda_tests, "Mamba-2 scan": lambda: scan_check(device, smoke),
             "Training step": lambda: train_check(preset, args.batch, device, smoke),
             "Sampling": lambda: sampling_check(preset, args.batch, device, smoke)}
    lines = [f"## {datetime.datetime.now().isoformat(timespec='seconds')} · {name} · torch {torch.__version__}"
             f"{' · smoke run (no CUDA)' if smoke else ''}", ""]
    for title, fn in parts.items():
        t0 = time.perf_counter()
        rows = fn()
        lines += [f"**{title}** ({time.perf_counter() - t0:.0f} s)", *[f"- {r}" for r in rows], ""]
        print("\n".join(lines[-len(rows) - 2:]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {out}")
    return out


if __name__ == "__main__":
    main()
