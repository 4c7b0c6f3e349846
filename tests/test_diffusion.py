"""Gaussian diffusion: tables, posteriors and losses against closed forms; samplers against diffusers."""
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from scipy.stats import norm

from medsora.diffusion import (
    GaussianDiffusion,
    ddim_sample,
    ddpm_sample,
    discretized_gaussian_log_likelihood,
    normal_kl,
    space_timesteps,
)

T = 1000


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: OpenMP threads only contend (exp on 32k floats is 100x slower with 2 threads on a busy box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def naive_schedule():
    """betas and alpha-bar by a plain Python loop (float64)."""
    betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    abar, prod = [], 1.0
    for b in betas:
        prod *= 1.0 - b
        abar.append(prod)
    return betas, abar


def toy_model(channels_out_factor=2, channel_dim=2):
    """A fixed nonlinear eps(x, t) (and v(x, t) in [-1, 1] when factor 2), deterministic and t-dependent: the exact
    eps for N(0, 1) data plus a perturbation, so that samples stay O(1) and absolute tolerances mean something."""
    abar = torch.tensor(naive_schedule()[1], dtype=torch.float64)

    def fn(x, t):
        tt = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) / T
        ab = abar.to(t.device)[t].to(x.dtype).reshape(tt.shape)
        eps = (1 - ab).sqrt() * x + 0.2 * torch.tanh(0.7 * x + torch.sin(3.0 * tt)) + 0.1 * x.roll(1, dims=-1)
        if channels_out_factor == 1:
            return eps
        v = torch.tanh(x.flip(-1) * 0.5 - tt)
        return torch.cat([eps, v], dim=channel_dim)
    return fn


class Recorder:
    """Wraps a model and keeps the (x, t) of every call."""
    def __init__(self, fn):
        self.fn, self.xs, self.ts = fn, [], []

    def __call__(self, x, t):
        self.xs.append(x.clone())
        self.ts.append(t.clone())
        return self.fn(x, t)


# ---------------------------------------------------------------- schedule tables

def test_schedule_tables_match_naive_loop():
    d = GaussianDiffusion()
    betas, abar = naive_schedule()
    assert d.betas.dtype == torch.float64 and d.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(d.betas, torch.tensor(betas, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(d.alphas_cumprod, torch.tensor(abar, dtype=torch.float64), rtol=1e-12, atol=0)
    abar_prev = [1.0] + abar[:-1]
    pv = [betas[i] * (1 - abar_prev[i]) / (1 - abar[i]) for i in range(T)]
    torch.testing.assert_close(d.posterior_variance, torch.tensor(pv, dtype=torch.float64), rtol=1e-12, atol=0)
    assert d.posterior_variance[0] == 0
    assert d.posterior_log_variance_clipped[0] == pytest.approx(math.log(pv[1]), rel=1e-12)
    assert d.posterior_log_variance_clipped[500] == pytest.approx(math.log(pv[500]), rel=1e-12)


def test_space_timesteps():
    assert space_timesteps(T, 250, "ddim") == list(range(0, T, 4))  # DiT "ddim250"
    assert space_timesteps(T, 50, "ddim") == list(range(0, T, 20))
    u = space_timesteps(T, 250, "uniform")
    assert len(u) == 250 and u[0] == 0 and u[-1] == T - 1 and all(b > a for a, b in zip(u, u[1:]))
    assert space_timesteps(T, T, "uniform") == list(range(T))
    with pytest.raises(ValueError, match="stride"):
        space_timesteps(T, 300, "ddim")


def test_respace_rescales_betas_like_spaced_diffusion():
    d = GaussianDiffusion()
    r = d.respace(250, "ddim")
    keep = torch.arange(0, T, 4)
    assert torch.equal(r.timestep_map, keep)
    torch.testing.assert_close(r.alphas_cumprod, d.alphas_cumprod[keep], rtol=1e-12, atol=0)
    # beta'_i = 1 - abar[k_i] / abar[k_{i-1}]
    assert r.betas[1].item() == pytest.approx(1 - d.alphas_cumprod[4].item() / d.alphas_cumprod[0].item(), rel=1e-12)
    # respacing twice composes the timestep maps
    rr = r.respace(50, "ddim")
    assert torch.equal(rr.timestep_map, torch.arange(0, T, 20))
    full = d.respace(T)
    torch.testing.assert_close(full.betas, d.betas, rtol=1e-9, atol=0)


# ---------------------------------------------------------------- q and posteriors

def test_q_sample_closed_form():
    torch.manual_seed(0)
    d = GaussianDiffusion()
    _, abar = naive_schedule()
    x0 = torch.randn(4, 3, 2, 5, 5, dtype=torch.float64)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 1, 500, 999])
    x_t = d.q_sample(x0, t, noise)
    for b, tb in enumerate(t.tolist()):
        expected = math.sqrt(abar[tb]) * x0[b] + math.sqrt(1 - abar[tb]) * noise[b]
        torch.testing.assert_close(x_t[b], expected, rtol=1e-12, atol=1e-12)


