"""The downstream test of Section 4.7 / Table 4: a video classifier trained on a few labelled videos, supervised
only and semi-supervised (FixMatch) with generated videos as unlabeled data, same seeds, scored on a test set.

    results = run_downstream("train.csv", "test.csv", "samples/colon-B", "runs/downstream", DownstreamConfig())
    # OUT/supervised-seed0/, OUT/semi-seed0/, ...: per-epoch checkpoints, result.json
    # OUT/results.json, OUT/table.md: macro F1 and accuracy, mean ± std over the seeds, Table 4's layout

Each video gives one clip: `frames` frames every `stride`, the centre window of the video, short side resized and
centre-cropped to `size` (the package's reader, `read_frames` + `to_tensor`); clips are read once, kept as uint8.
An epoch is one pass over the labelled clips in batches of `batch_size`; a semi-supervised step adds
`mu * batch_size` unlabeled clips (cycling through a per-epoch permutation), each seen weakly and strongly
augmented, all three parts in one forward (as FixMatch). AdamW, cosine learning rate per epoch, no EMA.
The randomness of epoch e (order, augmentations) is seeded by (seed, e) and the initial weights by seed, so a run
resumed from its checkpoint (written atomically after every epoch) ends with the weights an uninterrupted run
ends with. Re-running the same command resumes unfinished runs and skips finished ones.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint, newest_checkpoint, save_checkpoint, write_json_atomic
from ..data.clips import to_tensor
from ..data.index import clip_span
from ..data.video import VideoError, probe, read_frames
from ..errors import MedsoraError
from .classifier import build_classifier, to_input
from .fixmatch import augment_batch, fixmatch_loss, strong_augment, weak_augment
from .labels import LabelsError, class_names, encode, list_unlabeled, read_labels

F1_KIND = "macro F1: the unweighted mean over classes of per-class F1 = 2TP / (2TP + FP + FN), computed by hand"


class DownstreamError(MedsoraError, ValueError):
    """A downstream run that cannot go on (e.g. its folder holds a run with other settings)."""


@dataclass
class DownstreamConfig:
    arch: str = "tiny"            # tiny | r3d_18 | mc3_18 | r2plus1d_18 (classifier.ARCHS)
    weights: str = ""             # initial classifier weights ("" = random init)
    frames: int = 8               # frames per clip
    stride: int = 2               # take every k-th frame
    size: int = 64                # short side resize + centre crop
    epochs: int = 30
    batch_size: int = 8           # labelled clips per step
    mu: int = 2                   # unlabeled clips per labelled clip in a step (FixMatch's mu; it uses 7)
    threshold: float = 0.95       # confidence a pseudo-label needs (FixMatch, Endora's downstream code)
    lambda_u: float = 1.0         # weight of the unlabeled loss
    lr: float = 1e-3              # AdamW peak lr (cosine to 0 over the epochs)
    weight_decay: float = 0.05    # AdamW weight decay (40 videos from scratch overfit fast)


@dataclass
class ClipSets:
    """Clips (uint8 (N, T, C, H, W)) and class indices of the labelled sets; unlabeled clips or None."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    unlabeled: torch.Tensor | None
    fingerprint: str = ""         # sha256 of the lists the clips came from (resume refuses other data)


# ----------------------------------------------------------------------------------------------
# data

def centre_indices(num_frames: int, frames: int, stride: int) -> list[int] | None:
    """Frame indices of the centre clip of a video (None when it is shorter than one clip)."""
    span = clip_span(frames - 1, stride)
    if num_frames < span:
        return None
    start = (num_frames - span) // 2
    return list(range(start, start + span, stride))


def read_clip(path: Path, frames: int, stride: int, size: int) -> torch.Tensor:
    """uint8 (frames, 3, size, size): the centre clip of a video or frame folder."""
    try:
        n = probe(path).num_frames
        idx = centre_indices(n, frames, stride)
        if idx is None:
            raise VideoError(f"{n} frames, shorter than one clip ({frames} frames every {stride}: "
                             f"{clip_span(frames - 1, stride)}); lower --frames or --stride")
        x = to_tensor(read_frames(path, idx, short_side=size), size)      # (T, 3, S, S) in [-1, 1]
    except VideoError as e:
        raise LabelsError(f"{path}: {e}") from None
    return ((x + 1.0) * 127.5).round_().to(torch.uint8)


