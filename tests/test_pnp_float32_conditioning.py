"""float32 inputs on ill-conditioned problems (cond(H) up to and beyond 1e10): the gradient is
that of the float64 solution of the same values, to float32 rounding, not a float32
factorisation's (which turns the sign of the gradient on such problems)."""

import numpy as np
import torch

import pyfacepnp


def _thin_problem(g, thinness, depth, extent=0.05, n=12):
    """A rod-like object (two of its three extents ``thinness`` times the first) down the
    optical axis: the rotation about the rod is weakly determined, so the Hessian's condition
    number grows like 1 / thinness^2."""
    scale = np.array([1.0, thinness, thinness]) * extent
    X = (g.uniform(-1, 1, size=(n, 3)) * scale).astype(np.float32).astype(np.float64)
    t = np.array([0.01 * extent, -0.02 * extent, depth])
    K = np.array([[800.0, 0.0, 320.0], [0.0, 800.0, 240.0], [0.0, 0.0, 1.0]])
    Xc = X + t
    x = (Xc[:, :2] / Xc[:, 2:]) * 800.0 + np.array([320.0, 240.0])
    x = x + g.normal(scale=0.3, size=x.shape)
    w = g.uniform(0.5, 2.0, size=(n, 2))
    # every input exactly representable in float32: the float64 call sees the same values
    return [torch.tensor(a).float().double() for a in (X, x, K, w)]


def _grads(inputs, dtype, gR, gt):
    args = [a.detach().to(dtype).clone().requires_grad_(True) for a in inputs]
    res = pyfacepnp.solve_pnp(*args, max_iterations=200)
    ((res.R.double() * gR).sum() + (res.t.double() * gt).sum()).backward()
    return res, [a.grad.double() for a in args]


def test_float32_gradient_matches_float64_on_ill_conditioned_problems():
    g = np.random.default_rng(0)
    conds = []
    for thinness in (1.0, 1e-2, 1e-4, 5e-5):
        for trial in range(5):
            inputs = _thin_problem(g, thinness, depth=2.0)
            gR = torch.tensor(g.normal(size=(3, 3)))
            gt = torch.tensor(g.normal(size=3))
            r64, g64 = _grads(inputs, torch.float64, gR, gt)
            r32, g32 = _grads(inputs, torch.float32, gR, gt)
            assert int(r64.status) == int(r32.status)  # the same float64 solve
            if int(r64.status) != int(pyfacepnp.PnPStatus.CONVERGED):
                continue  # zero gradients by the contract, on both
            conds.append(float(torch.linalg.cond(r64.covariance)))
            for name, a, b in zip(("points3d", "points2d", "K", "weights"), g32, g64):
                rel = float((a - b).norm() / b.norm())
                assert rel <= 1e-6, (name, thinness, conds[-1], rel)  # target: 1e-3
    assert len(conds) >= 18, len(conds)
    assert max(conds) >= 1e10, conds  # the family reaches the target's conditioning
