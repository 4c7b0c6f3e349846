"""Frame strips (PNG) of a demo folder: real, real through the VAE, generated; 8 frames per clip, 2 clips each.

    python tools/frame_strips.py runs/demo docs/images/demo_after.png [--clips 2] [--scale 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medsora.report import load_videos  # noqa: E402


def strip(clip: np.ndarray, frames: int = 8) -> np.ndarray:
    idx = np.linspace(0, len(clip) - 1, frames).round().astype(int)
    return np.concatenate([clip[i] for i in idx], axis=1)


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo")
    ap.add_argument("out")
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--scale", type=int, default=1)
    args = ap.parse_args()
    demo = Path(args.demo)
    fake = load_videos(demo / "samples", args.clips)
    sets = [("real", load_videos(demo / "data", args.clips, fake[0].shape[0], 2, fake[0].shape[1])),
            ("real through the VAE", load_videos(demo / "reconstructions", args.clips)), ("generated", fake)]
    rows = []
    for name, vids in sets:
        for k, v in enumerate(vids):
            row = strip(v)
            label = np.zeros((row.shape[0], 130, 3), np.uint8)
            cv2.putText(label, f"{name} {k}"[:22], (4, row.shape[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                        (255, 255, 255), 1)
            rows.append(np.concatenate([label, row], axis=1))
    img = np.concatenate(rows, axis=0)
    img = cv2.resize(img, (img.shape[1] * args.scale, img.shape[0] * args.scale), interpolation=cv2.INTER_NEAREST)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, img[..., ::-1])
    print(args.out)


if __name__ == "__main__":
    main()
