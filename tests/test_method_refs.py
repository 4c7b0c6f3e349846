"""Parts of the method against independent references (issue "tests that catch a wrong model"): each test here
fails on a deliberate bug that the shape and loss tests let through."""
import pytest
import torch
from torch import nn

from medsora.config import model_preset
from medsora.models.blocks import TemporalMamba
from medsora.train import update_ema


def test_ema_is_the_hand_computed_average():
    """ema <- decay * ema + (1 - decay) * model, buffers copied (a `lerp_(p, decay)` bug makes the EMA the model)."""
    torch.manual_seed(0)
    model, ema = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        for p in (*model.parameters(), *ema.parameters()):
            p.normal_()
        model.running_mean.normal_()
    e0 = [p.detach().clone() for p in ema.parameters()]
    m = [p.detach().clone() for p in model.parameters()]
    update_ema(ema, model, decay=0.9)
    for got, a, b in zip(ema.parameters(), e0, m):
        assert torch.allclose(got, 0.9 * a + 0.1 * b, atol=1e-7)
    assert torch.equal(ema.running_mean, model.running_mean)
    for _ in range(20):                                   # repeated: converges geometrically to the model
        update_ema(ema, model, decay=0.9)
    for got, a, b in zip(ema.parameters(), e0, m):
        assert torch.allclose(got, b + 0.9 ** 21 * (a - b), atol=1e-6)


def _temporal():
    cfg = model_preset("tiny")
    torch.manual_seed(0)
    tm = TemporalMamba(cfg.hidden_size, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                       headdim=cfg.headdim, ngroups=cfg.ngroups, chunk_size=cfg.chunk_size).eval()
    with torch.no_grad():                                  # an informative, non-trivial mixer
        for p in tm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return tm


def test_temporal_mamba_scans_each_token_across_frames():
    """Against a naive loop: token j of each clip is one sequence over the frames, scanned on its own (a scan over
    the tokens of a frame instead changes the output); images are 1-frame sequences of their own."""
    tm = _temporal()
    b, f_v, n_img, l, d = 2, 5, 2, 6, model_preset("tiny").hidden_size
    x = torch.randn(b, f_v + n_img, l, d)
    with torch.no_grad():
        y = tm(x, num_video_frames=f_v)
        want = torch.empty_like(y)
        for i in range(b):
            for j in range(l):
                want[i, :f_v, j] = tm.mamba(x[i, :f_v, j][None])[0]            # (f_v, d) over frames
                for k in range(f_v, f_v + n_img):
                    want[i, k, j] = tm.mamba(x[i, k:k + 1, j][None])[0, 0]    # an image alone
    assert torch.allclose(y, want, atol=1e-5), (y - want).abs().max()


def test_temporal_mamba_is_causal_in_the_frame_axis():
    tm = _temporal()
    x = torch.randn(1, 6, 4, 64)
    x2 = x.clone()
    x2[:, 3] += 1.0                                                            # change frame 3 only
    with torch.no_grad():
        y, y2 = tm(x, 6), tm(x2, 6)
    assert torch.equal(y[:, :3], y2[:, :3])                                    # earlier frames untouched
    assert (y[:, 3:] - y2[:, 3:]).abs().amax() > 1e-3


def test_block_with_random_adaln_is_the_papers_residual_sequence():
    """With random adaLN (at zero init every gate is 0 and the wiring is invisible), one block is: x + g_a·attn(mod
    (LN1 x)) per frame, then + g_s·spatial(mod(LN2 ·)) — the alignment feature —, then + g_t·temporal(mod(LN3 ·)),
    each sub-layer with its own (shift, scale, gate). Swapping any two gates, or taking the feature elsewhere, fails."""
    from medsora.models.blocks import MedSoraBlock

    cfg = model_preset("tiny")
    torch.manual_seed(0)
    block = MedSoraBlock(cfg, index=1).eval()
    with torch.no_grad():
        block.adaLN_modulation[1].weight.normal_(0, 0.3)
        block.adaLN_modulation[1].bias.normal_(0, 0.3)
    b, f_v, l, d, grid = 2, 3, 16, cfg.hidden_size, (4, 4)
    x, c = torch.randn(b, f_v + 1, l, d), torch.randn(b, d)
    with torch.no_grad():
        y, feature = block(x, c, f_v, grid)
        m = torch.nn.functional.silu(c) @ block.adaLN_modulation[1].weight.T + block.adaLN_modulation[1].bias
        (sh_a, sc_a, g_a, sh_s, sc_s, g_s, sh_t, sc_t, g_t) = (v[:, None, None] for v in m.split(d, dim=1))
        mod = lambda h, sh, sc: h * (1 + sc) + sh  # noqa: E731
        h = mod(block.norm1(x), sh_a, sc_a)
        attn = torch.stack([block.attn(h[:, k]) for k in range(f_v + 1)], dim=1)   # each frame on its own
        x1 = x + g_a * attn
        x2 = x1 + g_s * block.spatial(mod(block.norm2(x1), sh_s, sc_s), f_v, grid)
        x3 = x2 + g_t * block.temporal(mod(block.norm3(x2), sh_t, sc_t), f_v)
    assert torch.allclose(feature, x2, atol=1e-5) and torch.allclose(y, x3, atol=1e-5)
    assert not torch.allclose(g_s, g_t, atol=1e-2)                                    # the gates do differ