def load_clips(paths: list[Path], cfg: DownstreamConfig, desc: str) -> torch.Tensor:
    with tqdm(paths, desc=f"read {desc}", unit="video", leave=False) as bar:   # closed before an error prints
        return torch.stack([read_clip(p, cfg.frames, cfg.stride, cfg.size) for p in bar])


def _fingerprint(*lists) -> str:
    h = hashlib.sha256()
    for items in lists:
        h.update(json.dumps([str(x) for x in items]).encode())
    return h.hexdigest()[:16]


def prepare_data(train_csv, test_csv, unlabeled, cfg: DownstreamConfig) -> tuple[ClipSets, list[str]]:
    """Read the CSVs and the unlabeled folder (every error before any clip is decoded), then the clips."""
    train, test = read_labels(train_csv), read_labels(test_csv)
    classes = class_names(train, train_csv)
    train_y, test_y = encode(train, classes, train_csv), encode(test, classes, test_csv)
    unl_paths = list_unlabeled(unlabeled) if unlabeled else []
    sets = ClipSets(load_clips([t.path for t in train], cfg, "train"), torch.tensor(train_y),
                    load_clips([t.path for t in test], cfg, "test"), torch.tensor(test_y),
                    load_clips(unl_paths, cfg, "unlabeled") if unl_paths else None,
                    _fingerprint([(t.path, t.label) for t in train], [(t.path, t.label) for t in test], unl_paths))
    return sets, classes


# ----------------------------------------------------------------------------------------------
# training

def train_step(model, opt, x_l, y_l, u_weak=None, u_strong=None, threshold: float = 0.95,
               lambda_u: float = 1.0) -> dict:
    """One optimizer step: CE on the labelled clips (+ lambda_u * FixMatch loss when unlabeled views are given).

    Inputs are model inputs (B, C, T, H, W); the three parts go through the model in one batch.
    """
    model.train()
    parts = [x_l] if u_weak is None else [x_l, u_weak, u_strong]
    logits = model(torch.cat(parts))
    loss_x = F.cross_entropy(logits[:len(x_l)], y_l)
    loss_u, mask = torch.zeros((), device=x_l.device), torch.zeros(0)
    if u_weak is not None:
        n_u = len(u_weak)
        loss_u, mask = fixmatch_loss(logits[len(x_l):len(x_l) + n_u], logits[len(x_l) + n_u:], threshold)
    loss = loss_x + lambda_u * loss_u
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"loss": loss.item(), "loss_x": loss_x.item(), "loss_u": loss_u.item(),
            "mask_rate": mask.mean().item() if mask.numel() else 0.0}


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 20]).generate_state(1)[0])


def _unlabeled_order(n: int, need: int, g: torch.Generator) -> torch.Tensor:
    """`need` unlabeled indices: permutations of range(n) one after another."""
    return torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(need / n))])[:need]


def train_epoch(model, opt, data: ClipSets, cfg: DownstreamConfig, seed: int, epoch: int, semi: bool,
                device) -> dict:
    """One pass over the labelled clips; returns the mean loss terms and the share of confident unlabeled clips."""
    es = _epoch_seed(seed, epoch)
    torch.manual_seed(es)                                   # the augmentations draw from the global generator
    g = torch.Generator().manual_seed(es)
    order = torch.randperm(len(data.train_x), generator=g)
    steps = math.ceil(len(order) / cfg.batch_size)
    n_u = cfg.mu * cfg.batch_size
    u_order = _unlabeled_order(len(data.unlabeled), steps * n_u, g) if semi else None
    weak, strong, logs = weak_augment(), strong_augment(), []
    for s in range(steps):
        idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        x_l = to_input(augment_batch(data.train_x[idx], weak)).to(device)
        views = {}
        if semi:
            u = data.unlabeled[u_order[s * n_u:(s + 1) * n_u]]
            views = {"u_weak": to_input(augment_batch(u, weak)).to(device),
                     "u_strong": to_input(augment_batch(u, strong)).to(device)}
        logs.append(train_step(model, opt, x_l, data.train_y[idx].to(device), **views,
                               threshold=cfg.threshold, lambda_u=cfg.lambda_u))
    return {k: float(np.mean([log[k] for log in logs])) for k in logs[0]}


