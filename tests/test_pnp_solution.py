"""solve_pnp forward: round trips per problem family, the optimum vs OpenCV, precision."""

import math

import numpy as np
import pytest
import torch

import pyfacepnp
from pnp_problems import FAMILIES, batch, cost_np, make_problem, opencv_best, random_rotation, solve_batch

SIZES = {"minimal": [4, 5, 6], "planar": [4, 5, 6, 68], "face": [68, 1220], "random": [None],
         "wide": [None]}


def rotation_angle(Ra, Rb):
    """Angle between rotations, accurate near zero (|Ra - Rb|_F = 2 sqrt(2) sin(angle / 2))."""
    d = (Ra - Rb).flatten(-2).norm(dim=-1)
    return 2 * torch.asin((d / (2 * math.sqrt(2))).clamp(max=1))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_noiseless_round_trip(family, dtype):
    rng = np.random.default_rng(7)
    for n in SIZES[family]:
        probs = [make_problem(family, rng, n=n or 20, noise=0.0, skew=True) for _ in range(24)]
        res = solve_batch(probs, dtype)
        assert (res.status == pyfacepnp.PnPStatus.CONVERGED).all(), (family, n, res.status)
        R = torch.tensor(np.stack([p.R for p in probs]))
        t = torch.tensor(np.stack([p.t for p in probs]))
        tol = 1e-8 if dtype == torch.float64 else 2e-4
        ang = rotation_angle(res.R.double(), R)
        assert ang.max() < tol, (family, n, ang.max())
        rel_t = (res.t.double() - t).norm(dim=-1) / t.norm(dim=-1)
        assert rel_t.max() < tol, (family, n, rel_t.max())
        assert res.R.dtype == dtype and res.t.dtype == dtype


@pytest.mark.parametrize("family", FAMILIES)
def test_cost_is_opencv_optimum_or_better(family):
    """Final cost <= OpenCV's best (SQPnP / ITERATIVE, then solvePnPRefineLM) * (1 + 1e-6)."""
    rng = np.random.default_rng(11)
    count = 200
    probs = [make_problem(family, rng, noise=2.0) for _ in range(count)]
    worse = []
    for i, p in enumerate(probs):
        res = solve_batch([p])
        assert int(res.status[0]) == pyfacepnp.PnPStatus.CONVERGED
        ours = float(res.cost[0])
        # The reported cost is the objective at the returned pose.
        assert math.isclose(ours, cost_np(p.X, p.x, p.K, res.R[0].numpy(), res.t[0].numpy()),
                            rel_tol=1e-9)
        cv = opencv_best(p)
        if ours > cv * (1 + 1e-6):
            worse.append((i, ours, cv))
    assert not worse, worse


@pytest.mark.parametrize("n", [4, 5, 6])
def test_minimal_sets_with_large_noise_reach_opencv_optimum(n):
    rng = np.random.default_rng(100 + n)
    for _ in range(150):
        p = make_problem("minimal", rng, n=n, noise=4.0)
        res = solve_batch([p])
        assert int(res.status[0]) == 0
        assert float(res.cost[0]) <= opencv_best(p) * (1 + 1e-6)


def test_batched_equals_one_by_one():
    rng = np.random.default_rng(3)
    probs = [make_problem("random", rng, n=30) for _ in range(16)]
    res = solve_batch(probs)
    for i, p in enumerate(probs):
        one = solve_batch([p])
        assert torch.equal(one.R[0], res.R[i]) and torch.equal(one.t[0], res.t[i])


def test_float32_matches_float64_on_well_conditioned_problems():
    rng = np.random.default_rng(5)
    probs = [make_problem("face", rng, n=1220) for _ in range(32)]
    r64 = solve_batch(probs, torch.float64)
    r32 = solve_batch(probs, torch.float32)
    rel_t = ((r32.t.double() - r64.t).norm(dim=-1) / r64.t.norm(dim=-1)).max()
    assert rel_t < 1e-4
    assert (r32.R.double() - r64.R).abs().max() < 1e-4
    assert torch.equal(r32.status, r64.status)


