"""`medsora report RUN_DIR`: one HTML page (relative assets) for a training run or a demo folder.

It shows what exists: real and generated clips side by side (GIF), their flow images, loss curves,
VAE reconstruction figures, the metrics table (with "not computed" reasons), figures comparing generated
and real clips (colour statistics, frame-to-frame difference), the resolved config, timings per stage,
versions and hardware. Nothing is claimed that a figure does not show.
"""
from __future__ import annotations

import html
import json
import logging
import os
import platform
from pathlib import Path

import numpy as np

from .data.index import find_sources
from .data.video import probe, read_frames, write_gif

log = logging.getLogger(__name__)


def clip_stats(videos: list[np.ndarray]) -> dict:
    """Per-video statistics of uint8 (T, H, W, 3) clips, as lists over the videos.

    rgb_mean: mean colour; rgb_std: spatial contrast; motion: mean |frame_t+1 - frame_t| in grey levels;
    dark: fraction of pixels below 20 (the vignette outside an endoscope's field of view); sharpness: mean squared
    3x3 Laplacian of the grey frames (grey levels^2: texture, edges, highlights); flow_jitter: mean end-point
    difference (px) between the Farnebäck flows of consecutive frame pairs (low: smooth, coherent motion).
    """
    import cv2

    out = {"rgb_mean": [], "rgb_std": [], "motion": [], "dark": [], "sharpness": [], "flow_jitter": []}
    for v in videos:
        x = v.astype(np.float32)
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in v]
        out["rgb_mean"].append(x.mean(axis=(0, 1, 2)).tolist())
        out["rgb_std"].append(x.std(axis=(1, 2)).mean(0).tolist())
        out["motion"].append(float(np.abs(np.diff(x, axis=0)).mean()) if len(x) > 1 else 0.0)
        out["dark"].append(float((x.max(-1) < 20).mean()))
        out["sharpness"].append(float(np.mean([(cv2.Laplacian(g.astype(np.float32), cv2.CV_32F, ksize=1) ** 2).mean()
                                               for g in grey])))
        flows = [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0) for a, b in zip(grey, grey[1:])]
        out["flow_jitter"].append(float(np.mean([np.linalg.norm(f1 - f0, axis=-1).mean()
                                                 for f0, f1 in zip(flows, flows[1:])])) if len(flows) > 1 else 0.0)
    return out


def summarize(stats: dict) -> dict:
    return {k: np.mean(np.asarray(v), axis=0).round(3).tolist() for k, v in stats.items()}