def test_eq9_fusion_on_fixed_numbers(monkeypatch):
    """Eq. 9: y = sigma(W1 y_w + b1) * y_w + sigma(W2 y_h + b2) * y_h, with the two axis outputs and the gates fixed
    to numbers whose result is known by hand (sigma(ln 3) = 0.75, sigma(0) = 0.5, sigma(2 ln 2 - ln 2) = 2/3)."""
    import math

    from medsora.models.blocks import SpatialMamba

    cfg = model_preset("tiny")
    sm = SpatialMamba(cfg.hidden_size, pair=0, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                      headdim=cfg.headdim, ngroups=cfg.ngroups, chunk_size=cfg.chunk_size)
    d = cfg.hidden_size
    y_w, y_h = torch.full((1, 1, 4, d), 2.0), torch.full((1, 1, 4, d), -1.0)
    y_h[..., 1] = math.log(2)
    outputs = iter([y_w, y_h])
    monkeypatch.setattr(sm, "_axis", lambda scan, z, f: next(outputs))    # the width axis first, then the height
    sm.mamba.out_proj = nn.Identity()
    with torch.no_grad():
        sm.gate_w.weight.zero_()
        sm.gate_w.bias.fill_(math.log(3))                  # sigma = 0.75 on the width output
        sm.gate_h.weight.copy_(torch.eye(d))                # sigma(y_h) on the height output
        sm.gate_h.bias.zero_()
        out = sm(torch.zeros(1, 1, 4, d), 1, (2, 2))
    assert torch.allclose(out[..., 0], torch.tensor(0.75 * 2.0 + (1 / (1 + math.e)) * -1.0), atol=1e-6)
    assert torch.allclose(out[..., 1], torch.tensor(0.75 * 2.0 + (2 / 3) * math.log(2)), atol=1e-6)


def test_i3d_input_is_224_frames_in_minus_one_to_one():
    """FVD's I3D (a state dict, not the TorchScript) sees (b, 3, 16, 224, 224) in [-1, 1]: checked by a hook on the
    network's input (feeding [0, 1] instead changed the features by 17 % and no other test saw it)."""
    from medsora.metrics.fvd import I3DFeatures
    from medsora.metrics.i3d import InceptionI3d

    class Seen(Exception):
        pass

    seen = {}
    net = InceptionI3d()

    def hook(module, args):
        seen["x"] = args[0]
        raise Seen                                            # the input is all we need

    net.register_forward_pre_hook(hook)
    ramp = torch.linspace(0, 255, 64 * 48).round().to(torch.uint8).reshape(1, 1, 64, 48, 1)
    videos = ramp.expand(2, 16, 64, 48, 3).contiguous()        # every grey level 0..255, not square, not 224
    try:
        I3DFeatures(net)(videos)
    except Seen:
        pass
    x = seen["x"]
    assert x.shape == (2, 3, 16, 224, 224)
    assert x.min().item() == pytest.approx(-1.0, abs=0.02) and x.max().item() == pytest.approx(1.0, abs=0.02)


def test_alignment_features_are_the_video_frames_only():
    """L_align compares the spatial output of the video frames with their flow targets (f_v each): the features the
    model returns are those of the video frames, the same with or without joint images appended (images never
    reach the video), and never an image's (a `feature[:, -f_v:]` slip takes the images when they are there)."""
    from medsora.models.medsora import build_model

    torch.manual_seed(0)
    net = build_model("tiny").eval()
    with torch.no_grad():
        for p in net.parameters():                          # leave the zero init: gates open, features informative
            p.add_(0.05 * torch.randn_like(p))
    cfg = net.cfg
    f_v, n_img = 3, 2
    x = torch.randn(2, f_v + n_img, cfg.in_channels, *cfg.input_size)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        _, feats = net(x, t, num_video_frames=f_v, return_features=True)
        _, alone = net(x[:, :f_v], t, num_video_frames=f_v, return_features=True)
    assert len(feats) == cfg.depth
    for f, a in zip(feats, alone):
        assert f.shape == (2, f_v, cfg.input_size[0] * cfg.input_size[1] // cfg.patch_size ** 2, cfg.hidden_size)
        assert torch.allclose(f, a, atol=1e-5), (f - a).abs().max()
