"""FixMatch (Sohn et al. 2020) for video clips: weak / strong augmentations and the masked pseudo-label loss.

    weak = weak_augment()           flips, rotation, translate up to 12.5 % (FixMatch's weak: flip + translate)
    strong = strong_augment()       weak + RandAugment(2 ops, magnitude 10) + random erasing (Cutout)
    loss_u, mask = fixmatch_loss(logits_weak, logits_strong, threshold=0.95)

The pseudo-label of an unlabeled clip is the class the model gives its weakly augmented view, kept only where
that probability reaches `threshold`; the loss is the cross-entropy of the strongly augmented view's logits to
it, averaged over *all* unlabeled clips (masked ones count as zero, as in FixMatch), so when no clip is
confident the unlabeled loss and its gradient are exactly zero. Augmentations are torchvision's `transforms.v2`
on uint8 (T, C, H, W) clips: one draw of parameters per clip, the same for all its frames (a clip stays a
coherent video). They draw from torch's global generator, which the training loop seeds per epoch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


def weak_augment() -> v2.Transform:
    """Random flips, a rotation and a translation of up to 1/8 of the frame (FixMatch's weak view: flip and
    translate; an endoscope's view has no up, so vertical flips and rotations are weak changes here)."""
    return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
                       v2.RandomAffine(degrees=180, translate=(0.125, 0.125))])


def strong_augment(num_ops: int = 2, magnitude: int = 10) -> v2.Transform:
    """The weak view, then RandAugment and random erasing of one patch (FixMatch's RandAugment + Cutout)."""
    return v2.Compose([weak_augment(), v2.RandAugment(num_ops=num_ops, magnitude=magnitude),
                       v2.RandomErasing(p=1.0, scale=(0.02, 0.15), value=127)])


def augment_batch(clips: torch.Tensor, transform: v2.Transform) -> torch.Tensor:
    """uint8 (B, T, C, H, W) -> uint8 (B, T, C, H, W), each clip augmented with its own draw."""
    return torch.stack([transform(clip) for clip in clips])


def fixmatch_loss(logits_weak: torch.Tensor, logits_strong: torch.Tensor,
                  threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unlabeled loss and mask: CE(strong, argmax p_weak) where max p_weak >= threshold, mean over all clips.

    logits_*: (U, K). The weak view only gives targets (no gradient flows through it). Returns (scalar, (U,) float).
    """
    with torch.no_grad():
        probs = logits_weak.detach().float().softmax(dim=1)
        confidence, pseudo = probs.max(dim=1)
        mask = (confidence >= threshold).float()
    if logits_strong.shape[0] == 0:
        return logits_strong.sum() * 0.0, mask
    per_clip = F.cross_entropy(logits_strong, pseudo, reduction="none")
    return (per_clip * mask).mean(), mask