def test_posterior_matches_bayes_rule():
    """q(x_{t-1}|x_t,x_0) ∝ N(x_t; sqrt(a_t) x_{t-1}, b_t) N(x_{t-1}; sqrt(abar_{t-1}) x_0, 1-abar_{t-1})."""
    torch.manual_seed(1)
    d = GaussianDiffusion()
    betas, abar = naive_schedule()
    x0 = torch.randn(3, 2, 4, 3, 3, dtype=torch.float64)
    x_t = torch.randn_like(x0)
    t = torch.tensor([1, 37, 999])
    mean, var, log_var = d.q_posterior_mean_variance(x0, x_t, t)
    for b, tb in enumerate(t.tolist()):
        a, beta, ab_prev = 1 - betas[tb], betas[tb], abar[tb - 1]
        precision = a / beta + 1 / (1 - ab_prev)
        exp_mean = (math.sqrt(a) / beta * x_t[b] + math.sqrt(ab_prev) / (1 - ab_prev) * x0[b]) / precision
        torch.testing.assert_close(mean[b], exp_mean, rtol=1e-10, atol=1e-12)
        assert var[b].flatten()[0].item() == pytest.approx(1 / precision, rel=1e-10)
        assert log_var[b].flatten()[0].item() == pytest.approx(math.log(1 / precision), rel=1e-10)


def test_normal_kl_matches_torch_distributions():
    torch.manual_seed(2)
    m1, m2, lv1, lv2 = (torch.randn(1000, dtype=torch.float64) for _ in range(4))
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                                 torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-10, atol=1e-12)


def test_discretized_log_likelihood_matches_scipy():
    torch.manual_seed(3)
    x = torch.cat([torch.tensor([-1.0, 1.0, -0.9995, 0.9995]), torch.rand(200) * 2 - 1]).double()
    x = (x * 127.5).round() / 127.5  # 8-bit grid
    means = x + 0.05 * torch.randn_like(x)
    log_scales = torch.empty_like(x).uniform_(-5, -1)
    got = discretized_gaussian_log_likelihood(x, means, log_scales)
    s, xn, mn = log_scales.exp().numpy(), x.numpy(), means.numpy()
    hi, lo = (xn + 1 / 255 - mn) / s, (xn - 1 / 255 - mn) / s
    p = np.where(lo > 0, norm.sf(lo) - norm.sf(hi), norm.cdf(hi) - norm.cdf(lo))
    p[xn < -0.999] = norm.cdf(hi)[xn < -0.999]
    p[xn > 0.999] = norm.sf(lo)[xn > 0.999]
    expected = torch.from_numpy(p).clamp(min=1e-12).log()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- p(x_{t-1}|x_t) and losses

def test_learned_range_variance_endpoints():
    d = GaussianDiffusion(channel_dim=2)
    x = torch.randn(3, 2, 4, 3, 3, dtype=torch.float64)
    t = torch.tensor([0, 10, 999])
    for v, expected in [(1.0, d.betas.log()), (-1.0, d.posterior_log_variance_clipped),
                        (0.0, 0.5 * (d.betas.log() + d.posterior_log_variance_clipped))]:
        out = d.p_mean_variance(lambda x, t: torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 2), x, t)
        torch.testing.assert_close(out["log_variance"][:, 0, 0, 0, 0], expected[t], rtol=1e-12, atol=0)
    fixed = GaussianDiffusion(learn_sigma=False)
    out = fixed.p_mean_variance(lambda x, t: torch.zeros_like(x), x, t)
    torch.testing.assert_close(out["log_variance"][:, 0, 0, 0, 0],
                               torch.stack([d.posterior_variance[1], d.betas[10], d.betas[999]]).log())


