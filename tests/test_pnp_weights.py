"""Weights, zero-weight padding, Huber, and the crop identity of solve_pnp."""

import numpy as np
import torch

import pyfacepnp
from pnp_problems import batch, make_problem, torch_cost


def test_zero_weight_padding_gives_exactly_the_unpadded_answer():
    rng = np.random.default_rng(0)
    probs = [make_problem("random", rng, n=n) for n in (7, 12, 20)]
    nmax = 24
    X = torch.zeros(3, nmax, 3, dtype=torch.float64)
    x = torch.zeros(3, nmax, 2, dtype=torch.float64)
    w = torch.zeros(3, nmax, dtype=torch.float64)
    K = torch.tensor(np.stack([p.K for p in probs]))
    for i, p in enumerate(probs):
        n = len(p.X)
        X[i, :n], x[i, :n], w[i, :n] = torch.tensor(p.X), torch.tensor(p.x), 1.0
        X[i, n:] = torch.nan if i == 1 else -5.0  # padding may hold anything, even behind the camera
        x[i, n:] = torch.inf if i == 1 else 1e6
    Xp, xp = X.clone().requires_grad_(), x.clone().requires_grad_()
    padded = pyfacepnp.solve_pnp(Xp, xp, K, w)
    (padded.R.sum() + padded.t.sum()).backward()
    for i, p in enumerate(probs):
        n = len(p.X)
        Xi = torch.tensor(p.X).requires_grad_()
        xi = torch.tensor(p.x).requires_grad_()
        one = pyfacepnp.solve_pnp(Xi, xi, K[i])
        (one.R.sum() + one.t.sum()).backward()
        assert torch.equal(one.R, padded.R[i]) and torch.equal(one.t, padded.t[i])
        assert torch.equal(one.cost, padded.cost[i]) and int(padded.status[i]) == 0
        assert torch.equal(Xi.grad, Xp.grad[i, :n]) and torch.equal(xi.grad, xp.grad[i, :n])
        assert (Xp.grad[i, n:] == 0).all() and (xp.grad[i, n:] == 0).all()


def test_per_axis_weights_minimise_the_per_axis_objective():
    rng = np.random.default_rng(1)
    p = make_problem("random", rng, n=15, noise=3.0)
    X, x, K = batch([p])
    w = torch.tensor(rng.uniform(0.1, 3.0, size=(1, 15, 2)))
    res = pyfacepnp.solve_pnp(X, x, K, w)
    assert int(res.status[0]) == 0
    # The gradient of the per-axis objective vanishes at the returned pose ...
    R = res.R.clone().requires_grad_()
    t = res.t.clone().requires_grad_()
    torch_cost(R, t, X, x, K, w).sum().backward()
    # (dE/dR projected on so(3), dE/dt)
    M = R.grad[0] @ res.R[0].T
    g = torch.stack([M[2, 1] - M[1, 2], M[0, 2] - M[2, 0], M[1, 0] - M[0, 1]])
    assert g.abs().max() < 1e-6 and t.grad.abs().max() < 1e-6
    # ... and per-axis weighting really changes the answer compared with their mean.
    mean_w = pyfacepnp.solve_pnp(X, x, K, w.mean(-1))
    assert (mean_w.t - res.t).abs().max() > 1e-6
    # (N,) weights equal (N,2) weights repeated on both axes.
    wp = w[..., 0]
    a = pyfacepnp.solve_pnp(X, x, K, wp)
    b = pyfacepnp.solve_pnp(X, x, K, wp.unsqueeze(-1).expand(1, 15, 2))
    assert torch.equal(a.R, b.R) and torch.equal(a.t, b.t)


def test_huber_recovers_inlier_pose_with_20_percent_gross_outliers():
    """With 20 % gross outliers, Huber lands next to the pose fitted to the inliers alone,
    where plain least squares is pulled far away."""
    rng = np.random.default_rng(2)
    for _ in range(20):
        p = make_problem("random", rng, n=100, noise=1.0)
        x = p.x.copy()
        out = rng.choice(100, size=20, replace=False)
        x[out] += rng.uniform(30, 150, size=(20, 2)) * rng.choice([-1, 1], size=(20, 2))
        X_, _, K_ = batch([p])
        x_ = torch.tensor(x)[None]
        inlier_w = torch.ones(1, 100, dtype=torch.float64)
        inlier_w[0, out] = 0
        inl = pyfacepnp.solve_pnp(X_, x_, K_, inlier_w)
        l2 = pyfacepnp.solve_pnp(X_, x_, K_)
        hub = pyfacepnp.solve_pnp(X_, x_, K_, loss="huber", loss_scale=2.0)
        assert int(hub.status[0]) == 0 and int(inl.status[0]) == 0

        def mahalanobis(a):
            """Distance from the inlier pose in units of its own 1-pixel-noise covariance."""
            M = a.R[0] @ inl.R[0].T
            dw = torch.stack([M[2, 1] - M[1, 2], M[0, 2] - M[2, 0], M[1, 0] - M[0, 1]]) / 2
            d = torch.cat([dw, a.t[0] - inl.t[0]])
            return float(torch.sqrt(d @ torch.linalg.solve(inl.covariance[0], d)))

        # Huber stays within the inliers' own noise level (chi with 6 dof: 99.7 % < 4.5);
        # least squares is pulled tens of standard deviations away.
        assert mahalanobis(hub) < 4.5
        assert mahalanobis(l2) > 20


