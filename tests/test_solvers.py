"""Multistep solvers (DPM-Solver++ 2M, UniPC, through diffusers) on a case with a closed-form answer: data
x0 ~ N(0, s^2 I) has the exact noise prediction eps(x_t) = sqrt(1 - abar_t) x_t / (abar_t s^2 + 1 - abar_t), and the
probability-flow ODE maps x_T to x_0 = x_T * s / sqrt(abar_T s^2 + 1 - abar_T)."""
import pytest
import torch

from medsora.diffusion import GaussianDiffusion, ddim_sample, solver_sample

S = 0.5


def exact_model(diffusion):
    ac = diffusion.alphas_cumprod

    def fn(x, t):                                   # t: original timesteps; output (eps, v) on channel dim 2
        a = ac[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        eps = (1 - a).sqrt() * x / (a * S ** 2 + 1 - a)
        return torch.cat([eps, torch.zeros_like(eps)], dim=2)
    return fn


@pytest.fixture(scope="module")
def setup():
    diffusion = GaussianDiffusion()
    noise = torch.randn(4, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = diffusion.alphas_cumprod[-1]
    exact = noise * S / (a * S ** 2 + 1 - a).sqrt()
    return diffusion, noise, exact


def err(x, exact):
    return ((x - exact).norm() / exact.norm()).item()


def test_solvers_reach_the_closed_form_in_few_steps(setup):
    diffusion, noise, exact = setup
    model = exact_model(diffusion)
    run = lambda **kw: ddim_sample(diffusion, model, noise.shape, noise=noise, progress=False,  # noqa: E731
                                   dtype=torch.float64, **kw)
    ddim = {n: err(run(steps=n), exact) for n in (20, 250, 1000)}
    assert ddim[1000] < 5e-3 and ddim[20] > ddim[250] > ddim[1000]          # DDIM converges as the steps grow
    for solver in ("dpmpp-2m", "unipc"):
        e = err(solver_sample(diffusion, model, noise.shape, steps=20, solver=solver, noise=noise, progress=False,
                              dtype=torch.float64), exact)
        assert e < ddim[20] / 2, (solver, e, ddim)                           # far closer than DDIM at 20 steps
    e25 = err(solver_sample(diffusion, model, noise.shape, steps=25, noise=noise, progress=False, dtype=torch.float64),
              exact)
    assert e25 < ddim[250], (e25, ddim)                                      # DPM-Solver++ 25 beats DDIM 250


def test_sde_solver_is_seeded_and_refuses_a_respaced_diffusion(setup):
    diffusion, noise, exact = setup
    model = exact_model(diffusion)
    a, b = (solver_sample(diffusion, model, noise.shape, steps=20, solver="dpmpp-2m-sde", noise=noise,
                          generator=torch.Generator().manual_seed(3), progress=False, dtype=torch.float64)
            for _ in range(2))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert abs(a.std().item() - exact.std().item()) < 0.2 * exact.std().item()   # right scale, its own noise
    with pytest.raises(ValueError, match="full diffusion"):
        solver_sample(diffusion.respace(50), model, noise.shape, steps=20, noise=noise, progress=False)
    with pytest.raises(ValueError, match="solver must be one of"):
        solver_sample(diffusion, model, noise.shape, steps=20, solver="euler", noise=noise, progress=False)

