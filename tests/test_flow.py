"""Flow estimators, flow images, DINO features and alignment targets (medsora.flow)."""
from __future__ import annotations

import colorsys
import math
import os

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from torchvision.utils import flow_to_image

from medsora.cache import CacheError, flow_targets_from_config
from medsora.config import ConfigError, load_config
from medsora.flow.dino import dino_features, load_dino
from medsora.flow.flow import FarnebackFlow, RAFTFlow, build_flow
from medsora.flow.flow_image import flow_to_rgb
from medsora.flow.targets import Sampling, clip_targets, flip_flow, flow_targets

TINY_VIT = dict(depth=3, embed_dim=48, num_heads=2)     # same timm class and code path as ViT-S/8, small


# ----------------------------------------------------------------------------------------------
# synthetic clips with a known flow (OpenCV warps, independent of the code under test)

def _texture(size: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.standard_normal((size, size, 3)).astype(np.float32), (0, 0), 2.0)
    return (x - x.min()) / (x.max() - x.min())


def _pair(affine: np.ndarray, size: int = 128, pad: int = 16):
    """Frames (2, 3, size, size) in [-1, 1] where frame 1 is frame 0 moved by `affine` (2x3, in the padded
    texture's pixel coordinates), and the true flow (2, size, size): where each pixel of frame 0 goes."""
    tex = _texture(size + 2 * pad)
    moved = cv2.warpAffine(tex, affine.astype(np.float32), tex.shape[1::-1], flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    crop = lambda a: torch.from_numpy(a[pad:pad + size, pad:pad + size]).permute(2, 0, 1) * 2 - 1
    ys, xs = np.mgrid[pad:pad + size, pad:pad + size].astype(np.float64)
    u = affine[0, 0] * xs + affine[0, 1] * ys + affine[0, 2] - xs
    v = affine[1, 0] * xs + affine[1, 1] * ys + affine[1, 2] - ys
    return torch.stack([crop(tex), crop(moved)]), torch.from_numpy(np.stack([u, v])).float()


SHIFT = np.array([[1, 0, 3.0], [0, 1, -2.0]])                        # 3 px right, 2 px up
ROTATION = cv2.getRotationMatrix2D((79.5, 79.5), 3.0, 1.0)            # 3° about the crop's centre, up to 3.4 px


def _epe(flow: torch.Tensor, true: torch.Tensor, border: int = 16) -> float:
    """Mean end-point error in the interior."""
    return float((flow - true).norm(dim=0)[border:-border, border:-border].mean())


# ----------------------------------------------------------------------------------------------
# flow_to_rgb

def _uniform(u: float, v: float, size: int = 4) -> torch.Tensor:
    return torch.tensor([u, v]).view(2, 1, 1).expand(2, size, size).clone()


@pytest.mark.parametrize("uv, rgb", [
    ((1.0, 0.0), (1.0, 0.0, 0.0)),      # right: hue 0°, red
    ((-2.0, 0.0), (0.0, 1.0, 1.0)),     # left: hue 180°, cyan
    ((0.0, 0.5), (0.5, 1.0, 0.0)),      # down (v > 0): hue 90°, chartreuse
    ((0.0, -3.0), (0.5, 0.0, 1.0)),     # up: hue 270°, violet
    ((1.0, 1.0), (1.0, 0.75, 0.0)),     # right-down diagonal: hue 45°, orange
])
def test_flow_to_rgb_known_directions(uv, rgb):
    out = flow_to_rgb(_uniform(*uv))
    assert out.shape == (3, 4, 4)
    assert torch.allclose(out, torch.tensor(rgb).view(3, 1, 1).expand_as(out), atol=1e-5)


def test_flow_to_rgb_zero_is_black_and_magnitudes_scale_value():
    flow = torch.zeros(2, 2, 4, 4)               # frame 0: zero flow; frame 1: mixed magnitudes to the right
    flow[1, 0] = 1.0
    flow[1, 0, 0, 0] = 4.0
    out = flow_to_rgb(flow)
    assert out.shape == (2, 3, 4, 4) and torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros(3, 4, 4))
    assert torch.allclose(out[1, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))                     # V = 4/4
    assert torch.allclose(out[1, :, 1, 1], torch.tensor([0.25, 0.0, 0.0]))                    # V = 1/4
    # per-frame normalisation: scaling one frame's flow leaves its image unchanged
    assert torch.allclose(flow_to_rgb(flow * torch.tensor([1.0, 10.0]).view(2, 1, 1, 1)), out, atol=1e-6)


