"""solve_pnp_minima: every minimum of the global start, each refined: the planar two-fold
ambiguity against OpenCV's IPPE solutions, fixed points of solve_pnp, per-solution
gradients and statuses."""

import math

import cv2
import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import pyfacepnp
from pnp_problems import make_problem, random_rotation

F64 = torch.float64


def far_planar(seed, n=8, depth=25.0, noise=0.3):
    """A small planar target far away: two minima of similar cost (the two-fold ambiguity)."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.uniform(-0.5, 0.5, size=(n, 2)), np.zeros(n)]
    R = random_rotation(rng, max_angle=0.8)
    t = np.r_[rng.uniform(-0.5, 0.5, 2), depth]
    K = np.array([[800.0, 0, 320], [0, 800, 240], [0, 0, 1]])
    u = (X @ R.T + t) @ K.T
    x = u[:, :2] / u[:, 2:] + noise * rng.normal(size=(n, 2))
    return X, x, K


def cv_cost(X, x, K, R, t):
    u = (X @ R.T + t) @ K.T
    return 0.5 * float(((u[:, :2] / u[:, 2:] - x) ** 2).sum())


@pytest.mark.parametrize("seed", range(8))
def test_planar_ambiguity_has_both_of_opencvs_minima(seed):
    """OpenCV's IPPE returns the plane's two poses; refined by solvePnPRefineLM each is a
    local minimum, and each is among ours (the same pose, to OpenCV's convergence in this
    flat valley, at a cost as low or lower), ours sorted by cost."""
    X, x, K = far_planar(seed)
    res = pyfacepnp.solve_pnp_minima(torch.tensor(X), torch.tensor(x), torch.tensor(K))
    n = int(res.num_solutions)
    assert n >= 2 and (res.status[:2] == 0).all()
    assert (res.cost[: n - 1] <= res.cost[1:n]).all()
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 200, 1e-15)
    _, rvecs, tvecs, _ = cv2.solvePnPGeneric(X, x, K, None, flags=cv2.SOLVEPNP_IPPE)
    assert len(rvecs) == 2
    for rv, tv in zip(rvecs, tvecs):
        rv, tv = cv2.solvePnPRefineLM(X, x, K, None, rv, tv, criteria=crit)
        R, t = cv2.Rodrigues(rv)[0], tv.ravel()
        d = [float(np.abs(res.R[j].numpy() - R).max()) + float(np.abs(res.t[j].numpy() - t).max()) / np.linalg.norm(t)
             for j in range(n)]
        j = int(np.argmin(d))
        assert d[j] < 1e-4, (seed, d)
        assert float(res.cost[j]) <= cv_cost(X, x, K, R, t) * (1 + 1e-12)


@pytest.mark.parametrize("family", ["minimal", "planar", "random", "face"])
def test_solutions_are_fixed_points_and_the_first_is_solve_pnps(family):
    """Each converged solution is a minimum solve_pnp stays at when started there, and
    solution 0 is at or below solve_pnp's own cost."""
    rng = np.random.default_rng(17)
    for _ in range(4):
        p = make_problem(family, rng, n=300 if family == "face" else None)
        X, x, K = torch.tensor(p.X), torch.tensor(p.x), torch.tensor(p.K)
        res = pyfacepnp.solve_pnp_minima(X, x, K, num_solutions=8)
        best = pyfacepnp.solve_pnp(X, x, K)
        assert float(res.cost[0]) <= float(best.cost) * (1 + 1e-12) + 1e-15
        for j in range(int(res.num_solutions)):
            if int(res.status[j]) != 0:
                continue
            again = pyfacepnp.solve_pnp(X, x, K, init=(res.R[j], res.t[j]))
            assert int(again.status) == 0
            torch.testing.assert_close(again.R, res.R[j], rtol=0, atol=1e-9)
            torch.testing.assert_close(again.t, res.t[j], rtol=1e-9, atol=1e-12)


def test_gradcheck_of_the_second_minimum():
    X, x, K = far_planar(3, n=7)
    last = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)

    def fn(X, x, Ktop):
        res = pyfacepnp.solve_pnp_minima(X, x, torch.cat([Ktop, last]), num_solutions=2)
        assert res.status.tolist() == [0, 0]
        return res.R, res.t, res.cost

    inputs = tuple(torch.tensor(a).requires_grad_() for a in (X, x, K[:2]))
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_batched_statuses_empty_slots_and_errors():
    """An invalid problem has no solution (all slots INVALID_INPUT); slots past the count are
    DEGENERATE with R = I, t = 0; nothing reaches a neighbour; empty slots get no gradient."""
    probs = [far_planar(s, n=8) for s in range(3)]
    X = torch.tensor(np.stack([p[0] for p in probs])).requires_grad_()
    x = torch.tensor(np.stack([p[1] for p in probs]))
    K = torch.tensor(np.stack([p[2] for p in probs]))
    x[1, 2, 0] = math.nan
    res = pyfacepnp.solve_pnp_minima(X, x, K, num_solutions=8)
    assert int(res.num_solutions[1]) == 0 and (res.status[1] == 3).all()
    for b in (0, 2):
        n = int(res.num_solutions[b])
        assert 2 <= n < 8 and (res.status[b, n:] == 2).all()
        assert torch.equal(res.R[b, n:], torch.eye(3, dtype=F64).expand(8 - n, 3, 3))
        assert (res.t[b, n:] == 0).all() and (res.cost[b, n:] == 0).all()
        alone = pyfacepnp.solve_pnp_minima(X[b], x[b], K[b], num_solutions=8)
        assert torch.equal(alone.R, res.R[b]) and torch.equal(alone.cost, res.cost[b])
    res.t[:, 0].sum().backward()
    assert (X.grad[1] == 0).all() and (X.grad[0] != 0).any()
    for k in (0, 9):
        with pytest.raises(ValueError, match="num_solutions"):
            pyfacepnp.solve_pnp_minima(X.detach()[0], x[0], K[0], num_solutions=k)


def test_distortion_and_float32():
    from test_pnp_distortion import distorted_problem

    p, D = distorted_problem("planar", 5, "pinhole", 5, n=8)
    args = [torch.tensor(a) for a in (p.X, p.x, p.K, D)]
    r64 = pyfacepnp.solve_pnp_minima(*args[:3], distortion=args[3])
    r32 = pyfacepnp.solve_pnp_minima(*(a.float() for a in args[:3]), distortion=args[3].float())
    assert torch.equal(r64.num_solutions, r32.num_solutions) and torch.equal(r64.status, r32.status)
    ok = r64.converged
    torch.testing.assert_close(r32.t[ok].double(), r64.t[ok], rtol=1e-4, atol=1e-5)
    best = pyfacepnp.solve_pnp(*args[:3], distortion=args[3])
    assert float(r64.cost[0]) <= float(best.cost) * (1 + 1e-12)


def test_compiles_and_traces():
    X, x, K = (torch.tensor(a) for a in far_planar(1))
    fn = torch.compile(lambda X, x, K: pyfacepnp.solve_pnp_minima(X, x, K, num_solutions=3).t,
                       fullgraph=True, backend="eager")
    torch.testing.assert_close(fn(X, x, K), pyfacepnp.solve_pnp_minima(X, x, K, num_solutions=3).t)