# ----------------------------------------------------------------------------------------------
# evaluation

def f1_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[float, list[float]]:
    """(macro F1, per-class F1): F1_k = 2 TP / (2 TP + FP + FN), 0 where a class is neither present nor predicted."""
    per = []
    for k in range(num_classes):
        tp = int(((pred == k) & (target == k)).sum())
        fp = int(((pred == k) & (target != k)).sum())
        fn = int(((pred != k) & (target == k)).sum())
        per.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(per)), per


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, num_classes: int, device, batch_size: int = 16) -> dict:
    """Accuracy and F1 of the model's argmax on the (unaugmented) clips `x`."""
    model.eval()
    pred = torch.cat([model(to_input(x[i:i + batch_size]).to(device)).argmax(1).cpu()
                      for i in range(0, len(x), batch_size)])
    model.train()
    macro, per = f1_scores(pred, y, num_classes)
    return {"f1_macro": macro, "f1_per_class": per, "accuracy": float((pred == y).float().mean())}


# ----------------------------------------------------------------------------------------------
# one run (one seed, one mode), resumable

def _settings(cfg: DownstreamConfig, seed: int, semi: bool, classes: list[str], data: ClipSets) -> dict:
    return {**asdict(cfg), "seed": seed, "semi": semi, "classes": classes, "data": data.fingerprint,
            "mu": cfg.mu if semi else 0}


def _check_settings(run_dir: Path, found: dict, settings: dict) -> None:
    diff = [f"{k}: {found.get(k)!r} there vs {v!r} now" for k, v in settings.items() if found.get(k) != v]
    if diff:
        raise DownstreamError(f"{run_dir} holds a run with other settings ({'; '.join(diff[:3])}); use another "
                              "--out or remove that folder")


def _resume(run_dir: Path, model, opt, settings: dict) -> tuple[int, list]:
    """(first epoch to run, history so far) from the run's newest complete checkpoint; (0, []) without one."""
    found = newest_checkpoint(run_dir)
    if found is None:
        return 0, []
    ckpt, meta = found
    _check_settings(run_dir, meta["config"], settings)
    load_checkpoint(ckpt, model=model, optimizer=opt)
    return meta["epoch"], list(meta["extra"].get("history", []))


def _set_lr(opt, cfg: DownstreamConfig, epoch: int) -> None:
    for group in opt.param_groups:
        group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))


def train_run(run_dir, data: ClipSets, classes: list[str], cfg: DownstreamConfig, seed: int, semi: bool,
              device="cpu") -> dict:
    """Train one classifier (resuming `run_dir` when it holds a checkpoint), evaluate it, write result.json."""
    run_dir = Path(run_dir)
    settings = _settings(cfg, seed, semi, classes, data)
    done = run_dir / "result.json"
    if done.exists():
        result = json.loads(done.read_text())
        _check_settings(run_dir, result["settings"], settings)
        return result
    torch.manual_seed(seed)
    model = build_classifier(cfg.arch, len(classes), cfg.weights or None).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = _resume(run_dir, model, opt, settings)
    name = f"{'semi' if semi else 'supervised'} seed {seed}"
    with tqdm(range(start, cfg.epochs), desc=name, unit="epoch", initial=start, total=cfg.epochs,
              leave=False) as bar:
        for epoch in bar:
            _set_lr(opt, cfg, epoch)
            t0 = time.perf_counter()
            stats = train_epoch(model, opt, data, cfg, seed, epoch, semi, device)
            history.append({"epoch": epoch + 1, **stats, "seconds": time.perf_counter() - t0})
            bar.set_postfix(loss=f"{stats['loss']:.3f}", mask=f"{stats['mask_rate']:.2f}")
            save_checkpoint(run_dir, epoch + 1, model, None, opt, settings, epoch=epoch + 1,
                            extra={"history": history}, keep=1)
    result = {"seed": seed, "mode": "semi" if semi else "supervised", "settings": settings,
              **evaluate(model, data.test_x, data.test_y, len(classes), device, cfg.batch_size),
              "epoch_seconds": float(np.mean([h["seconds"] for h in history])) if history else 0.0,
              "history": history}
    write_json_atomic(done, result)
    return result