def test_flow_to_rgb_matches_colorsys_on_random_flow():
    torch.manual_seed(0)
    flow = torch.randn(3, 2, 2, 5, 6) * 3        # (..., 2, H, W) with two leading axes
    out = flow_to_rgb(flow)
    assert out.shape == (3, 2, 3, 5, 6)
    for idx in np.ndindex(3, 2):
        f = flow[idx].double()
        mag = f.norm(dim=0)
        for y in range(5):
            for x in range(6):
                hue = (math.degrees(math.atan2(f[1, y, x], f[0, y, x])) % 360) / 360
                want = colorsys.hsv_to_rgb(hue, 1.0, float(mag[y, x] / mag.max()))
                assert torch.allclose(out[idx][:, y, x].double(), torch.tensor(want, dtype=torch.double), atol=1e-5)


def test_flow_to_rgb_middlebury_option():
    torch.manual_seed(0)
    flow = torch.randn(2, 2, 8, 8)
    flow[1] = flow[0] * 10                    # same field, 10x faster
    out = flow_to_rgb(flow, colour="middlebury")
    for i in range(2):                            # torchvision's wheel, each frame normalised by its own max
        assert torch.allclose(out[i], flow_to_image(flow[i]).float() / 255)
    assert torch.allclose(out[0], out[1], atol=1 / 255)
    assert torch.equal(flow_to_rgb(torch.zeros(2, 3, 3), colour="middlebury"), torch.ones(3, 3, 3))   # white
    right = flow_to_rgb(_uniform(1.0, 0.0), colour="middlebury")[:, 0, 0]
    assert right[0] == right.max() and right[0] > 0.9                                          # right is red
    with pytest.raises(ValueError, match="colour"):
        flow_to_rgb(flow, colour="rainbow")


# ----------------------------------------------------------------------------------------------
# flow estimators

@pytest.mark.parametrize("affine", [SHIFT, ROTATION], ids=["shift", "rotation"])
def test_farneback_recovers_known_motion(affine):
    frames, true = _pair(affine)
    est = build_flow("farneback")
    flow = est(frames)
    assert est.name == "farneback" and flow.shape == (1, 2, 128, 128) and flow.dtype == torch.float32
    assert _epe(flow[0], true) < 0.5
    batched = est(torch.stack([frames, frames.flip(0)]))          # (B, F+1, ...): second clip plays it backwards
    assert batched.shape == (2, 1, 2, 128, 128)
    assert torch.equal(batched[0], flow)
    assert _epe(batched[1, 0], -true) < 1.0                        # backward flow ≈ minus forward (small motion)


def test_flip_rule_exact_and_against_the_flow_of_the_flipped_clip():
    flow = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    flipped = flip_flow(flow)
    for y in range(3):
        for x in range(4):
            assert flipped[0, y, x] == -flow[0, y, 3 - x] and flipped[1, y, x] == flow[1, y, 3 - x]
    assert torch.equal(flip_flow(flip_flow(flow)), flow)
    frames, _ = _pair(ROTATION)                                     # non-uniform flow: the mirroring matters
    est = FarnebackFlow()
    assert _epe(est(frames.flip(-1))[0], flip_flow(est(frames))[0]) < 0.5
    assert _epe(est(frames.flip(-1))[0], est(frames)[0]) > 1.0      # ...and is not the unflipped flow


def test_raft_random_weights_end_to_end_and_input_range(tmp_path):
    torch.manual_seed(0)
    frames, _ = _pair(SHIFT)                                         # RAFT needs >= 128 px (its 4-level pyramid)
    clip = torch.cat([frames, frames[1:]])                           # 3 frames -> 2 flows
    est = build_flow("raft_small", weights=None, num_flow_updates=1, batch_size=1)
    seen = []
    est.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    flow = est(clip)
    assert est.name == "raft_small" and flow.shape == (2, 2, 128, 128) and torch.isfinite(flow).all()
    # the weights' transforms map [0, 1] to [-1, 1]; the clip is already in [-1, 1], so RAFT sees it unchanged
    assert len(seen) == 2 and torch.allclose(seen[0], clip[:1], atol=1e-6)
    assert torch.allclose(est(clip[None])[0], flow, atol=1e-5)       # batched == unbatched
    # the loader: a torchvision-format state dict written here gives the same network
    path = tmp_path / "raft.pth"
    torch.save(est.model.state_dict(), path)
    again = RAFTFlow("raft_small", weights=path, num_flow_updates=1)
    assert torch.allclose(again(clip), flow, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="raft_small_C_T"):
        RAFTFlow("raft_small", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="divisible by 8"):
        est(clip[..., :124])