def _similarity(scale, angle, tx, ty):
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return torch.tensor([[c, -s, tx], [s, c, ty]], dtype=torch.float64)


def test_crop_identity_K_crop_equals_unwarping():
    """Solving on crop-space landmarks with K_crop = [A; 0 0 1] K gives the same pose as
    unwarping them with A^-1 and solving with K."""
    rng = np.random.default_rng(3)
    for i in range(10):
        p = make_problem("face", rng, n=68, noise=1.0)
        X, x, K = batch([p])
        A = _similarity(rng.uniform(0.2, 0.6), rng.uniform(-0.3, 0.3), rng.uniform(-200, 0), rng.uniform(-200, 0))[None]
        x_crop = pyfacepnp.warp_points(x, A)
        K_crop = torch.cat([A, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)], 1) @ K
        a = pyfacepnp.solve_pnp(X, x_crop, K_crop)
        back = pyfacepnp.warp_points(x_crop, pyfacepnp.invert_affine(A))
        b = pyfacepnp.solve_pnp(X, back, K)
        assert int(a.status[0]) == 0 and int(b.status[0]) == 0
        assert torch.allclose(a.R, b.R, atol=1e-9) and torch.allclose(a.t, b.t, atol=1e-10)
        # The crop-space cost is the image-space cost scaled by the similarity's scale^2.
        s2 = float(torch.det(A[0, :, :2]))
        assert abs(float(a.cost[0]) - s2 * float(b.cost[0])) < 1e-8 * float(a.cost[0])


def test_crop_identity_general_affine_noiseless():
    rng = np.random.default_rng(4)
    p = make_problem("face", rng, n=68, noise=0.0)
    X, x, K = batch([p])
    A = torch.tensor([[[0.4, 0.05, -100.0], [-0.02, 0.3, -80.0]]], dtype=torch.float64)
    K_crop = torch.cat([A, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)], 1) @ K
    a = pyfacepnp.solve_pnp(X, pyfacepnp.warp_points(x, A), K_crop)
    assert torch.allclose(a.R[0], torch.tensor(p.R), atol=1e-8)
    assert torch.allclose(a.t[0], torch.tensor(p.t), atol=1e-9)


def test_huber_from_a_robust_init_with_uniform_gross_outliers():
    """20 % of the points anywhere in the image: the least-squares initialisation cannot be
    trusted (docs/math.md), but from a RANSAC pose Huber converges to the inliers' pose."""
    import cv2

    rng = np.random.default_rng(8)
    probs = [make_problem("face", rng, n=68, noise=1.0) for _ in range(16)]
    X, x, K = batch(probs)
    out = torch.rand(16, 68, generator=torch.Generator().manual_seed(0)) < 0.2
    # Seeded: drawn from torch's global generator, the outliers depended on the tests run
    # before. Over 40 seeds of them (640 problems) the largest distance below was 4.55 on
    # one problem, as expected of a 99.7 % quantile.
    anywhere = torch.rand(16, 68, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = torch.where(out[..., None], anywhere * 800, x)
    Rs, ts = [], []
    for b in range(16):
        ok, rv, tv, _ = cv2.solvePnPRansac(X[b].numpy(), x[b].numpy(), K[b].numpy(), None)
        assert ok
        Rs.append(cv2.Rodrigues(rv)[0])
        ts.append(tv.ravel())
    init = (torch.tensor(np.stack(Rs)), torch.tensor(np.stack(ts)))
    hub = pyfacepnp.solve_pnp(X, x, K, loss="huber", loss_scale=2.0, init=init)
    inl = pyfacepnp.solve_pnp(X, x, K, (~out).double())
    assert (hub.status == 0).all() and (inl.status == 0).all()
    l2 = pyfacepnp.solve_pnp(X, x, K, init=init)

    def mahalanobis(a):
        """Distance from the inlier pose in units of its 1-pixel-noise covariance, per problem."""
        M = a.R @ inl.R.transpose(-1, -2)
        dw = torch.stack([M[:, 2, 1] - M[:, 1, 2], M[:, 0, 2] - M[:, 2, 0], M[:, 1, 0] - M[:, 0, 1]], -1) / 2
        d = torch.cat([dw, a.t - inl.t], -1)
        return torch.sqrt((d * torch.linalg.solve(inl.covariance, d)).sum(-1))

    # Huber stays within the inliers' own noise (chi with 6 dof: 99.7 % < 4.5); least
    # squares from the same start is pulled ~100 standard deviations away.
    assert mahalanobis(hub).max() < 4.5
    assert mahalanobis(l2).min() > 20
