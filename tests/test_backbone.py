"""MedSora backbone: exact parameter counts, zero init, shared-projection spiral scans, joint-input isolation,
forward/backward shapes; the Latte-style baseline."""

import numpy as np
import pytest
import torch
from einops import rearrange
from torch import nn

from medsora.models.baseline import build_baseline
from medsora.models.blocks import SpatialMamba, per_clip, pos_embed_2d
from medsora.models.medsora import build_model
from medsora.models.spiral import inverse, spiral_order


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Undo the zero init (adaLN, final layer) so that every path carries signal."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.1)
    return model


# ---------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("name,total", [("S", 43_758_784), ("B", 86_466_304), ("L", 171_881_344)])
def test_exact_parameter_counts(name, total):
    with torch.device("meta"):
        model = build_model(name)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model) == total
    assert all(count(block) == 7_117_920 for block in model.blocks)
    assert count(model) - sum(count(b) for b in model.blocks) == 1_051_264
    block = model.blocks[0]
    assert count(block.spatial.mamba) == count(block.temporal.mamba) == 1_719_600   # one shared spatial Mamba-2
    assert count(block.attn) == 3 * 512 * 512 and model.pos_embed.shape == (1, 64, 512)
    assert not model.pos_embed.requires_grad


def test_pos_embed_matches_dit_numpy():
    """DiT's get_2d_sincos_pos_embed (numpy, square grids), re-derived here."""
    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    dim, g = 64, 6
    grid = np.meshgrid(np.arange(g, dtype=np.float32), np.arange(g, dtype=np.float32))   # w goes first
    expected = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    torch.testing.assert_close(pos_embed_2d(dim, (g, g))[0], torch.from_numpy(expected).float())
    # non-square: column in the first half, row in the second
    pe = pos_embed_2d(dim, (3, 5))[0].view(3, 5, dim)
    assert torch.equal(pe[0, :, :32], pe[2, :, :32]) and torch.equal(pe[:, 1, 32:], pe[:, 4, 32:])


# ---------------------------------------------------------------------------------------------- init


def test_zero_init_blocks_are_identity_and_output_is_zero():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    x = torch.randn(2, 5, 4, 8, 8)
    t = torch.tensor([1, 900])
    h = torch.randn(2, 5, 16, 64)
    c = torch.randn(2, 64)
    for block in model.blocks:
        out, feature = block(h, c, 3, (4, 4))
        assert torch.equal(out, h) and torch.equal(feature, h)
    assert torch.equal(model(x, t, num_video_frames=3), torch.zeros(2, 5, 8, 8, 8))
    # not trivially zero once the zero-initialised layers are randomised
    randomize(model)
    assert model(x, t, num_video_frames=3).abs().amin() > 0


def never_moved(model: nn.Module, steps: int = 4, frames: int = 5, fv: int = 3, seed: int = 0) -> list[str]:
    """Names of the trainable tensors that `steps` AdamW steps on the diffusion loss (MSE + VB, random clips with
    video frames and joint images) leave bit-for-bit unchanged, from the model's own initialisation."""
    from medsora.diffusion import GaussianDiffusion

    torch.manual_seed(seed)
    cfg = model.cfg
    diffusion = GaussianDiffusion(1000, 1e-4, 0.02, learn_sigma=cfg.learn_sigma, channel_dim=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)   # decay alone would move every tensor
    x0 = torch.randn(2, frames, cfg.in_channels, *cfg.input_size)
    for _ in range(steps):
        t = torch.randint(0, 1000, (2,))
        loss = diffusion.training_losses(lambda x, ts: model(x, ts, num_video_frames=fv), x0, t)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p.detach(), before[n])]


@pytest.mark.parametrize("name,overrides", [("tiny", {}), ("S", {"depth": 2, "input_size": (4, 4)})])
def test_every_parameter_learns_from_the_initialisation(name, overrides):
    """No dead branch: a zero q/k/v (the old init) left every block's attention and its LayerNorm unchanged."""
    model = build_model(name, **overrides)
    dead = never_moved(model)
    assert not dead, f"{len(dead)} trainable tensors never moved: {dead}"


def test_no_dead_parameter_test_catches_zero_qkv():
    """The test above fails on the old initialisation (q, k, v zero as well as the adaLN gates)."""
    model = build_model("tiny")
    for block in model.blocks:
        for proj in (block.attn.to_q, block.attn.to_k, block.attn.to_v):
            nn.init.zeros_(proj.weight)
    dead = never_moved(model)
    assert {f"blocks.{i}.attn.to_{p}.weight" for i in range(len(model.blocks)) for p in "qkv"} <= set(dead)
    assert {f"blocks.{i}.norm1.weight" for i in range(len(model.blocks))} <= set(dead)