def load_videos(folder: str | Path, num: int = 8, frames: int | None = None, stride: int = 1,
                size: int | None = None) -> list[np.ndarray]:
    """Up to `num` clips (uint8 (T, H, W, 3)) from the videos or frame folders under `folder`."""
    from .data.clips import to_tensor

    out = []
    for src in find_sources(folder)[:num]:
        try:
            n = probe(src).num_frames
        except Exception:  # noqa: BLE001 - the report shows what can be read
            continue
        count = n if frames is None else min(frames, n // stride)
        v = read_frames(src, [k * stride for k in range(count)], size)
        if size:
            v = ((to_tensor(v, size).permute(0, 2, 3, 1) + 1) * 127.5).round().byte().numpy()
        out.append(v)
    return out


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL log; lines that are not a JSON object (a write cut by a kill, a damaged file) are
    skipped with one warning naming the file, never a traceback."""
    rows, bad = [], []
    for k, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        (rows.append(row) if isinstance(row, dict) else bad.append(k))
    if bad:
        log.warning("%s: %d unreadable lines skipped (first at line %d)", path, len(bad), bad[0])
    return rows


def _plot_losses(metrics_file: Path, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(metrics_file)
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_mse" in r]
    if not train and not evals:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    if train:
        steps = [r["step"] for r in train]
        for key in ("loss", "mse", "vb"):
            axes[0].plot(steps, [r[key] for r in train], label=key, lw=1)
        if any(r.get("align") for r in train):
            axes[0].plot(steps, [r["align"] for r in train], label="align", lw=1)
        axes[0].set_yscale("log")
        axes[0].set_xlabel("step")
        axes[0].legend()
        axes[0].set_title("training loss")
    if evals:
        axes[1].plot([r["step"] for r in evals], [r["eval_mse"] for r in evals], "o-")
        axes[1].set_xlabel("step")
        axes[1].set_title("held-out denoising MSE (EMA, fixed t and noise)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _plot_stats(sets: dict[str, dict], out: Path) -> Path:
    """Bar and box plots of clip_stats for each named set (real, through the VAE, generated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    x, width = np.arange(3), 0.8 / len(sets)
    for k, (name, s) in enumerate(sets.items()):
        m = np.asarray(s["rgb_mean"])
        axes[0].bar(x + k * width, m.mean(0), width, yerr=m.std(0), label=name, color=["#888", "#59a", "#c44"][k])
    axes[0].set_xticks(x + 0.4 - width / 2, ["R", "G", "B"])
    axes[0].set_title("mean colour (± std over clips)")
    axes[0].legend(fontsize=7)
    labels = [name.replace(" through the ", "\nthrough ") for name in sets]
    axes[1].boxplot([s["motion"] for s in sets.values()], tick_labels=labels)
    axes[1].set_title("frame-to-frame |difference|")
    axes[2].boxplot([s["dark"] for s in sets.values()], tick_labels=labels)
    axes[2].set_title("dark fraction (vignette)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _flow_images(videos: list[np.ndarray], out_dir: Path, prefix: str, n: int = 4) -> list[Path]:
    """Farneback flow of consecutive frames rendered with the paper's HSV mapping (Eq. 13), as GIFs."""
    import torch

    from .flow.flow import FarnebackFlow
    from .flow.flow_image import flow_to_rgb

    est = FarnebackFlow()
    paths = []
    for i, v in enumerate(videos[:n]):
        x = torch.from_numpy(v).permute(0, 3, 1, 2).float() / 127.5 - 1      # (T, 3, H, W) in [-1, 1]
        rgb = flow_to_rgb(est(x))                                             # (T-1, 3, H, W) in [0, 1]
        frames = (rgb.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        paths.append(write_gif(out_dir / f"{prefix}_flow_{i}.gif", frames))
    return paths


def _versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
    try:
        from importlib.metadata import version

        for pkg in ("medsora", "diffusers", "timm", "transformers", "av"):
            out[pkg] = version(pkg)
    except Exception:  # noqa: BLE001
        pass
    return out


def _table(rows: list[list], head: list[str]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def clip_sets(cfg: dict, samples_dir: Path, real_dir: Path, recon_dir: Path, num: int) -> dict[str, list]:
    """{"real", "real through the VAE", "generated"}: up to `num` uint8 clips of each set that exists; real clips
    read with the generated clips' length and size (else the config's)."""
    data = cfg.get("data", {})
    fake = load_videos(samples_dir, num) if samples_dir.exists() else []
    frames = fake[0].shape[0] if fake else data.get("num_frames")
    size = fake[0].shape[1] if fake else data.get("size")
    real = load_videos(real_dir, num, frames, data.get("frame_stride", 1), size) if real_dir.exists() else []
    recon = load_videos(recon_dir, num) if recon_dir.exists() else []
    return {name: vids for name, vids in (("real", real), ("real through the VAE", recon), ("generated", fake)) if vids}


def _targets_section(summary: dict) -> str:
    rows = [[t["target"], t["measured"], "met" if t["met"] else "NOT met"] for t in summary.get("targets", [])]
    return "<h2>Targets</h2>" + _table(rows, ["target", "measured", ""]) if rows else ""


def _alignment_section(run_dir: Path) -> str:
    """Whether the run trained with optical-flow alignment, and with which features (RUN/alignment.json)."""
    path = next((p for p in (run_dir / "alignment.json", run_dir / "run" / "alignment.json") if p.exists()), None)
    try:
        rec = json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        rec = None
    if not isinstance(rec, dict):
        return ""
    text = (f"ON: features {rec.get('features')}, weight {rec.get('weight')}, blocks aligned to layers "
            f"{rec.get('layers')} (targets {rec.get('targets')})" if rec.get("align") else "OFF")
    return f"<h2>Optical-flow alignment</h2><p>{html.escape(text)}</p>"


def _strip(frames: list[np.ndarray], path: Path, gap: int = 2) -> Path:
    """Frames (H, W, 3) uint8 side by side with a white gap, as one PNG."""
    from PIL import Image

    h = max(f.shape[0] for f in frames)
    tiles = []
    for f in frames:
        tiles += [np.pad(f, ((0, h - f.shape[0]), (0, 0), (0, 0))), np.full((h, gap, 3), 255, np.uint8)]
    Image.fromarray(np.concatenate(tiles[:-1], axis=1)).save(path)
    return path


def _first_frame_section(run_dir: Path, summary: dict, assets: Path, rel) -> str:
    """Issue #18 (beyond the paper): image-conditioned samples beside their conditioning frame, and a long video."""
    from PIL import Image

    i2v, long = sorted((run_dir / "i2v").glob("*.mp4")), sorted((run_dir / "long").glob("*.mp4"))
    if not (i2v or long):
        return ""
    parts = ["<h2>From a given first frame, and a long video (beyond the paper)</h2>"]
    firsts = sorted((run_dir / "first_frames").glob("*.png"))
    for k, (video, first) in enumerate(zip(i2v, firsts)):
        frames = read_frames(video, range(probe(video).num_frames))
        given = np.array(Image.open(first).convert("RGB"))
        png = _strip([given, *frames[::4]], assets / f"i2v_{k}.png")
        gif = write_gif(assets / f"i2v_{k}.gif", frames)
        parts.append(f"<p><img src='{rel(png)}'> <img src='{rel(gif)}'><br>the given frame, then frames 0, 4, 8, ... "
                     "of the sample drawn from it (frame 0 is pinned to the given frame's latent)</p>")
    for k, video in enumerate(long[:1]):
        frames = read_frames(video, range(probe(video).num_frames))
        png = _strip(list(frames[::4]), assets / f"long_{k}.png")
        gif = write_gif(assets / f"long_{k}.gif", frames)
        parts.append(f"<p><img src='{rel(gif)}'><br><img src='{rel(png)}' style='max-width:100%'><br>a long video of "
                     f"{len(frames)} frames (every 4th shown): clips chained, each started from the last frame of the "
                     "one before</p>")
    rows = [[r["target"], r["measured"], "met" if r["met"] else "not met"]
            for r in summary.get("first_frame", {}).get("rows", [])]
    if rows:
        parts.append(_table(rows, ["goal (issue #18)", "measured", ""]))
    return "".join(parts)


def build_report(run_dir: str | Path, samples_dir: str | Path | None = None, real_dir: str | Path | None = None,
                 out: str | Path | None = None, num: int = 6, recon_dir: str | Path | None = None) -> Path:
    """Write `report.html` (default: in run_dir) from what the run folder holds; returns its path.

    `recon_dir` (default RUN/reconstructions): real clips through the VAE (`medsora sample --reconstruct`), shown
    and measured as a third set between the real and the generated clips."""
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder; pass a run folder of `medsora train` or `medsora demo`")
    out = Path(out or run_dir / "report.html")
    assets = out.parent / "report_assets"
    assets.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath(p, out.parent)  # noqa: E731
    cfg_file = next((p for p in (run_dir / "config.yaml", run_dir / "run" / "config.yaml") if p.exists()), None)
    cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file else {}
    samples_dir = Path(samples_dir) if samples_dir else run_dir / "samples"
    real_dir = Path(real_dir) if real_dir else Path(cfg.get("data", {}).get("root", "") or run_dir / "data")
    parts = [f"<h1>MedSora report — {html.escape(run_dir.name)}</h1>"]
    summary = {}
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        parts.append(f"<p class=summary>{html.escape(summary.get('headline', ''))}</p>")

    # clips side by side
    sets = clip_sets(cfg, samples_dir, real_dir, Path(recon_dir) if recon_dir else run_dir / "reconstructions", num)
    real, recon, fake = (sets.get(k, []) for k in ("real", "real through the VAE", "generated"))
    if real or fake:
        parts.append("<h2>Real and generated clips</h2><div class=grid>")
        for name, vids in sets.items():
            gifs = [write_gif(assets / f"{name}_{i}.gif", v) for i, v in enumerate(vids)]
            flows = _flow_images(vids, assets, name) if vids and vids[0].shape[0] > 1 else []
            parts.append(f"<div><h3>{name} ({len(vids)})</h3>" +
                         "".join(f"<img src='{rel(g)}'>" for g in gifs) +
                         ("<h4>their optical flow (Farnebäck, HSV as Eq. 13)</h4>" +
                          "".join(f"<img src='{rel(f)}'>" for f in flows) if flows else "") + "</div>")
        parts.append("</div>")
    if real and fake:
        stats = {name: clip_stats(vids) for name, vids in sets.items()}
        fig = _plot_stats(stats, assets / "stats.png")
        means = {name: summarize(st) for name, st in stats.items()}
        rows = [[k, *(m[k] for m in means.values())] for k in means["real"]]
        vae_note = (" The real clips through the VAE show what the VAE alone keeps: a sample can at best match them, "
                    "so a gap between real and them is the VAE's, a gap between them and the generated clips the "
                    "model's.") if recon else ""
        parts.append("<h2>Generated vs real: statistics</h2>" + _table(rows, ["statistic", *means]) +
                     f"<img src='{rel(fig)}'><p>rgb_mean: mean colour; rgb_std: spatial contrast; motion: mean absolute "
                     "frame-to-frame difference (grey levels); dark: fraction of near-black pixels (the vignette)."
                     f"{vae_note}</p>")
        keys = {"real": "real", "real through the VAE": "vae_reconstructed", "generated": "generated"}
        (out.parent / "clip_stats.json").write_text(json.dumps({keys[n]: m for n, m in means.items()}, indent=1))
    # curves
    metrics_file = next((p for p in (run_dir / "metrics.jsonl", run_dir / "run" / "metrics.jsonl") if p.exists()), None)
    if metrics_file:
        fig = _plot_losses(metrics_file, assets / "loss.png")
        if fig:
            parts.append(f"<h2>Training</h2><img src='{rel(fig)}'>")
    # VAE
    vae_dir = run_dir / "vae"
    for png in sorted(vae_dir.glob("*.png")) if vae_dir.exists() else []:
        parts.append(f"<h2>VAE reconstructions</h2><img src='{rel(png)}' style='max-width:100%'>")
    for js in sorted(vae_dir.glob("*.json")) if vae_dir.exists() else []:
        if js.name != "config.json":
            parts.append(f"<h3>{html.escape(js.name)}</h3><pre>{html.escape(js.read_text())}</pre>")
    # metrics
    if (run_dir / "metrics.json").exists():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics = metrics.get("metrics", metrics)
        rows = [[k, "not computed" if v.get("value") is None else f"{v['value']:.4g}", v.get("reason", "")]
                for k, v in metrics.items()]
        parts.append("<h2>Metrics</h2>" + _table(rows, ["metric", "value", "note"]))
    parts.append(_targets_section(summary))
    parts.append(_first_frame_section(run_dir, summary, assets, rel))
    parts.append(_alignment_section(run_dir))
    if summary.get("timings"):
        rows = [[k, f"{v:.1f}"] for k, v in summary["timings"].items()]
        parts.append("<h2>Timings</h2>" + _table(rows, ["stage", "seconds"]))
    if summary.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"]) + "</ul>")
    if cfg:
        parts.append(f"<h2>Configuration</h2><pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False))}</pre>")
    parts.append("<h2>Versions and hardware</h2>" + _table([[k, v] for k, v in _versions().items()], ["", ""]))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}img{margin:2px}"
             ".grid{display:grid;grid-template-columns:1fr 1fr;gap:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.summary{font-size:1.1em;background:#eef;"
             "padding:.5em}pre{background:#f6f6f6;padding:.5em;overflow:auto}")
    out.write_text(f"<!doctype html><html><head><meta charset=utf-8><title>MedSora report</title><style>{style}"
                   f"</style></head><body>{''.join(parts)}</body></html>")
    return out
