"""Mamba-2 layer and chunked SSD scan against a naive sequential recurrence, transformers' Mamba2Mixer,
gradcheck, and mamba_ssm's kernels where CUDA is present."""
import math

import pytest
import torch
import torch.nn.functional as F

from medsora.models.mamba2 import Mamba2, kernels_available
from medsora.models.ssd import ssd_scan

TINY = dict(d_model=16, d_state=8, d_conv=4, expand=2, headdim=4)  # d_inner 32, 8 heads


def naive_layer(m, u):
    """Mamba-2 written token by token: in_proj, nn.Conv1d, SiLU, h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t,
    y_t = C_t h_t + D x_t, gated RMSNorm per group, out_proj."""
    bsz, seqlen, _ = u.shape
    H, P, N, G = m.nheads, m.headdim, m.d_state, m.ngroups
    zxbcdt = u @ m.in_proj.weight.T
    z, xbc, dt = zxbcdt.split([m.d_inner, m.d_inner + 2 * G * N, H], -1)
    xbc = F.silu(m.conv1d(xbc.transpose(1, 2))[..., :seqlen].transpose(1, 2))
    x, B, C = xbc.split([m.d_inner, G * N, G * N], -1)
    x, B, C = x.view(bsz, seqlen, H, P), B.view(bsz, seqlen, G, N), C.view(bsz, seqlen, G, N)
    dt = F.softplus(dt + m.dt_bias)
    A = -torch.exp(m.A_log)
    ys = torch.zeros(bsz, seqlen, H, P, dtype=u.dtype)
    for b in range(bsz):
        for hd in range(H):
            grp = hd // (H // G)
            h = torch.zeros(P, N, dtype=u.dtype)
            for t in range(seqlen):
                h = torch.exp(dt[b, t, hd] * A[hd]) * h + dt[b, t, hd] * torch.outer(x[b, t, hd], B[b, t, grp])
                ys[b, t, hd] = h @ C[b, t, grp] + m.D[hd] * x[b, t, hd]
    y = ys.reshape(bsz, seqlen, G, -1) * F.silu(z).reshape(bsz, seqlen, G, -1)
    y = y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + m.norm.eps)
    y = y.reshape(bsz, seqlen, -1) * m.norm.weight
    return y @ m.out_proj.weight.T


def tiny_layer(chunk_size, ngroups=2, seed=0):
    torch.manual_seed(seed)
    m = Mamba2(**TINY, ngroups=ngroups, chunk_size=chunk_size).double()
    with torch.no_grad():  # non-trivial D and norm weights, larger dt so the decay matters
        m.D.uniform_(-1, 1)
        m.norm.weight.uniform_(0.5, 1.5)
        m.dt_bias.uniform_(-1, 1)
    return m


@pytest.mark.parametrize("chunk", [4, 8])
@pytest.mark.parametrize("ngroups", [1, 2])
def test_layer_equals_sequential_recurrence_float64(chunk, ngroups):
    m = tiny_layer(chunk, ngroups)
    for seqlen in sorted({1, 7, chunk - 1, chunk, 3 * chunk + 5}):
        u = torch.randn(2, seqlen, TINY["d_model"], dtype=torch.float64)
        with torch.no_grad():
            out, ref = m(u), naive_layer(m, u)
        assert out.shape == (2, seqlen, TINY["d_model"])
        torch.testing.assert_close(out, ref, atol=1e-10, rtol=0, msg=f"L={seqlen}, chunk={chunk}")


def test_result_independent_of_chunk_size():
    torch.manual_seed(0)
    b, seqlen, h, p, g, n = 3, 37, 4, 3, 2, 5
    x, dt = torch.randn(b, seqlen, h, p, dtype=torch.float64), torch.randn(b, seqlen, h, dtype=torch.float64)
    B, C = torch.randn(b, seqlen, g, n, dtype=torch.float64), torch.randn(b, seqlen, g, n, dtype=torch.float64)
    A, D = -torch.rand(h, dtype=torch.float64) * 4, torch.randn(h, dtype=torch.float64)
    outs = [ssd_scan(x, dt, A, B, C, cs, D=D, dt_softplus=True) for cs in (1, 2, 5, 16, 37, 256)]
    for y in outs[1:]:
        torch.testing.assert_close(y, outs[0], atol=1e-12, rtol=0)


def test_mix_treats_each_sequence_independently_and_forward_composes():
    m = tiny_layer(4)
    u = torch.randn(5, 11, TINY["d_model"], dtype=torch.float64)
    with torch.no_grad():
        zxbcdt = m.project(u)
        torch.testing.assert_close(zxbcdt, m.in_proj(u))
        mixed = m.mix(zxbcdt)
        assert mixed.shape == (5, 11, m.d_inner)
        for i in range(5):  # one sequence alone, and a prefix of it (causality)
            torch.testing.assert_close(mixed[i:i + 1], m.mix(zxbcdt[i:i + 1]), atol=1e-12, rtol=0)
            torch.testing.assert_close(mixed[i:i + 1, :6], m.mix(zxbcdt[i:i + 1, :6]), atol=1e-12, rtol=0)
        torch.testing.assert_close(m(u), m.out_proj(mixed), atol=1e-12, rtol=0)