# ---------------------------------------------------------------------------------------------- spiral scans


def _four_full_calls(sm: SpatialMamba, x, fv, grid):
    """Reference: each of the 4 scans is a full Mamba-2 call on the gathered tokens, scattered back."""
    m = sm.mamba

    def axis(clip, plane):  # clip (n, f, h, w, d)
        n, f, h, w, _ = clip.shape
        pattern, rows, cols = ("n f h w d -> (n h) (f w) d", f, w) if plane == "w" else ("n f h w d -> (n w) (f h) d", f, h)
        seq = rearrange(clip, pattern)
        y = 0
        for reverse in (False, True):
            order = spiral_order(rows, cols, sm.pair, reverse=reverse)
            y = y + m(seq[:, order])[:, inverse(order)]
        back = "(n h) (f w) d -> n f h w d" if plane == "w" else "(n w) (f h) d -> n f h w d"
        return rearrange(y, back, n=n, f=f, h=h, w=w)

    x5 = rearrange(x, "b f (h w) d -> b f h w d", h=grid[0])
    clips = [x5[:, :fv]] + [x5[:, j:j + 1] for j in range(fv, x.shape[1])]   # the video, then each image alone
    y_w = torch.cat([axis(c, "w") for c in clips], dim=1)
    y_h = torch.cat([axis(c, "h") for c in clips], dim=1)
    y_w, y_h = (rearrange(y, "b f h w d -> b f (h w) d") for y in (y_w, y_h))
    return torch.sigmoid(sm.gate_w(y_w)) * y_w + torch.sigmoid(sm.gate_h(y_h)) * y_h


@pytest.mark.parametrize("pair,frames,fv,grid", [(0, 4, 4, (4, 4)), (5, 6, 4, (3, 5)), (3, 3, 1, (2, 6))])
def test_shared_projection_equals_four_full_mamba_calls(pair, frames, fv, grid):
    torch.manual_seed(pair)
    sm = randomize(SpatialMamba(32, pair=pair, d_state=8, headdim=8, chunk_size=8), seed=pair).double()
    x = torch.randn(2, frames, grid[0] * grid[1], 32, dtype=torch.float64)
    torch.testing.assert_close(sm(x, fv, grid), _four_full_calls(sm, x, fv, grid), rtol=1e-10, atol=1e-10)


def test_per_clip_splits_video_and_each_image():
    x = torch.arange(2 * 5, dtype=torch.float64).view(2, 5, 1)
    seen = []
    out = per_clip(lambda c: seen.append(c.shape) or c.cumsum(1), x, 3)    # cumsum over frames of a clip
    assert seen == [(2, 3, 1), (4, 1, 1)]
    expected = torch.cat([x[:, :3].cumsum(1), x[:, 3:]], dim=1)            # images: no running sum across them
    assert torch.equal(out, expected)


# ---------------------------------------------------------------------------------------------- joint input


def test_images_never_reach_the_video():
    torch.manual_seed(0)
    model = randomize(build_model("tiny")).eval()
    x = torch.randn(2, 6, 4, 8, 8)
    t = torch.tensor([5, 700])
    out, feats = model(x, t, num_video_frames=4, return_features=True)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 2, 4, 8, 8)                                  # new image latents
    out2, feats2 = model(x2, t, num_video_frames=4, return_features=True)
    assert torch.equal(out[:, :4], out2[:, :4])                            # exact
    assert all(torch.equal(a, b) for a, b in zip(feats, feats2))
    assert not torch.allclose(out[:, 4:], out2[:, 4:])                     # the images themselves did change
    # each image is its own clip: changing image 5 leaves image 4 unchanged
    x3 = x.clone()
    x3[:, 5] += 1.0
    assert torch.equal(model(x3, t, 4)[:, 4], out[:, 4])
    # and the video alone gives the same video output
    torch.testing.assert_close(model(x[:, :4], t), out[:, :4], rtol=1e-5, atol=1e-5)
    # while a changed video frame does travel to the other video frames (spiral planes, temporal Mamba)
    x4 = x.clone()
    x4[:, 0] += 1.0
    assert (model(x4, t, 4)[:, 1:4] - out[:, 1:4]).abs().amin(dim=(2, 3, 4)).gt(0).all()


# ---------------------------------------------------------------------------------------------- shapes, training