# ----------------------------------------------------------------------------------------------
# the comparison

def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per mode: mean and std (over seeds, n - 1) of macro F1 and accuracy, in %; the gain of semi over supervised."""
    out = {}
    for mode, results in runs.items():
        f1, f1_sd = _mean_std([100 * r["f1_macro"] for r in results])
        acc, acc_sd = _mean_std([100 * r["accuracy"] for r in results])
        out[mode] = {"f1": f1, "f1_std": f1_sd, "accuracy": acc, "accuracy_std": acc_sd,
                     "seeds": [r["seed"] for r in results],
                     "epoch_seconds": float(np.mean([r["epoch_seconds"] for r in results]))}
    if "semi" in out:
        out["semi"]["f1_gain"] = out["semi"]["f1"] - out["supervised"]["f1"]
        out["semi"]["accuracy_gain"] = out["semi"]["accuracy"] - out["supervised"]["accuracy"]
    return out


def table4(summary: dict, source: str = "", n_unlabeled: int = 0) -> str:
    """Markdown in Table 4's layout: supervised-only, then + unlabeled with the gain; F1 and accuracy in %."""
    sup = summary["supervised"]
    lines = ["| Method | macro F1 (%) | accuracy (%) |", "|---|---|---|",
             f"| Supervised-only | {sup['f1']:.2f} ± {sup['f1_std']:.2f} | "
             f"{sup['accuracy']:.2f} ± {sup['accuracy_std']:.2f} |"]
    if "semi" in summary:
        s = summary["semi"]
        name = f"+ {n_unlabeled} unlabeled videos{f' ({source})' if source else ''}, FixMatch"
        lines.append(f"| {name} | {s['f1']:.2f} ± {s['f1_std']:.2f} "
                     f"({s['f1_gain']:+.2f}) | {s['accuracy']:.2f} ± {s['accuracy_std']:.2f} "
                     f"({s['accuracy_gain']:+.2f}) |")
    return "\n".join(lines) + "\n"


def run_downstream(train_csv, test_csv, unlabeled, out, cfg: DownstreamConfig, seeds=(0, 1, 2),
                   device="cpu") -> dict:
    """Supervised-only and (with `unlabeled`) semi-supervised runs for each seed; OUT/results.json and table.md."""
    out = Path(out)
    data, classes = prepare_data(train_csv, test_csv, unlabeled, cfg)
    modes = [False, True] if data.unlabeled is not None else [False]
    runs = {("semi" if semi else "supervised"): [train_run(out / f"{'semi' if semi else 'supervised'}-seed{s}",
                                                           data, classes, cfg, s, semi, device) for s in seeds]
            for semi in modes}
    summary = summarize(runs)
    n_u = 0 if data.unlabeled is None else len(data.unlabeled)
    table = table4(summary, Path(unlabeled).name if unlabeled else "", n_u)
    results = {"f1": F1_KIND, "classes": classes, "config": asdict(cfg), "seeds": list(seeds),
               "train": str(train_csv), "test": str(test_csv), "unlabeled": str(unlabeled or ""),
               "n_train": len(data.train_x), "n_test": len(data.test_x), "n_unlabeled": n_u,
               "summary": summary, "table": table,
               "runs": {m: [{k: v for k, v in r.items() if k != "history"} for r in rs] for m, rs in runs.items()}}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", results)
    tmp = out / "table.md.tmp"
    tmp.write_text(table)
    tmp.replace(out / "table.md")
    return results
