"""Property tests (hypothesis) of solve_pnp over shapes, dtypes, poses and noise."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pyfacepnp
from pnp_problems import cost_np, opencv_best, project, random_rotation, Problem


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(4, 40))
    planar = draw(st.booleans())
    X = rng.uniform(-1, 1, size=(n, 3))
    if planar:
        X[:, 2] = 0.0
    R = random_rotation(rng, max_angle=draw(st.floats(0.0, math.pi)))
    depth = draw(st.floats(3.0, 30.0))
    t = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), depth]) - R @ X.mean(0)
    f = draw(st.floats(300.0, 2000.0))
    K = np.array([[f, 0, 320], [0, f, 240], [0, 0, 1.0]])
    noise = draw(st.sampled_from([0.0, 0.5, 2.0]))
    x = project(X, R, t, K) + noise * rng.normal(size=(n, 2))
    return Problem(X, x, K, R, t), noise


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from([torch.float32, torch.float64]))
def test_solution_is_optimal_and_well_formed(prob, dtype):
    p, noise = prob
    X, x, K = (torch.tensor(a, dtype=dtype) for a in (p.X, p.x, p.K))
    res = pyfacepnp.solve_pnp(X, x, K)
    assert res.R.dtype == dtype and res.R.shape == (3, 3) and res.status.shape == ()
    assert int(res.status) == pyfacepnp.PnPStatus.CONVERGED
    R, t = res.R.double().numpy(), res.t.double().numpy()
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-5) and np.linalg.det(R) > 0
    assert np.all((p.X @ R.T + t)[:, 2] > 0)
    if dtype == torch.float64:
        # float64: never worse than OpenCV's best optimum.
        cv = opencv_best(p)
        assert cost_np(p.X, p.x, p.K, R, t) <= cv * (1 + 1e-6) + 1e-12
        if noise == 0.0:
            assert np.abs(R - p.R).max() < 1e-7


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=0, max_size=3), st.integers(4, 12), st.booleans())
def test_batch_shapes(batch, n, per_axis):
    g = torch.Generator().manual_seed(n)
    X = torch.randn(*batch, n, 3, dtype=torch.float64, generator=g)
    X[..., 2] += 8.0
    K = torch.tensor([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]], dtype=torch.float64)
    x = (X @ K.T)[..., :2] / X[..., 2:]
    w = torch.rand(*batch, n, *((2,) if per_axis else ()), dtype=torch.float64, generator=g) + 0.1
    res = pyfacepnp.solve_pnp(X, x, K, w)
    assert res.R.shape == (*batch, 3, 3) and res.cost.shape == tuple(batch)
    assert (res.status == 0).all()
    # Points were given in the camera frame: the pose is the identity.
    assert torch.allclose(res.R, torch.eye(3, dtype=torch.float64).expand_as(res.R), atol=1e-8)
    assert res.t.abs().max() < 1e-7