def test_training_losses_match_independent_computation():
    """mse = mean (eps - eps_hat)^2; vb = KL(q post || p)/ln 2 for t > 0 (torch.distributions), decoder NLL at t = 0
    (scipy), with p's mean = posterior mean at x0_hat = (x_t - sqrt(1-abar) eps_hat)/sqrt(abar)."""
    torch.manual_seed(4)
    d = GaussianDiffusion()
    betas, abar = naive_schedule()
    model = toy_model(2, channel_dim=2)
    x0 = (torch.rand(3, 2, 4, 3, 3, dtype=torch.float64) * 2 - 1)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 5, 700])
    losses = d.training_losses(model, x0, t, noise)
    for b, tb in enumerate(t.tolist()):
        x_t = math.sqrt(abar[tb]) * x0[b] + math.sqrt(1 - abar[tb]) * noise[b]
        out = model(x_t[None], t[b:b + 1])[0]
        eps, v = out[:, :4], out[:, 4:]
        assert losses["mse"][b].item() == pytest.approx(((eps - noise[b]) ** 2).mean().item(), rel=1e-10)
        x0_hat = (x_t - math.sqrt(1 - abar[tb]) * eps) / math.sqrt(abar[tb])
        ab_prev = abar[tb - 1] if tb > 0 else 1.0
        coef_x0 = math.sqrt(ab_prev) * betas[tb] / (1 - abar[tb])
        coef_xt = math.sqrt(1 - betas[tb]) * (1 - ab_prev) / (1 - abar[tb])
        p_mean = coef_x0 * x0_hat + coef_xt * x_t
        post_var = [betas[i] * (1 - (abar[i - 1] if i else 1.0)) / (1 - abar[i]) for i in (1, max(tb, 1))]
        frac = (v + 1) / 2
        p_log_var = frac * math.log(betas[tb]) + (1 - frac) * math.log(post_var[1])
        if tb == 0:
            s = (0.5 * p_log_var).exp().numpy()
            up = norm.cdf((x0[b].numpy() + 1 / 255 - p_mean.numpy()) / s)
            lo = norm.cdf((x0[b].numpy() - 1 / 255 - p_mean.numpy()) / s)
            expected = -torch.from_numpy(up - lo).clamp(min=1e-12).log().mean() / math.log(2)
        else:
            q_mean = coef_x0 * x0[b] + coef_xt * x_t
            kl = torch.distributions.kl_divergence(torch.distributions.Normal(q_mean, math.sqrt(post_var[1])),
                                                   torch.distributions.Normal(p_mean, (0.5 * p_log_var).exp()))
            expected = kl.mean() / math.log(2)
        assert losses["vb"][b].item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(losses["loss"], losses["mse"] + losses["vb"])


def test_vb_term_has_zero_gradient_wrt_eps_branch():
    torch.manual_seed(5)
    d = GaussianDiffusion()
    x0 = torch.randn(2, 3, 4, 4, 4)
    out = torch.randn(2, 3, 8, 4, 4, requires_grad=True)  # (B, F, 2C, H, W): eps | v
    losses = d.training_losses(lambda x, t: out, x0, torch.tensor([0, 300]))
    (g_vb,) = torch.autograd.grad(losses["vb"].sum(), out, retain_graph=True)
    assert torch.all(g_vb[:, :, :4] == 0) and g_vb[:, :, 4:].abs().sum() > 0
    (g_mse,) = torch.autograd.grad(losses["mse"].sum(), out)
    assert torch.all(g_mse[:, :, 4:] == 0) and g_mse[:, :, :4].abs().sum() > 0


def test_fixed_variance_is_mse_only():
    torch.manual_seed(6)
    d = GaussianDiffusion(learn_sigma=False)
    x0, noise = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    losses = d.training_losses(toy_model(1), x0, torch.tensor([3, 900]), noise)
    assert torch.all(losses["vb"] == 0)
    torch.testing.assert_close(losses["loss"], losses["mse"])
    with pytest.raises(ValueError, match="does not match"):
        d.training_losses(toy_model(2), x0, torch.tensor([3, 900]), noise)


def test_channel_dim_layouts_agree():
    """(B, F, C, H, W) with channel_dim=2 and the same data permuted to (B, C, F, H, W) with channel_dim=1."""
    torch.manual_seed(7)
    x0, noise = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 3, 4, 5, 5)
    out = torch.randn(2, 3, 8, 5, 5)
    t = torch.tensor([0, 123])
    video = GaussianDiffusion(channel_dim=2).training_losses(lambda x, t: out, x0, t, noise)
    image = GaussianDiffusion(channel_dim=1).training_losses(
        lambda x, t: out.transpose(1, 2), x0.transpose(1, 2), t, noise.transpose(1, 2))
    for k in ("mse", "vb", "loss"):
        torch.testing.assert_close(video[k], image[k])


