"""The downstream test of Section 4.7 / Table 4: generated videos as unlabeled data for a video classifier.

    labels.py       labels CSVs (`path,label`) and the unlabeled folder, with one-line errors
    classifier.py   torchvision's VideoResNet (r3d_18, r2plus1d_18, ... or a tiny one), weights from a local file
    fixmatch.py     weak / strong clip augmentations and FixMatch's confidence-masked pseudo-label loss
    run.py          train (supervised-only / semi-supervised), evaluate, resume; the Table 4 comparison

`medsora downstream --train CSV --test CSV --unlabeled DIR --out DIR` runs it; docs/downstream.md explains it.
"""
from .run import DownstreamConfig, run_downstream

__all__ = ["DownstreamConfig", "run_downstream"]
