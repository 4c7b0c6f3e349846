"""`medsora demo`: synthetic endoscopy data -> the packaged pretrained demo VAE + compensation modules -> latent and
flow-target cache -> tiny MedSora with optical-flow alignment -> DPM-Solver++ samples -> metrics, targets ->
report.html, on a CPU in under 10 minutes.

Each stage writes its outputs under `out/` and a marker in `out/.done/`; re-running skips finished stages
(and `medsora train` resumes a stage killed half-way from its checkpoints).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from .config import load_config
from .demo_targets import demo_targets

log = logging.getLogger(__name__)


def _stage(out: Path, name: str, timings: dict, fn, progress: bool):
    marker = out / ".done" / name
    if marker.exists():
        timings.setdefault(name, json.loads(marker.read_text())["seconds"])
        if progress:
            print(f"[demo] {name}: done already, skipped")
        return
    if progress:
        print(f"[demo] {name} ...", flush=True)
    t0 = time.perf_counter()
    fn()
    timings[name] = time.perf_counter() - t0
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"seconds": timings[name]}))


def latent_stats(cache_dir: Path, sampled: Path) -> dict:
    """Per-channel mean/std of the sampled video latents against the cached data latents (both flips)."""
    from safetensors.torch import load_file

    from .cache import LatentDataset

    ds = LatentDataset(cache_dir)
    data = torch.stack([ds.get(i, f, raw=True)["video"] for i in range(len(ds)) for f in (0, 1)])   # (n, f, C, h, w)
    z = load_file(str(sampled))["latents"]
    dims = (0, 1, 3, 4)
    gap = ((z.std(dims) - data.std(dims)) / data.std(dims)).abs().max().item()
    r = lambda x: [round(v, 3) for v in x.tolist()]  # noqa: E731
    return {"data_mean": r(data.mean(dims)), "data_std": r(data.std(dims)), "sampled_mean": r(z.mean(dims)),
            "sampled_std": r(z.std(dims)), "worst_std_gap": gap}


def demo_vae_geometry(folder: Path, size: int) -> list[str]:
    """Model overrides that fit the demo VAE in `folder`: its latent channels and grid, patches of 2, and a width of
    at least twice a patch's p*p*C values. Measured on the demo: with patches of 4 on the 16x16 grid (4*4*8 = 128
    values a token) a width of 64 predicted the noise at t=999 with correlation 0.70 and 128 with 0.989, and in
    both cases DDIM and DPM-Solver++ samples diverged (latent std 20-100x the data's): at t near 1000 a small
    error in the noise is multiplied by 1/sqrt(abar) ~ 156 in the predicted x0. Patches of 2 (32 values, width
    64) sample correctly; they cost ~1.4x a step of the 128-wide patch-4 model."""
    vae_cfg = json.loads((folder / "config.json").read_text())
    grid, patch = size // 2 ** (len(vae_cfg["block_out_channels"]) - 1), 2
    width = max(64, 2 * patch * patch * vae_cfg["latent_channels"])
    return [f"model.in_channels={vae_cfg['latent_channels']}", f"model.input_size=({grid}, {grid})",
            f"model.patch_size={patch}", f"model.hidden_size={width}"]


def demo_compensation_config(steps: int, seed: int, lpips_trunk: str = ""):
    """The demo's compensation training: `steps` steps at lr 1e-3 with L1 + 0.1 FFL, + LPIPS (VGG16, weight 1: the
    paper's whole Eq. 16) when a VGG16 trunk file is given. Without LPIPS the loss pulls towards blur: on a VAE trained
    to draw texture it bought 1.1 dB back by blurring it away (benchmarks/results/demo_vae.md)."""
    from .vae.train import CompensationConfig

    return CompensationConfig(epochs=0, max_steps=steps, lr=1e-3, lpips_weight=1.0 if lpips_trunk else 0.0,
                              lpips_net="vgg", lpips_trunk=lpips_trunk, seed=seed)


def compensation_loss_note(cfg) -> str:
    """What the report says of the compensation loss of `cfg` (a `demo_compensation_config`)."""
    if cfg.lpips_weight > 0:
        return (f"L1 + LPIPS + {cfg.ffl_weight:g} FFL, the paper's Eq. 16, LPIPS on the VGG16 trunk {cfg.lpips_trunk}; "
                f"lr {cfg.lr:g}")
    return f"L1 + {cfg.ffl_weight:g} FFL, lr {cfg.lr:g}; LPIPS is off: it needs VGG16 weights, --lpips-trunk FILE turns it on"


# issue #18 in the demo: one model samples unconditionally (the targets) and from a given first frame; clips of 4k + 1
# frames, so the causal VAE's first latent frame encodes the first frame alone (docs/first_frame.md, "Limits")
FIRST_FRAME_OVERRIDES = ["model.first_frame=true", "train.first_frame_prob=0.5", "data.num_frames=17"]
FIRST_FRAME_SEGMENTS = 3   # the demo's long video: 3 clips chained (49 frames of 17-frame clips)


def first_frame_stage(out: Path, cfg, vae, seed: int, progress: bool) -> None:
    """Two image-conditioned samples, each from the first frame of a synthetic video that is not in the training
    data, and one long video (FIRST_FRAME_SEGMENTS clips chained, unconditional start)."""
    import numpy as np

    from .data.synth import make_video, video_seed
    from .data.video import write_frames
    from .sample import sample

    firsts = np.stack([make_video(video_seed(seed + 1, k), frames=1, size=cfg.data.size)[0] for k in range(2)])
    write_frames(out / "first_frames", firsts)
    steps = cfg.diffusion.sample_steps
    sample(out / "run", vae, out / "i2v", num=None, first_frame=out / "first_frames", steps=steps, seed=seed,
           progress=progress, overwrite=True)
    frames = FIRST_FRAME_SEGMENTS * (cfg.data.num_frames - 1) + 1
    sample(out / "run", vae, out / "long", num=1, frames=frames, steps=steps, seed=seed, progress=progress,
           overwrite=True)


def first_frame_figures(out: Path, cfg, vae) -> dict:
    """Issue #18's figures on the demo's own first-frame outputs (medsora.first_frame_check)."""
    from .first_frame_check import continuity, first_frame_fit, video_frames

    fit = first_frame_fit(vae, sorted((out / "i2v").glob("*.mp4")), sorted((out / "first_frames").glob("*.png")),
                          cfg.data.size)
    cont = continuity(video_frames(sorted((out / "long").glob("*.mp4"))[0]), cfg.data.num_frames,
                      vae.temporal_factor)
    return {"fit": fit, "continuity": cont, "rows": [
        {"target": "image-conditioned first frame within 1 dB of the VAE's own reconstruction PSNR",
         "measured": f"{fit['sample_psnr']:.1f} vs {fit['vae_psnr']:.1f} dB (gap {fit['gap']:.2f} dB)",
         "met": bool(fit["gap"] <= 1.0)},
        {"target": "long video: segment boundaries <= 1.5x the median frame-to-frame difference inside segments",
         "measured": f"{cont['ratio']:.2f}x ({cont['boundary']:.2f} vs {cont['inside_median']:.2f} grey levels; "
                     f"between the VAE's latent groups inside segments {cont['between_groups']:.2f})",
         "met": bool(cont["ratio"] <= 1.5)}]}


def run_demo(out: str | Path = "runs/demo", videos: int = 12, frames: int = 100, vae_steps: int = 40,
             train_steps: int = 1700, samples: int = 8, sample_steps: int = 25, dino_weights: str = "",
             raft_weights: str = "", weights_dir: str | None = None, seed: int = 0, progress: bool = True,
             overrides: list[str] | None = None, align: bool = True, first_frame: bool = True,
             lpips_trunk: str = "") -> dict:
    from .assets import DEMO_VAE
    from .cache import build_cache, flow_targets_from_config
    from .data.clips import video_loader
    from .data.synth import write_dataset
    from .report import build_report
    from .sample import reconstruct, sample
    from .train import train
    from .vae.autoencoder import VideoVAE, load_vae
    from .vae.evaluate import evaluate_reconstruction
    from .vae.train import train_compensation

    if lpips_trunk and not Path(lpips_trunk).expanduser().is_file():
        raise FileNotFoundError(f"--lpips-trunk {lpips_trunk}: no such file; give torchvision's VGG16 ImageNet weights "
                                "(vgg16-397923af.pth), or leave the option out (LPIPS off)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if not (DEMO_VAE / "config.json").exists():
        raise FileNotFoundError(f"the demo's pretrained VAE is missing from the installation ({DEMO_VAE}); "
                                "reinstall medsora, or make it with `python tools/make_demo_vae.py`")
    compensation = out / "vae" / "compensation.safetensors" if vae_steps > 0 else ""
    comp_cfg = demo_compensation_config(vae_steps, seed, lpips_trunk)
    cfg = load_config("tiny", overrides=[
        f"data.root={out / 'data'}", f"train.max_steps={train_steps}", "train.epochs=1000",
        "train.holdout_clips=4", f"train.eval_every={max(train_steps // 6, 1)}", f"train.seed={seed}",
        f"train.align={str(align).lower()}", f"flow.dino_weights={dino_weights}", f"flow.raft_weights={raft_weights}",
        f"flow.method={'raft' if raft_weights else 'farneback'}", f"vae.path={out / 'vae'}",
        f"vae.compensation={compensation}", *demo_vae_geometry(DEMO_VAE, 64),
        "diffusion.sampler=dpmpp-2m", f"diffusion.sample_steps={sample_steps}",
        *(FIRST_FRAME_OVERRIDES if first_frame else []), *(overrides or [])])
    timings: dict[str, float] = {}
    notes: list[str] = []
    vae_holder: dict = {}

    def get_vae():
        if "vae" not in vae_holder:
            vae_holder["vae"] = load_vae(cfg.vae)
        return vae_holder["vae"]

    def clip_loader(shuffle: bool, heldout: bool = False):
        return video_loader(cfg.data.root, cfg.data, cfg.train.holdout_clips, heldout, batch_size=2,
                            shuffle=shuffle, seed=seed)

    _stage(out, "data", timings, lambda: write_dataset(out / "data", videos=videos, seed=seed, frames=frames,
                                                         size=cfg.data.size), progress)

    def vae_stage():
        # the paper's VAE step: a pretrained VAE, frozen, plus zero-initialised frequency-compensation modules
        # trained on 8-frame halves with Eq. 16's loss (its LPIPS term only with --lpips-trunk: it needs VGG weights)
        import shutil

        shutil.copytree(DEMO_VAE, out / "vae", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__*"))
        vae = VideoVAE.from_pretrained(out / "vae")
        if vae_steps > 0:
            clips = [half for b in clip_loader(shuffle=True) for half in (b[:, :8], b[:, 8:16]) if half.shape[1] == 8]
            train_compensation(vae, clips, comp_cfg, out / "vae", progress=progress)
        vae_holder["vae"] = vae.eval()
        evaluate_reconstruction(None, vae, clip_loader(False, heldout=True), out / "vae", progress=progress)

    _stage(out, "vae", timings, vae_stage, progress)

    def cache_stage():
        flow = flow_targets_from_config(cfg) if align else None
        build_cache(cfg, get_vae(), out / "cache", flow=flow, progress=progress)

    _stage(out, "cache", timings, cache_stage, progress)
    _stage(out, "train", timings, lambda: train(cfg, out / "cache", out / "run", resume="auto", progress=progress),
           progress)
    _stage(out, "sample", timings, lambda: sample(out / "run", get_vae(), out / "samples", num=samples, batch_size=4,
                                                  steps=cfg.diffusion.sample_steps, seed=seed, progress=progress),
           progress)

    _stage(out, "reconstruct", timings, lambda: reconstruct(out / "run", get_vae(), out / "reconstructions",
                                                            num=samples, progress=progress), progress)

    if cfg.model.first_frame:
        _stage(out, "first-frame", timings, lambda: first_frame_stage(out, cfg, get_vae(), seed, progress), progress)

    def metrics_stage():
        from .evaluate import evaluate

        evaluate(out / "data", out / "samples", num=samples, weights_dir=weights_dir, out=out / "metrics.json",
                 resolution=None, real_stride=cfg.data.frame_stride, cache_dir=None, progress=progress, workers=0)

    _stage(out, "metrics", timings, metrics_stage, progress)

    if align and dino_weights:
        notes.append(f"Optical-flow alignment was ON with the paper's DINO ViT-S/8 features ({dino_weights}): flow "
                     f"by {cfg.flow.method} ({cfg.flow.raft_weights or 'no weights needed'}), "
                     f"alpha={cfg.train.align_weight}, DINO layers {list(cfg.model.align_layers)}.")
    elif align:
        notes.append(f"Optical-flow alignment was ON with weight-free flow-patch features, NOT the paper's DINO "
                     f"features (no DINO ViT-S/8 weights given; --dino-weights uses them): flow by {cfg.flow.method}, "
                     f"alpha={cfg.train.align_weight}, layers {list(cfg.model.align_layers)}.")
    else:
        notes.append("Optical-flow alignment was OFF (--no-align).")
    from .report import read_jsonl

    rows = read_jsonl(out / "run" / "metrics.jsonl")
    evals = [r for r in rows if "eval_mse" in r]
    vae_metrics = json.loads((out / "vae" / "metrics.json").read_text())
    headline = (f"held-out denoising MSE {evals[0]['eval_mse']:.3f} -> {evals[-1]['eval_mse']:.3f} "
                f"({evals[-1]['eval_mse'] / evals[0]['eval_mse']:.2f}x) over {evals[-1]['step']} steps; "
                f"VAE PSNR {vae_metrics['base']['psnr']:.1f} dB (pretrained, frozen) -> "
                f"{vae_metrics['compensated']['psnr']:.1f} dB with compensation, on held-out clips")
    made = json.loads((out / "vae" / "demo_vae.json").read_text()) if (out / "vae" / "demo_vae.json").exists() else {}
    notes.append(f"VAE: the packaged pretrained demo VAE (a tiny CogVideoX-type 3D causal VAE, 4x spatial / 4x "
                 f"temporal, {made.get('recipe', {}).get('latent_channels', '?')} latent channels, trained "
                 f"{made.get('steps', '?')} steps on synthetic videos of other seeds by tools/make_demo_vae.py), frozen "
                 f"as the paper freezes CogVideoX's; its frequency-compensation modules trained {vae_steps} steps "
                 f"here ({compensation_loss_note(comp_cfg)}).")
    lat = latent_stats(out / "cache", out / "samples" / "latents.safetensors")
    notes.append("sampled vs data latents, per channel: mean {} vs {}, std {} vs {} (worst relative std gap {:.1%})"
                 .format(lat["sampled_mean"], lat["data_mean"], lat["sampled_std"], lat["data_std"],
                         lat["worst_std_gap"]))
    from .report import clip_sets, clip_stats, summarize

    sets = clip_sets({"data": {"num_frames": cfg.data.num_frames, "frame_stride": cfg.data.frame_stride,
                               "size": cfg.data.size}}, out / "samples", out / "data", out / "reconstructions", samples)
    means = {name: summarize(clip_stats(vids)) for name, vids in sets.items()}
    targets = demo_targets(means, vae_metrics["compensated"]["psnr"])
    summary = {"headline": headline, "targets": targets, "clip_stats": means, "latent_stats": lat, "timings": {**timings, "total": sum(timings.values())}, "notes": notes,
               "eval_mse": [(r["step"], r["eval_mse"]) for r in evals]}
    if cfg.model.first_frame:
        summary["first_frame"] = first_frame_figures(out, cfg, get_vae())
        notes.append(f"First frame and long video (beyond the paper, issue #18): the model was trained with "
                     f"model.first_frame=true (condition kept for {cfg.train.first_frame_prob:.0%} of the clips, "
                     f"clips of {cfg.data.num_frames} frames); the generated clips above are its unconditional samples.")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    summary["report"] = str(build_report(out, samples_dir=out / "samples", real_dir=out / "data",
                                         out=out / "report.html"))
    return summary