@pytest.mark.skipif(not os.environ.get("MEDSORA_RAFT_WEIGHTS"),
                    reason="set MEDSORA_RAFT_WEIGHTS to a torchvision raft_large .pth to check real flow")
@pytest.mark.parametrize("affine", [SHIFT, ROTATION], ids=["shift", "rotation"])
def test_raft_pretrained_recovers_known_motion(affine):
    frames, true = _pair(affine)
    est = RAFTFlow("raft_large", weights=os.environ["MEDSORA_RAFT_WEIGHTS"])
    assert _epe(est(frames)[0], true) < 0.5


# ----------------------------------------------------------------------------------------------
# DINO

def _state_dict_224(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    sd = load_dino(None, img_size=224, **TINY_VIT).state_dict()
    return {k: v + 0.01 * torch.randn_like(v) for k, v in sd.items()}    # not the init of the next model


def test_dino_loader_formats_and_position_embedding(tmp_path):
    sd = _state_dict_224()
    torch.save(sd, tmp_path / "timm.pth")
    save_file(sd, str(tmp_path / "model.safetensors"))
    # the original DINO training checkpoint layout: teacher backbone under "backbone.", plus a projection head
    torch.save({"teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, "head.mlp.0.weight": torch.zeros(2, 48)}},
               tmp_path / "checkpoint.pth")
    models = [load_dino(tmp_path / name, img_size=64, **TINY_VIT)
              for name in ("timm.pth", "model.safetensors", "checkpoint.pth")]
    want = resample_abs_pos_embed(sd["pos_embed"], new_size=(8, 8), num_prefix_tokens=1)   # 28x28 -> 8x8 grid
    for m in models:
        assert m.pos_embed.shape == (1, 65, 48) and torch.allclose(m.pos_embed, want)
        assert torch.equal(m.blocks[2].mlp.fc2.weight, sd["blocks.2.mlp.fc2.weight"])
        assert not any(p.requires_grad for p in m.parameters()) and not m.training
    with pytest.raises(FileNotFoundError, match="dino_deitsmall8_pretrain.pth"):
        load_dino(tmp_path / "nothing.pth", img_size=64, **TINY_VIT)


def test_dino_features_match_a_manual_forward(tmp_path):
    torch.save(_state_dict_224(), tmp_path / "dino.pth")
    model = load_dino(tmp_path / "dino.pth", img_size=64, **TINY_VIT)
    torch.manual_seed(0)
    images = torch.rand(5, 3, 64, 64)
    feats = dino_features(model, images, layers=(2, 0, 2), batch_size=2)
    assert sorted(feats) == [0, 2] and feats[0].shape == (5, 64, 48)
    # by hand: ImageNet normalisation, patch embed + CLS + position, blocks, final norm, drop CLS, plain LayerNorm
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        x = model.patch_embed((images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
        x = torch.cat([model.cls_token.expand(5, -1, -1), x], 1) + model.pos_embed
        for i, block in enumerate(model.blocks):
            x = block(x)
            if i in feats:
                h = model.norm(x)[:, 1:]
                h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
                assert torch.allclose(feats[i], h, atol=1e-4)
    with pytest.raises(ValueError, match="layers"):
        dino_features(model, images, layers=(3,))


# ----------------------------------------------------------------------------------------------
# Sampling() and targets

def test_sampling_frames_are_block_means_and_has_no_parameters():
    torch.manual_seed(0)
    s = Sampling(flow_frames=16, latent_frames=4, size=(256, 384))    # identity resize: isolates the 1x1 conv
    assert list(s.parameters()) == [] and s.state_dict() == {}
    h = torch.randn(2, 16, 256, 384)
    out = s(h)
    for j in range(4):
        assert torch.allclose(out[:, j], sum(h[:, 4 * j + k] for k in range(4)) / 4, atol=1e-5)
    assert not torch.allclose(out[:, 0], out[:, 1])                   # the authors' 1/16 weights would make them equal
    with pytest.raises(ValueError, match="multiple"):
        Sampling(flow_frames=16, latent_frames=7, size=(64, 512))


def test_sampling_of_a_4k_plus_1_clip_follows_the_causal_vae():
    """17 frames -> 5 latent frames: the first encodes frame 0 alone, each later one 4 frames (and their flows)."""
    s = Sampling(flow_frames=17, latent_frames=5, size=(256, 384))
    h = torch.randn(1, 17, 256, 384)
    out = s(h)
    torch.testing.assert_close(out[:, 0], h[:, 0], atol=1e-5, rtol=0)
    for j in range(1, 5):
        torch.testing.assert_close(out[:, j], h[:, 4 * j - 3:4 * j + 1].mean(1), atol=1e-5, rtol=0)


def test_sampling_bilinear_resize_closed_form():
    # bilinear (align_corners=False) reproduces a function linear in (token, channel), up to edge clamping:
    # output (k, c) reads input at (4k + 1.5, clamp(0.75 (c + 0.5) - 0.5, 0, 383))
    n, c = torch.meshgrid(torch.arange(256.0), torch.arange(384.0), indexing="ij")
    h = (0.3 * n - 0.02 * c + 1.0).expand(16, 256, 384)
    out = Sampling(16, 4, size=(64, 512))(h)
    assert out.shape == (4, 64, 512)
    k, d = torch.meshgrid(torch.arange(64.0), torch.arange(512.0), indexing="ij")
    want = 0.3 * (4 * k + 1.5) - 0.02 * (0.75 * (d + 0.5) - 0.5).clamp(0, 383) + 1.0
    assert torch.allclose(out, want.expand(4, 64, 512), atol=1e-3)


def test_sampling_grid_option_keeps_tokens_in_place():
    rows = torch.arange(16.0).repeat_interleave(16)                   # token n of a 16x16 raster: its row
    h = rows.view(1, 256, 1).expand(4, 256, 8)
    out = Sampling(4, 2, size=(64, 8), grid=True)(h)                  # 16x16 -> 8x8 grid
    want = (2 * torch.arange(8.0) + 0.5).repeat_interleave(8)        # latent row r reads source row 2r + 0.5
    assert torch.allclose(out, want.view(1, 64, 1).expand(2, 64, 8), atol=1e-5)


def test_clip_targets_shapes_flip_and_batch(tmp_path):
    torch.save(_state_dict_224(), tmp_path / "dino.pth")
    dino = load_dino(tmp_path / "dino.pth", img_size=64, **TINY_VIT)
    frames, _ = _pair(ROTATION, size=64, pad=8)
    clip = torch.cat([frames, frames, frames[:1]])                    # 5 frames, rotating back and forth -> 4 flows
    est, s = FarnebackFlow(), Sampling(4, 2, size=(16, 32))
    layers = (0, 2, 2)
    plain, flipped = clip_targets(clip, est, dino, layers, s)
    assert sorted(plain) == [0, 2] and plain[0].shape == (2, 16, 32) and torch.isfinite(plain[2]).all()
    flow = est(clip)
    # by hand: flow image -> DINO -> Sampling, and the flipped clip through the flip rule
    feats = dino_features(dino, flow_to_rgb(flow), layers)
    flip_feats = dino_features(dino, flow_to_rgb(flip_flow(flow)), layers)
    for i in (0, 2):
        assert torch.allclose(plain[i], s(feats[i]), atol=1e-5)
        assert torch.allclose(flipped[i], s(flip_feats[i]), atol=1e-5)
    assert not torch.allclose(plain[0], flipped[0], atol=1e-3)
    batched = flow_targets(torch.stack([flow, flow.flip(0)]), dino, layers, s)
    assert batched[2].shape == (2, 2, 16, 32)
    assert torch.allclose(batched[2][0], plain[2], atol=1e-5)
    assert torch.allclose(batched[2][1], flow_targets(flow.flip(0), dino, layers, s)[2], atol=1e-5)


def test_dino_weights_of_another_network_are_refused_by_name(tmp_path):
    import timm
    from safetensors.torch import save_file

    from medsora.flow.dino import load_dino

    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    save_file(other.state_dict(), str(tmp_path / "not_dino.safetensors"))
    with pytest.raises(ValueError, match=r"not_dino\.safetensors does not hold vit_small_patch8_224\.dino"):
        load_dino(tmp_path / "not_dino.safetensors", img_size=64)


# ----------------------------------------------------------------------------------------------
# the flow section of the config reaches the estimator and Sampling()

@pytest.fixture
def small_dino(monkeypatch):
    """flow_targets_from_config loads this small random ViT (timm's ViT-S/8 class) instead of a weights file."""
    torch.manual_seed(0)
    dino = load_dino(None, img_size=64, **TINY_VIT)
    monkeypatch.setattr("medsora.flow.dino.load_dino", lambda weights, img_size: dino)
    return dino


def _targets_cfg(*overrides):
    return load_config("tiny", overrides=["flow.dino_weights=unused.pth", *overrides])


def test_raft_iters_reach_the_estimator_and_the_cache_description(tmp_path, monkeypatch, small_dino):
    import medsora.flow.flow as flow_module

    torch.manual_seed(0)
    torch.save(RAFTFlow("raft_large", weights=None).model.state_dict(), tmp_path / "raft.pth")
    built, real = [], flow_module.build_flow
    monkeypatch.setattr(flow_module, "build_flow", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    raft = f"flow.raft_weights={tmp_path / 'raft.pth'}"
    default = flow_targets_from_config(_targets_cfg(raft))
    assert built[-1].num_flow_updates == 20 and "iters:20" in default.description     # the authors' iters=20
    three = flow_targets_from_config(_targets_cfg(raft, "flow.raft_iters=3"))
    est, calls = built[-1], []
    est.model.register_forward_hook(lambda m, args, kwargs, out: calls.append((kwargs, len(out))), with_kwargs=True)
    frames, _ = _pair(SHIFT)
    est(frames)
    assert calls == [({"num_flow_updates": 3}, 3)]                  # torchvision's RAFT ran 3 refinements
    assert three.description != default.description and "iters:3" in three.description
    # Farnebäck has no iterations to record: its description ignores flow.raft_iters
    farneback = [flow_targets_from_config(_targets_cfg("flow.method=farneback", f"flow.raft_iters={n}")).description
                 for n in (3, 20)]
    assert farneback[0] == farneback[1] and "iters" not in farneback[0]
    for bad in (0, -2):
        with pytest.raises(ConfigError, match=r"flow\.raft_iters"):
            _targets_cfg(f"flow.raft_iters={bad}")
    with pytest.raises(ValueError, match="num_flow_updates"):
        RAFTFlow("raft_small", weights=None, num_flow_updates=0)


def test_a_cache_of_other_raft_iters_is_refused(tmp_path, monkeypatch, small_dino):
    from medsora.cache import FlowTargets, build_cache
    from medsora.data.synth import write_dataset
    from medsora.vae.autoencoder import VideoVAE

    write_dataset(tmp_path / "v", videos=1, seed=0, frames=6, size=64, fmt="mp4")           # one short clip
    monkeypatch.setattr("medsora.flow.flow.build_flow", lambda *a, **k: FarnebackFlow())   # no RAFT weights needed
    cfg = [f"data.root={tmp_path / 'v'}", "data.num_frames=4", "data.frame_stride=1", "data.num_images=0"]
    twenty, three = (flow_targets_from_config(_targets_cfg(*cfg, f"flow.raft_iters={n}")) for n in (20, 3))
    zeros = lambda clip: ({0: torch.zeros(1, 16, 64)},) * 2                                 # noqa: E731 (fast)
    vae = VideoVAE.tiny(seed=0).eval()
    build_cache(_targets_cfg(*cfg), vae, tmp_path / "c", flow=FlowTargets(zeros, (0,), twenty.description),
                progress=False)
    with pytest.raises(CacheError, match="iters:3"):
        build_cache(_targets_cfg(*cfg, "flow.raft_iters=3"), vae, tmp_path / "c", flow=three, progress=False)


def test_flow_resize_reaches_sampling(small_dino):
    frames, _ = _pair(ROTATION, size=64, pad=8)
    clip = torch.cat([frames] * 8 + [frames[:1]])                     # 17 frames, rotating back and forth
    tokens, grid = (flow_targets_from_config(_targets_cfg("flow.method=farneback", f"flow.resize={r}"))
                    for r in ("tokens", "grid"))
    (a, _), (b, b_flip) = tokens.fn(clip), grid.fn(clip)
    assert a[0].shape == b[0].shape == (4, 16, 64)                    # tiny preset: 4 latent frames, 4x4 tokens, d 64
    flow = FarnebackFlow()(clip)                                       # by hand: the same flow and DINO features
    feats = dino_features(small_dino, flow_to_rgb(flow), (0, 1))
    flip_feats = dino_features(small_dino, flow_to_rgb(flip_flow(flow)), (0, 1))
    raster, on_grid = Sampling(16, 4, (16, 64)), Sampling(16, 4, (16, 64), grid=True)
    for i in (0, 1):
        assert torch.allclose(a[i], raster(feats[i]), atol=1e-5)
        assert torch.allclose(b[i], on_grid(feats[i]), atol=1e-5)
        assert torch.allclose(b_flip[i], on_grid(flip_feats[i]), atol=1e-5)
        assert not torch.allclose(a[i], b[i], atol=1e-3)
    assert tokens.description != grid.description and "resize:grid" in grid.description
    with pytest.raises(ConfigError, match=r"flow\.resize"):
        _targets_cfg("flow.resize=bicubic")


# ----------------------------------------------------------------------------------------------
# weight-free flow-patch features (flow.features=patches): DINO's interface, not the paper's features

def test_flow_patch_features_are_blurred_patches_in_dino_layout():
    from medsora.flow.patch_features import FlowPatchFeatures

    torch.manual_seed(0)
    images = torch.rand(3, 3, 64, 48)
    model = FlowPatchFeatures()
    assert not list(model.parameters())                                 # nothing to load or train
    feats = dino_features(model, images, (0, 11, 4))                    # the path flow_targets takes
    assert sorted(feats) == [0, 4, 11] and all(f.shape == (3, 8 * 6, 192) for f in feats.values())
    # layer 0 by hand: token (r, c) = the 8x8 RGB patch at row r, column c, channel-major, LayerNorm-ed
    patch = images[1, :, 8 * 2:8 * 3, 8 * 5:8 * 6].reshape(-1)
    assert torch.allclose(feats[0][1, 2 * 6 + 5], (patch - patch.mean()) / (patch.var(unbiased=False) + 1e-5).sqrt(),
                          atol=1e-5)
    assert [model.blur(i) for i in (0, 2, 3, 6, 9, 11)] == [1, 1, 3, 7, 15, 15]   # context grows with depth
    assert not torch.allclose(feats[0], feats[11], atol=1e-2)
    flat = torch.full_like(images, 0.5)                                 # a blur of a constant patch changes nothing
    flat_feats = model(flat, (0, 11))
    assert torch.equal(flat_feats[0], flat_feats[11])
    with pytest.raises(ValueError, match="layers"):
        model(images, (12,))


def test_flow_features_config_picks_dino_or_patches_and_names_them():
    desc = lambda *o: flow_targets_from_config(load_config("tiny", overrides=["flow.method=farneback", *o])).description  # noqa: E731
    assert "|patches:v1|" in desc()                                     # tiny: auto, no DINO weights -> patches
    assert "|patches:v1|" in desc("flow.features=patches", "flow.dino_weights=x.pth")
    with pytest.raises(CacheError, match=r"DINO ViT-S/8 weights.*flow\.features=patches"):
        desc("flow.features=dino")
    b = load_config("B", overrides=["flow.method=farneback"])
    assert b.flow.features == "dino"                                    # the paper's presets never substitute
    with pytest.raises(CacheError, match="DINO ViT-S/8 weights"):
        flow_targets_from_config(b)
    with pytest.raises(ConfigError, match=r"flow\.features"):
        load_config("tiny", overrides=["flow.features=sift"])


def test_auto_with_dino_weights_uses_dino(small_dino):
    assert "|dino:unused.pth|" in flow_targets_from_config(_targets_cfg("flow.method=farneback")).description