def test_frame_weight_averages_kept_frames_only():
    torch.manual_seed(8)
    d = GaussianDiffusion()
    model = toy_model(2)  # elementwise over frames, so slicing frames commutes with the model
    x0, noise = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    t = torch.tensor([0, 400])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2)
    masked = d.training_losses(model, x0, t, noise, weight=mask)
    sliced = d.training_losses(model, x0[:, :2], t, noise[:, :2])
    ones = d.training_losses(model, x0, t, noise, weight=torch.ones(2, 4))
    plain = d.training_losses(model, x0, t, noise)
    for k in ("mse", "vb"):
        torch.testing.assert_close(masked[k], sliced[k])
        torch.testing.assert_close(ones[k], plain[k])


def test_model_extras_are_passed_through():
    d = GaussianDiffusion()
    feats = torch.randn(5)
    x0 = torch.randn(2, 1, 4, 2, 2)
    losses = d.training_losses(lambda x, t: (toy_model(2)(x, t), feats), x0, torch.tensor([1, 2]))
    assert losses["extra"] is feats and losses["loss"].shape == (2,)


# ---------------------------------------------------------------- samplers vs diffusers

DIFFUSERS_BETAS = dict(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                       clip_sample=False, prediction_type="epsilon", timestep_spacing="leading", steps_offset=0)


@pytest.mark.parametrize("steps", [250, 50])
def test_ddim_matches_diffusers_step_by_step(steps):
    """DiT's DDIM (alpha-bar_prev = 1 at the last step) is diffusers' DDIMScheduler with set_alpha_to_one=True,
    leading spacing, steps_offset=0, no clipping. The variance channels are ignored by both."""
    torch.manual_seed(9)
    d = GaussianDiffusion(channel_dim=2)
    model = Recorder(toy_model(2, channel_dim=2))
    shape = (2, 3, 4, 4, 4)
    x = ddim_sample(d, model, shape, steps=steps, seed=0, progress=False)
    sched = DDIMScheduler(**DIFFUSERS_BETAS, set_alpha_to_one=True)
    sched.set_timesteps(steps)
    assert torch.equal(torch.stack([t[0] for t in model.ts]), sched.timesteps)
    states = model.xs + [x]
    worst = 0.0
    for k, t in enumerate(sched.timesteps):
        eps = model.fn(states[k], model.ts[k])[:, :, :4]
        ref = sched.step(eps, t, states[k], eta=0.0).prev_sample
        worst = max(worst, (ref - states[k + 1]).abs().max().item())
    assert worst <= 1e-5, worst


@pytest.mark.parametrize("steps", [None, 50])
def test_ddpm_learned_variance_matches_diffusers(steps):
    """Ancestral DDPM with learned-range variance vs diffusers' DDPMScheduler(variance_type="learned_range"),
    which rescales betas for respaced timesteps as SpacedDiffusion does. (B, C, H, W) images, channel_dim=1;
    both draw x_T then one noise per step with t > 0 from the same seeded generator."""
    torch.manual_seed(10)
    d = GaussianDiffusion(channel_dim=1)
    model = Recorder(toy_model(2, channel_dim=1))
    shape = (2, 4, 6, 6)
    x = ddpm_sample(d, model, shape, steps=steps, generator=torch.Generator().manual_seed(3), progress=False)
    sched = DDPMScheduler(**DIFFUSERS_BETAS, variance_type="learned_range")
    # diffusers keeps its tables in float32, where beta'_t = 1 - abar_t / abar_prev loses up to 5e-4 relative
    # precision at small t (2.5e-4 error in x_0 over 1000 steps). Give it the float64 alpha-bar of the naive
    # loop, so that what is compared is the step maths.
    abar = torch.tensor(naive_schedule()[1], dtype=torch.float64)
    torch.testing.assert_close(sched.alphas_cumprod.double(), abar, rtol=1e-6, atol=0)
    sched.alphas_cumprod, sched.one = abar, torch.tensor(1.0, dtype=torch.float64)
    if steps is None:
        sched.set_timesteps(T)
    else:
        sched.set_timesteps(timesteps=space_timesteps(T, steps, "uniform")[::-1])
    assert torch.equal(torch.stack([t[0] for t in model.ts]), sched.timesteps)
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(torch.randn(shape, generator=g), model.xs[0], rtol=0, atol=0)
    states = model.xs + [x]
    worst = 0.0
    for k, t in enumerate(sched.timesteps):
        ref = sched.step(model.fn(states[k], model.ts[k]), t, states[k], generator=g).prev_sample
        worst = max(worst, (ref - states[k + 1]).abs().max().item())
    assert worst <= 1e-5, worst


