"""Time per 100 videos of each metric's feature extraction (16-frame clips, 128 px), random weights.

    python benchmarks/metrics_time.py [--device cpu] [--out benchmarks/results/metrics_time.md]

The networks are the real architectures at their protocol sizes with random weights (speed does not
depend on the weights). To stay within a few minutes on a CPU, the two largest are measured on a
part and extrapolated linearly, as the table says: VideoMAE ViT-g/14 (40 blocks) on 2 blocks, CLIP
ViT-L/14 on 2 of a clip's 16 frames. Decoding (128 px mp4, centre crop) is timed separately.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _time(fn, repeat: int = 1) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process over all its threads) per call."""
    fn()  # warm-up (allocations, one-time kernels)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat, (time.process_time() - c) / repeat


def _c3d():
    """C3D (Tran et al. 2015) as TGANv2's C3DVersion1: 8 convs 3x3x3, 5 pools, fc6/fc7 4096, fc8 101 (random)."""
    from torch import nn

    def conv(i, o):
        return [nn.Conv3d(i, o, 3, padding=1), nn.ReLU()]
    layers = [*conv(3, 64), nn.MaxPool3d((1, 2, 2)), *conv(64, 128), nn.MaxPool3d(2), *conv(128, 256),
              *conv(256, 256), nn.MaxPool3d(2), *conv(256, 512), *conv(512, 512), nn.MaxPool3d(2),
              *conv(512, 512), *conv(512, 512), nn.MaxPool3d(2, padding=(0, 1, 1)), nn.Flatten(),
              nn.Linear(8192, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 101), nn.Softmax(1)]
    return nn.Sequential(*layers)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="")
    args = p.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    clip = torch.randint(0, 256, (1, 16, 128, 128, 3), dtype=torch.uint8)
    rows = []  # (metric, network, seconds per 100 videos, how measured)

    from medsora.metrics.fvd import I3DFeatures
    from medsora.metrics.i3d import InceptionI3d

    i3d = I3DFeatures(InceptionI3d(), dev)
    s = _time(lambda: i3d(clip))
    rows.append(("FVD", "I3D, 16×224×224", [100 * x for x in s], "1 clip per call"))

    c3d = _c3d().to(dev).eval()   # StyleGAN-V's c3d_ucf101.pt architecture (TGANv2's C3DVersion1) at 16x112x112
    x112 = torch.nn.functional.interpolate(clip[0].permute(0, 3, 1, 2).float(), size=(112, 112))
    x112 = x112.permute(1, 0, 2, 3)[None].to(dev)                     # (1, 3, 16, 112, 112)
    with torch.no_grad():
        s = _time(lambda: c3d(x112))
    rows.append(("IS (video, ISv)", "C3D UCF-101, 16×112×112", [100 * x for x in s], "1 clip per call"))

    from transformers import VideoMAEConfig, VideoMAEModel

    from medsora.metrics.videomae import VideoMAEFeatures

    blocks = 2
    cfg = VideoMAEConfig(image_size=224, patch_size=14, num_frames=16, tubelet_size=2, hidden_size=1408,
                         num_hidden_layers=blocks, num_attention_heads=16, intermediate_size=6144)
    mae = VideoMAEFeatures(VideoMAEModel(cfg), dev)
    s = _time(lambda: mae(clip))
    rows.append(("CD-FVD", "VideoMAE-v2 ViT-g/14, 2048 tokens", [100 * x * 40 / blocks for x in s],
                 f"{blocks} of 40 blocks, ×{40 // blocks}"))

    from medsora.metrics.inception import InceptionFeatures, fid_inception_v3

    inc = InceptionFeatures(fid_inception_v3(), dev)
    frames = clip[0, :4]
    s = _time(lambda: inc(frames))
    rows.append(("FID + IS", "Inception-v3, 16 frames × 299²", [100 * x * 4 for x in s], "4 frames per call, ×4"))

    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from medsora.metrics.clip_fc import CLIPEmbeddings

    cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=224, patch_size=14, projection_dim=768)
    emb = CLIPEmbeddings(CLIPVisionModelWithProjection(cfg), dev)
    s = _time(lambda: emb(clip[0, :2]))
    rows.append(("FC", "CLIP ViT-L/14, 16 frames × 224²", [100 * x * 8 for x in s], "2 frames per call, ×8"))

    from medsora.data.video import write_video
    from medsora.evaluate import _Clips

    with tempfile.TemporaryDirectory() as d:
        paths = [write_video(Path(d) / f"v{i}.mp4", clip[0].numpy()) for i in range(4)]
        ds = _Clips([(p, list(range(16))) for p in paths], 128)
        s = _time(lambda: [ds[i] for i in range(4)])
    rows.append(("(reading)", "PyAV decode + crop/resize, 128 px mp4", [100 * x / 4 for x in s], "4 clips"))

    lines = [f"device: {dev} ({torch.get_num_threads()} threads)", "",
             "| metric | network | wall s / 100 videos | CPU s / 100 videos | measured on |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {n} | {t[0]:.0f} | {t[1]:.0f} | {how} |" for m, n, t, how in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
