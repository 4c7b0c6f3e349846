"""Parts of the method against independent references (issue "tests that catch a wrong model"): each test here
fails on a deliberate bug that the shape and loss tests let through."""
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