@pytest.mark.parametrize("frames,fv", [(1, 1), (4, 4), (6, 4)])
@pytest.mark.parametrize("size", [(16, 16), (32, 24)])
def test_forward_backward_shapes(frames, fv, size):
    torch.manual_seed(0)
    model = randomize(build_model("tiny", input_size=size)).train()
    x = torch.randn(1, frames, 4, *size)
    out, feats = model(x, torch.tensor([999]), num_video_frames=fv, return_features=True)
    assert out.shape == (1, frames, 8, *size)
    l = (size[0] // 2) * (size[1] // 2)
    assert len(feats) == 2 and all(f.shape == (1, fv, l, 64) for f in feats)
    (out.square().mean() + sum(f.mean() for f in feats)).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    for name in ("blocks.0.attn.to_q.weight", "blocks.1.spatial.mamba.A_log", "blocks.1.temporal.mamba.in_proj.weight",
                 "blocks.1.spatial.gate_h.weight", "final_layer.linear.weight"):
        assert grads[name].abs().sum() > 0, name


def test_tiny_trains_on_cpu():
    """A few AdamW steps of forward + backward from the zero init lower a denoising-style loss."""
    torch.manual_seed(0)
    model = build_model("tiny", learn_sigma=False, attn_dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randn(1, 3, 4, 8, 8)
    target = torch.randn_like(x)
    t = torch.tensor([10])
    losses = []
    for _ in range(5):
        loss = (model(x, t, num_video_frames=2) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.02


def test_recompute_gives_the_same_gradients_and_keeps_far_less(saved_bytes):
    """recompute (the S/B/L default) keeps only the Mamba projections and q/k/v for the backward; outputs and
    gradients are those of the plain backward (attention dropout on: the recomputation redraws the same mask)."""
    grads, saved = {}, {}
    for recompute in (True, False):
        torch.manual_seed(0)
        model = randomize(build_model("tiny", recompute=recompute, input_size=(16, 24))).double().train()
        x = torch.randn(2, 6, 4, 16, 24, dtype=torch.float64)
        torch.manual_seed(1)
        (out, feats), saved[recompute] = saved_bytes(
            lambda: model(x, torch.tensor([3, 700]), num_video_frames=4, return_features=True), model)
        (out.square().mean() + sum(f.mean() for f in feats)).backward()
        grads[recompute] = (out.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(grads[True][0], grads[False][0], atol=1e-12, rtol=0)
    for name, g in grads[False][1].items():
        torch.testing.assert_close(grads[True][1][name], g, atol=1e-10, rtol=1e-8, msg=name)
    assert saved[True] < 0.45 * saved[False], (saved[True], saved[False])


def test_bad_num_video_frames():
    with pytest.raises(ValueError, match="num_video_frames"):
        build_model("tiny")(torch.randn(1, 2, 4, 8, 8), torch.tensor([1]), num_video_frames=3)


# ---------------------------------------------------------------------------------------------- baseline


def test_baseline_size_and_isolation():
    d = 768
    per_block = (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d) + (6 * d * d + 6 * d)
    fixed = (4 * 4 * d + d) + 64 * d + (256 * d + d + d * d + d) + (2 * d * d + 2 * d) + (d * 32 + 32)
    with torch.device("meta"):
        endora = build_baseline("B")
    assert sum(p.numel() for p in endora.parameters()) == 12 * per_block + fixed

    torch.manual_seed(0)
    model = randomize(build_baseline("B", depth=2, hidden_size=32, num_heads=2)).eval()
    x = torch.randn(1, 6, 4, 8, 8)
    t = torch.tensor([3])
    out = model(x, t, num_video_frames=4)
    assert out.shape == (1, 6, 8, 8, 8)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 4, 8, 8)
    assert torch.equal(model(x2, t, 4)[:, :4], out[:, :4])


def test_summary_table():
    from medsora.config import model_preset
    from medsora.models.summary import parameter_table, summary_table
    with torch.device("meta"):
        model = build_model("B")
    rows = {label: (per_block, total) for label, per_block, total in parameter_table(model)}
    assert sum(total for _, total in rows.values()) == 86_466_304
    assert rows["blocks: adaLN modulation"] == (512 * 9 * 512 + 9 * 512, 12 * (512 * 9 * 512 + 9 * 512))
    assert rows["blocks: spatial Mamba-2 (4 spiral scans)"][0] == 1_719_600
    assert rows["blocks: spatial gated fusion (Eq. 9)"][0] == 2 * (512 * 512 + 512)
    assert rows["blocks: LayerNorms (3)"][0] == 3 * 1024
    assert rows["final layer (adaLN + linear)"][1] == 512 * 1024 + 1024 + 512 * 128 + 128
    assert "86,466,304" in summary_table("B") and "43,758,784" in summary_table(model_preset("S"))
