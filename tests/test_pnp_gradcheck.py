"""float64 gradcheck of solve_pnp's implicit backward against finite differences of the
solver itself, on many random problems, for every differentiable input and output."""

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import pyfacepnp
from pnp_problems import make_problem

LAST_ROW = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)


def random_inputs(seed, n, b=2, family="random", noise=3.0):
    rng = np.random.default_rng(seed)
    probs = [make_problem(family, rng, n=n, noise=noise, skew=True) for _ in range(b)]
    X = torch.tensor(np.stack([p.X for p in probs]))
    x = torch.tensor(np.stack([p.x for p in probs]))
    Ktop = torch.tensor(np.stack([p.K[:2] for p in probs]))
    w = torch.tensor(rng.uniform(0.5, 1.5, size=(b, n, 2)))
    return X, x, Ktop, w


def full_K(Ktop):
    return torch.cat([Ktop, LAST_ROW.expand(*Ktop.shape[:-2], 1, 3)], -2)


def check(fn, inputs):
    inputs = tuple(t.detach().clone().requires_grad_() for t in inputs)
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("loss", ["l2", "huber", "cauchy", "geman_mcclure"])
@pytest.mark.parametrize("seed", range(12))
def test_gradcheck_all_inputs_all_outputs(loss, seed):
    n = 5 + seed % 8
    X, x, Ktop, w = random_inputs(seed, n, b=1, family="minimal" if n <= 6 else "random")

    def fn(X, x, Ktop, w):
        res = pyfacepnp.solve_pnp(X, x, full_K(Ktop), w, loss=loss, loss_scale=2.0)
        assert bool(res.converged.all()), res.status
        return res.R, res.t, res.cost

    check(fn, (X, x, Ktop, w))


@pytest.mark.parametrize("seed", range(4))
def test_gradcheck_planar(seed):
    X, x, Ktop, w = random_inputs(100 + seed, 6, family="planar")

    def fn(X, x, Ktop, w):
        res = pyfacepnp.solve_pnp(X, x, full_K(Ktop), w)
        assert bool(res.converged.all())
        return res.R, res.t

    check(fn, (X, x, Ktop, w))


def test_gradcheck_shared_K_and_per_point_weights():
    X, x, Ktop, _ = random_inputs(7, 9, b=3)
    w = torch.rand(3, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5

    def fn(X, x, Kshared, w):
        res = pyfacepnp.solve_pnp(X, x, full_K(Kshared), w)  # K (3,3) broadcast over the batch
        assert bool(res.converged.all())
        return res.R, res.t

    check(fn, (X, x, Ktop[0], w))


def test_gradcheck_face_sized_problem():
    X, x, Ktop, w = random_inputs(21, 68, b=1, family="face", noise=1.0)

    def fn(x, Ktop):
        res = pyfacepnp.solve_pnp(X, x, full_K(Ktop), w)
        assert bool(res.converged.all())
        return res.R, res.t

    check(fn, (x, Ktop))


def test_backward_matches_autograd_through_unrolled_newton():
    """Independent route: differentiate the optimality condition by plain autograd — one
    exact Newton step from the (detached) optimum has the implicit Jacobian as its
    derivative — and compare with the op's backward."""
    from pnp_problems import so3_exp_second_order, torch_cost

    X, x, Ktop, w = random_inputs(5, 10, b=1)
    X, x, w = X[0], x[0], w[0]
    K = full_K(Ktop[0])
    xg = x.clone().requires_grad_()
    res = pyfacepnp.solve_pnp(X, xg, K, w)
    gR = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (res.R * gR).sum().backward()

    R0, t0 = res.R.detach(), res.t.detach()
    x2 = x.clone().requires_grad_()

    def E(theta, xx):
        return torch_cost(so3_exp_second_order(theta[:3]) @ R0, t0 + theta[3:], X, xx, K, w)

    theta0 = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    g = torch.autograd.grad(E(theta0, x2), theta0, create_graph=True)[0]
    H = torch.autograd.functional.hessian(lambda th: E(th, x.detach()), theta0.detach())
    step = -torch.linalg.solve(H, g)  # d(theta*)/dx through the Newton step
    R_new = so3_exp_second_order(step[:3]) @ R0
    (R_new * gR).sum().backward()
    assert torch.allclose(xg.grad, x2.grad, rtol=1e-6, atol=1e-9)
