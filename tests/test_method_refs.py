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