def test_init_skips_initialisation_and_reaches_same_optimum():
    rng = np.random.default_rng(9)
    probs = [make_problem("random", rng, n=25) for _ in range(8)]
    X, x, K = batch(probs)
    ref = pyfacepnp.solve_pnp(X, x, K)
    # Start from a perturbed ground truth.
    R0 = torch.tensor(np.stack([p.R for p in probs]))
    t0 = torch.tensor(np.stack([p.t for p in probs])) + 0.05
    res = pyfacepnp.solve_pnp(X, x, K, init=(R0, t0))
    assert (res.status == 0).all()
    assert torch.allclose(res.R, ref.R, atol=1e-9) and torch.allclose(res.t, ref.t, atol=1e-9)


def test_max_iterations_status():
    rng = np.random.default_rng(2)
    probs = [make_problem("random", rng, n=40, noise=2.0) for _ in range(4)]
    X, x, K = batch(probs)
    R0 = torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    t0 = torch.tensor(np.stack([p.t for p in probs])) * 1.5
    res = pyfacepnp.solve_pnp(X, x, K, init=(R0, t0), max_iterations=1)
    assert (res.status == pyfacepnp.PnPStatus.MAX_ITERATIONS).all()
    # The init's one iteration did not converge, so the global start followed with its own.
    assert (res.iterations == 2).all()
    res = pyfacepnp.solve_pnp(X, x, K, max_iterations=1)
    assert (res.status == pyfacepnp.PnPStatus.MAX_ITERATIONS).all() and (res.iterations == 1).all()
    assert torch.isfinite(res.R).all() and torch.isfinite(res.cost).all()


def test_covariance_is_inverse_of_exact_hessian():
    """covariance^-1 equals the Hessian of the objective in the local pose coordinates,
    computed by torch autograd (second-order terms included, not Gauss-Newton)."""
    from pnp_problems import so3_exp_second_order, torch_cost

    rng = np.random.default_rng(4)
    gen = torch.Generator().manual_seed(4)
    for loss in ("l2", "huber"):
        for _ in range(5):
            p = make_problem("random", rng, n=12, noise=5.0)
            X, x, K = batch([p])
            w = torch.rand(1, 12, 2, dtype=torch.float64, generator=gen) + 0.5
            res = pyfacepnp.solve_pnp(X, x, K, w, loss=loss, loss_scale=3.0)
            assert int(res.status[0]) == 0

            def E(theta):
                R = so3_exp_second_order(theta[:3]) @ res.R[0]
                return torch_cost(R, res.t[0] + theta[3:], X[0], x[0], K[0], w[0], loss, 3.0)

            H = torch.autograd.functional.hessian(E, torch.zeros(6, dtype=torch.float64))
            Hop = torch.linalg.inv(res.covariance[0])
            assert torch.allclose(Hop, H, rtol=1e-6, atol=1e-6 * H.abs().max()), (Hop - H).abs().max()
            assert torch.equal(res.covariance[0], res.covariance[0].T)


def test_far_init_converges_through_the_global_start():
    """An init far from the solution (a random rotation, twice the distance): when its LM
    does not converge within max_iterations the global start follows, so the answer is the
    global start's minimum, CONVERGED."""
    rng = np.random.default_rng(8)
    probs = [make_problem("face", rng, n=68) for _ in range(16)]
    X, x, K = batch(probs)
    t_true = torch.tensor(np.stack([p.t for p in probs]))
    R0 = torch.tensor(np.stack([random_rotation(rng) for _ in probs]))
    res = pyfacepnp.solve_pnp(X, x, K, init=(R0, 2 * t_true))
    ref = pyfacepnp.solve_pnp(X, x, K)
    assert res.converged.all()
    torch.testing.assert_close(res.cost, ref.cost, rtol=1e-9, atol=1e-12)
