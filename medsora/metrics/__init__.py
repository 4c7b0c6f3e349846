"""Video and image generation metrics: FVD, CD-FVD, FID, IS, frame consistency.

One file per network or formula:
    frechet.py    Fréchet distance (float64, stable matrix square root) and streaming FeatureStats
    i3d.py        Inception-I3D (piergiaj layout) and its loader (state dict or TorchScript)
    fvd.py        FVD features, StyleGAN-V protocol
    videomae.py   CD-FVD features, VideoMAE via transformers (VideoMAE-v2 checkpoints converted)
    inception.py  FID / IS features, the FID Inception-v3, and the Inception Score
    clip_fc.py    frame consistency from CLIP image embeddings
    weights.py    where each network's weights are looked for; MissingWeights
The evaluation itself (clips, caching, report) is `medsora.evaluate`.
"""
from .frechet import FeatureStats, frechet_distance
from .weights import MissingWeights, find_weights

__all__ = ["FeatureStats", "frechet_distance", "MissingWeights", "find_weights"]