def test_gradcheck_scan_and_layer():
    torch.manual_seed(0)
    b, seqlen, h, p, g, n = 2, 7, 4, 2, 2, 3

    def leaf(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, dtype=torch.float64) * scale + shift).requires_grad_()

    args = (leaf(b, seqlen, h, p), leaf(b, seqlen, h), leaf(h, scale=0.3, shift=-1.0),
            leaf(b, seqlen, g, n), leaf(b, seqlen, g, n), leaf(h), leaf(h))

    def scan(x, dt, A, B, C, D, dt_bias):  # chunk 3: three chunks, the last one padded
        return ssd_scan(x, dt, A, B, C, 3, D=D, dt_bias=dt_bias, dt_softplus=True)

    assert torch.autograd.gradcheck(scan, args)
    m = tiny_layer(3)
    u = torch.randn(1, 5, TINY["d_model"], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (u,))


def test_recompute_gives_same_gradients_and_saves_only_inputs():
    torch.manual_seed(0)
    b, seqlen, h, p, g, n = 2, 40, 4, 8, 1, 16
    inputs = [torch.randn(b, seqlen, h, p), torch.randn(b, seqlen, h), -torch.rand(h) - 0.5,
              torch.randn(b, seqlen, g, n), torch.randn(b, seqlen, g, n), torch.randn(h)]
    grads, saved = {}, {}
    for recompute in (True, False):
        leaves = [t.clone().requires_grad_() for t in inputs]
        nbytes = []

        def pack(t):
            nbytes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = ssd_scan(*leaves[:5], 8, D=leaves[5], dt_softplus=True, recompute=recompute)
        y.square().sum().backward()
        grads[recompute] = [t.grad for t in leaves]
        saved[recompute] = sum(nbytes)
    for a, b_ in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b_, atol=1e-5, rtol=1e-5)
    input_bytes = sum(t.numel() * t.element_size() for t in inputs)
    assert saved[True] <= input_bytes
    assert saved[False] > 5 * saved[True]


def test_layer_recompute_keeps_only_what_the_fused_kernel_keeps(saved_bytes):
    """With recompute the layer keeps its input, the projection zxbcdt and the mixed output (the out_proj input),
    as mamba_ssm's mamba_split_conv1d_scan_combined; gradients equal the plain backward."""
    grads, saved = {}, {}
    u = torch.randn(3, 21, TINY["d_model"], dtype=torch.float64)
    for recompute in (True, False):
        m = tiny_layer(8)
        m.recompute = recompute
        y, saved[recompute] = saved_bytes(lambda: m(u), m)
        y.square().sum().backward()
        grads[recompute] = {n: p.grad for n, p in m.named_parameters()}
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, atol=1e-12, rtol=1e-10, msg=name)
    m = tiny_layer(8)
    kept = u.numel() * (1 + m.in_proj.out_features / m.d_model + m.d_inner / m.d_model) * 8   # float64
    assert saved[True] == kept
    assert saved[False] > 2 * saved[True]


def test_parameters_match_mamba_ssm_layout_and_count():
    m = Mamba2(512)  # the paper settings
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "in_proj.weight": (2320, 512), "conv1d.weight": (1280, 1, 4), "conv1d.bias": (1280,),
        "dt_bias": (16,), "A_log": (16,), "D": (16,), "norm.weight": (1024,), "out_proj.weight": (512, 1024),
    }
    assert sum(p.numel() for p in m.parameters()) == 1_719_600
    assert (m.d_inner, m.nheads) == (1024, 16)


def test_initialisation_as_mamba_ssm():
    torch.manual_seed(0)
    m = Mamba2(256, headdim=4, dt_min=1e-3, dt_max=0.1, A_init_range=(1, 16))  # 128 heads
    dt = F.softplus(m.dt_bias.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    log_dt = dt.log()  # log-uniform: mean of log dt near the middle of [log 1e-3, log 0.1]
    assert abs(log_dt.mean().item() - math.log(1e-2)) < 0.5
    A = m.A_log.detach().exp()
    assert A.min() >= 1 and A.max() <= 16 and A.std() > 2
    assert torch.equal(m.D.detach(), torch.ones(128))
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.dt_bias, m.A_log, m.D))


def test_matches_transformers_mamba2mixer_float32():
    transformers = pytest.importorskip("transformers")
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    m = Mamba2(64, d_state=16, headdim=16, chunk_size=32)
    cfg = transformers.Mamba2Config(hidden_size=64, state_size=16, conv_kernel=4, expand=2, head_dim=16,
                                    n_groups=1, num_heads=8, chunk_size=32, use_bias=False, use_conv_bias=True,
                                    num_hidden_layers=1)
    hf = Mamba2Mixer(cfg, layer_idx=0)
    hf.load_state_dict(m.state_dict())
    u = torch.randn(2, 75, 64)
    u1, u2 = u.clone().requires_grad_(), u.clone().requires_grad_()
    out, ref = m(u1), hf(u2)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    out.square().sum().backward()
    ref.square().sum().backward()
    torch.testing.assert_close(u1.grad, u2.grad, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(m.A_log.grad, hf.A_log.grad, atol=1e-4, rtol=1e-3)


def test_bfloat16_runs_close_to_float32():
    m = tiny_layer(8).float()
    u = torch.randn(2, 20, TINY["d_model"])
    ref = m(u)
    out = m.to(torch.bfloat16)(u.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.skipif(not (torch.cuda.is_available() and kernels_available()), reason="needs CUDA and mamba_ssm")
def test_cuda_kernels_match_pure_torch_path():
    torch.manual_seed(0)
    m = Mamba2(256, use_kernels=True).cuda()
    u = torch.randn(4, 300, 256, device="cuda", requires_grad=True)
    out = m(u)
    m.use_kernels = False
    ref = m(u)
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
    g_k = torch.autograd.grad(out.square().sum(), u)[0]
    g_t = torch.autograd.grad(ref.square().sum(), u)[0]
    torch.testing.assert_close(g_k, g_t, atol=2e-3, rtol=2e-2)