def test_ddpm_respaced_to_1000_equals_full():
    d = GaussianDiffusion()
    shape = (2, 2, 4, 4, 4)
    full = ddpm_sample(d, toy_model(2), shape, steps=None, seed=1, progress=False)
    respaced = ddpm_sample(d, toy_model(2), shape, steps=T, seed=1, progress=False)
    torch.testing.assert_close(respaced, full, rtol=1e-5, atol=1e-5)


def test_ddim_eta1_equals_ddpm_with_posterior_variance():
    """DDIM with eta=1 is DDPM with the posterior ("fixed small") variance, i.e. a learned-range v = -1."""
    d = GaussianDiffusion()
    model = lambda x, t: torch.cat([toy_model(1)(x, t), -torch.ones_like(x)], dim=2)  # noqa: E731
    shape = (2, 2, 4, 4, 4)
    a = ddim_sample(d, model, shape, steps=50, eta=1.0, spacing="uniform", seed=2, progress=False)
    b = ddpm_sample(d, model, shape, steps=50, spacing="uniform", seed=2, progress=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- end to end with an oracle

def oracle_gaussian(mu, s):
    """The exact E[eps | x_t] for data x_0 ~ N(mu, s^2) (s = 0: one data point), with abar from the naive loop,
    indexed by the ORIGINAL timestep the sampler passes to the model."""
    _, abar = naive_schedule()
    abar = torch.tensor(abar, dtype=torch.float64)

    def fn(x, t):
        ab = abar.to(t.device)[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        eps = (1 - ab).sqrt() / (ab * s ** 2 + 1 - ab) * (x - ab.sqrt() * mu)
        return torch.cat([eps, torch.zeros_like(eps)], dim=2)
    return fn


def test_ddim_with_oracle_recovers_data_point():
    torch.manual_seed(11)
    x_data = 2.5 * torch.randn(1, 2, 4, 4, 4)  # values well outside [-1, 1]: no clipping by default
    shape = (3, 2, 4, 4, 4)
    d = GaussianDiffusion()
    x = ddim_sample(d, oracle_gaussian(x_data, 0.0), shape, steps=250, seed=0, progress=False)
    torch.testing.assert_close(x, x_data.expand(shape), rtol=1e-4, atol=1e-4)
    clipped = ddim_sample(d, oracle_gaussian(x_data, 0.0), shape, steps=250, seed=0, progress=False,
                          clip_denoised=True)
    assert clipped.abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_oracle_samples_have_data_moments(sampler):
    """Data N(0.7, 0.4^2): DDIM-250 (deterministic flow) and full DDPM (learned-range v = 0) reproduce its moments."""
    mu, s = 0.7, 0.4
    d = GaussianDiffusion()
    shape = (64, 2, 4, 8, 8)  # 32768 samples
    if sampler == "ddim":
        x = ddim_sample(d, oracle_gaussian(mu, s), shape, steps=250, seed=0, progress=False)
    else:
        x = ddpm_sample(d, oracle_gaussian(mu, s), shape, steps=None, seed=0, progress=False)
    assert x.mean().item() == pytest.approx(mu, abs=0.01)
    assert x.std().item() == pytest.approx(s, abs=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(12)
    d = GaussianDiffusion()
    x0, noise, t = torch.randn(2, 2, 4, 4, 4), torch.randn(2, 2, 4, 4, 4), torch.tensor([0, 600])
    cpu = d.training_losses(toy_model(2), x0, t, noise)
    gpu = d.training_losses(toy_model(2), x0.cuda(), t.cuda(), noise.cuda())
    for k in ("mse", "vb", "loss"):
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], rtol=1e-5, atol=1e-5)
    x_T = torch.randn(2, 2, 4, 4, 4)
    a = ddim_sample(d, toy_model(2), x_T.shape, steps=50, noise=x_T, progress=False)
    b = ddim_sample(d, toy_model(2), x_T.shape, steps=50, noise=x_T, device="cuda", progress=False)
    torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-4)
