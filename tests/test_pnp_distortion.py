"""solve_pnp and solve_pnp_ransac with lens distortion: OpenCV's models (4, 5, 8, 12
coefficients, fisheye) against OpenCV itself, float64 gradcheck to every input including the
coefficients, and the contract at the edges (bad coefficients, shapes, dtypes)."""

import math

import cv2
import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import pyfacepnp
from pnp_problems import FAMILIES, make_problem

# Realistic lenses: a barrel lens with OpenCV's terms up to each length, and a fisheye.
RADTAN = [-0.28, 0.07, 1e-3, -5e-4, -0.01, 0.02, 0.003, 0.001, 1e-3, -1e-3, 5e-4, 2e-4]
FISHEYE = [-0.01, 0.02, -0.005, 0.001]
LENSES = [("pinhole", 4), ("pinhole", 5), ("pinhole", 8), ("pinhole", 12), ("fisheye", 4)]


def coefficients(model, n):
    return np.array(FISHEYE if model == "fisheye" else RADTAN[:n])


def cv_project(X, R, t, K, D, model):
    rvec = cv2.Rodrigues(np.asarray(R, dtype=np.float64))[0]
    t = np.asarray(t, dtype=np.float64).reshape(3, 1)
    if model == "fisheye":
        u, _ = cv2.fisheye.projectPoints(np.ascontiguousarray(X)[:, None], rvec, t, K, D)
    else:
        u, _ = cv2.projectPoints(np.ascontiguousarray(X), rvec, t, K, D)
    return u.reshape(-1, 2)


def cv_cost(p, D, model, R, t):
    return 0.5 * float(((cv_project(p.X, R, t, p.K, D, model) - p.x) ** 2).sum())


def distorted_problem(family, seed, model, n_coeffs, noise=0.5, n=None):
    """A problem of the family whose pixels are OpenCV's distorted projection, plus noise."""
    rng = np.random.default_rng(seed)
    p = make_problem(family, rng, n=n, noise=0.0)
    D = coefficients(model, n_coeffs)
    p.x = cv_project(p.X, p.R, p.t, p.K, D, model) + noise * rng.normal(size=p.x.shape)
    return p, D


def opencv_best(p, D, model):
    """OpenCV's best optimum: SQPnP on undistorted points (and ITERATIVE with the lens) refined
    by solvePnPRefineLM with the lens; for the fisheye, cv2.fisheye.solvePnP (no refiner)."""
    X, x = np.ascontiguousarray(p.X), np.ascontiguousarray(p.x)
    best = math.inf
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 200, 1e-15)
    for flag in (cv2.SOLVEPNP_SQPNP, cv2.SOLVEPNP_ITERATIVE):
        try:
            if model == "fisheye":
                ok, rv, tv = cv2.fisheye.solvePnP(X[:, None], x[:, None], p.K, D, flags=flag)
            else:
                xu = cv2.undistortPoints(x[:, None], p.K, D, P=p.K).reshape(-1, 2)
                start = (xu, None) if flag == cv2.SOLVEPNP_SQPNP else (x, D)
                ok, rv, tv = cv2.solvePnP(X, start[0], p.K, start[1], flags=flag)
                if ok:
                    rv, tv = cv2.solvePnPRefineLM(X, x, p.K, D, rv, tv, criteria=crit)
        except cv2.error:
            continue
        R = cv2.Rodrigues(rv)[0]
        if ok and np.all((X @ R.T + tv.ravel())[:, 2] > 0):
            best = min(best, cv_cost(p, D, model, R, tv.ravel()))
    return best


def solve(p, D, model, dtype=torch.float64, **kw):
    t = lambda a: torch.tensor(np.asarray(a), dtype=dtype)  # noqa: E731
    return pyfacepnp.solve_pnp(t(p.X), t(p.x), t(p.K), distortion=t(D), camera_model=model, **kw)


@pytest.mark.parametrize("model,n_coeffs", LENSES)
@pytest.mark.parametrize("family", FAMILIES)
def test_optimum_at_least_opencv_best(family, model, n_coeffs):
    """On every family and lens: CONVERGED, a cost at or below OpenCV's best x (1 + 1e-6),
    and that cost is OpenCV's own projection's at our pose (the models agree)."""
    for seed in range(3):
        n = 300 if family == "face" else None
        p, D = distorted_problem(family, 7 * seed + len(family), model, n_coeffs, n=n)
        res = solve(p, D, model)
        assert int(res.status) == 0, (family, seed, res.status)
        ours = float(res.cost)
        assert ours == pytest.approx(cv_cost(p, D, model, res.R.numpy(), res.t.numpy()), rel=1e-9)
        best = opencv_best(p, D, model)
        assert ours <= best * (1 + 1e-6) + 1e-12, (family, seed, ours, best)


@pytest.mark.parametrize("model,n_coeffs", LENSES)
def test_noise_free_pose_recovered(model, n_coeffs):
    p, D = distorted_problem("random", 3, model, n_coeffs, noise=0.0)
    res = solve(p, D, model)
    assert int(res.status) == 0
    assert np.abs(res.R.numpy() - p.R).max() < 1e-9
    assert np.abs(res.t.numpy() - p.t).max() < 1e-9 * np.linalg.norm(p.t)


def _check(fn, inputs):
    inputs = tuple(torch.tensor(np.asarray(a), dtype=torch.float64).requires_grad_() for a in inputs)
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("loss", ["l2", "huber", "cauchy"])
@pytest.mark.parametrize("model,n_coeffs", LENSES)
def test_gradcheck_every_input(model, n_coeffs, loss):
    """float64 gradcheck of R, t and cost w.r.t. points, pixels, K rows 0-1 (skew included),
    weights and the lens coefficients, against finite differences of the solver itself."""
    for seed in range(2):
        rng = np.random.default_rng(100 + seed)
        p, D = distorted_problem("random", 100 + seed, model, n_coeffs, noise=2.0, n=8 + 3 * seed)
        p.K[0, 1] = 0.7  # a skewed K: its gradient too
        w = rng.uniform(0.5, 1.5, size=(len(p.X), 2))
        last = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)

        def fn(X, x, Ktop, w, D):
            K = torch.cat([Ktop, last], 0)
            res = pyfacepnp.solve_pnp(X, x, K, w, loss=loss, loss_scale=3.0, tolerance=1e-14,
                                      distortion=D, camera_model=model)
            assert bool(res.converged), res.status
            return res.R, res.t, res.cost

        _check(fn, (p.X, p.x, p.K[:2], w, D))


@pytest.mark.parametrize("model", ["pinhole", "fisheye"])
def test_fisheye_and_radtan_near_the_axis(model):
    """Points whose normalised radius is ~0 (through the series branch of the fisheye's
    atan(r)/r) and ~0.1 (its switch): gradients stay exact there."""
    rng = np.random.default_rng(5)
    X = np.r_[[[0.0, 0.0, 0.0], [1e-9, -1e-9, 0.1]], rng.uniform(-0.6, 0.6, size=(8, 3))]
    X[2] = [0.39, 0.0, 0.0]  # ~0.1 normalised radius at depth 4
    R, t = np.eye(3), np.array([0.0, 0.0, 4.0])
    K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
    D = coefficients(model, 4 if model == "fisheye" else 12)
    x = cv_project(X, R, t, K, D, model) + rng.normal(size=(len(X), 2))

    def fn(X, x, D):
        res = pyfacepnp.solve_pnp(X, x, torch.tensor(K), distortion=D, camera_model=model,
                                  tolerance=1e-14)
        assert bool(res.converged)
        return res.R, res.t

    _check(fn, (X, x, D))


def test_float32_matches_float64_and_shared_lens_broadcasts():
    """A (D,) lens shared by a batch equals it given per problem; float32 inputs solve to the
    float64 answer and a shared lens's gradient is the sum of the per-problem ones."""
    probs = [distorted_problem("random", s, "pinhole", 5, n=20) for s in range(4)]
    X = torch.tensor(np.stack([p.X for p, _ in probs]))
    x = torch.tensor(np.stack([p.x for p, _ in probs]))
    K = torch.tensor(np.stack([p.K for p, _ in probs]))
    D = torch.tensor(probs[0][1])
    shared = D.clone().requires_grad_()
    per = D.expand(4, 5).clone().requires_grad_()
    r1 = pyfacepnp.solve_pnp(X, x, K, distortion=shared)
    r2 = pyfacepnp.solve_pnp(X, x, K, distortion=per)
    assert torch.equal(r1.R, r2.R) and torch.equal(r1.t, r2.t)
    (r1.t.sum() + r1.R.sum()).backward()
    (r2.t.sum() + r2.R.sum()).backward()
    torch.testing.assert_close(shared.grad, per.grad.sum(0), rtol=1e-12, atol=1e-12)
    r32 = pyfacepnp.solve_pnp(X.float(), x.float(), K.float(), distortion=D.float())
    assert bool(r32.converged.all())
    torch.testing.assert_close(r32.t.double(), r1.t, rtol=1e-4, atol=1e-5)
    D32 = D.float().requires_grad_()
    pyfacepnp.solve_pnp(X.float(), x.float(), K.float(), distortion=D32).t.sum().backward()
    assert torch.isfinite(D32.grad).all() and D32.grad.dtype == torch.float32


def test_without_distortion_unchanged_and_zero_lens_is_pinhole():
    """Zero coefficients are the pinhole; no coefficients runs the pinhole's own path."""
    p, _ = distorted_problem("random", 11, "pinhole", 4, n=30)
    plain = solve(p, np.zeros(4), "pinhole")
    t = lambda a: torch.tensor(a)  # noqa: E731
    none = pyfacepnp.solve_pnp(t(p.X), t(p.x), t(p.K))
    torch.testing.assert_close(plain.R, none.R, rtol=0, atol=1e-12)
    torch.testing.assert_close(plain.t, none.t, rtol=0, atol=1e-12)
    assert float(plain.cost) == pytest.approx(float(none.cost), rel=1e-10)


@pytest.mark.parametrize("model,n_coeffs", [("pinhole", 8), ("fisheye", 4)])
def test_ransac_with_distortion(model, n_coeffs):
    """LO-RANSAC on a distorted camera: 40 % outliers, the inliers found and the pose the
    same as solve_pnp's on the inliers alone; gradients reach the coefficients."""
    rng = np.random.default_rng(9)
    p, D = distorted_problem("random", 9, model, n_coeffs, n=60, noise=0.3)
    out = rng.choice(60, 24, replace=False)
    p.x[out] = rng.uniform([0, 0], [640, 480], size=(24, 2))
    t = lambda a: torch.tensor(np.asarray(a))  # noqa: E731
    Dt = t(D).requires_grad_()
    res = pyfacepnp.solve_pnp_ransac(t(p.X), t(p.x), t(p.K), threshold=3.0,
                                     distortion=Dt, camera_model=model)
    assert int(res.status) == 0
    truth = np.ones(60, bool)
    truth[out] = False
    assert (res.inliers.numpy() & ~truth).sum() <= 1 and res.inliers.numpy()[truth].all()
    w = res.inliers.to(torch.float64)
    ref = pyfacepnp.solve_pnp(t(p.X), t(p.x), t(p.K), w, distortion=t(D), camera_model=model)
    torch.testing.assert_close(res.t, ref.t, rtol=1e-9, atol=1e-12)
    res.t.sum().backward()
    assert torch.isfinite(Dt.grad).all() and Dt.grad.abs().sum() > 0


def test_bad_coefficients_are_a_status_or_a_clear_error():
    p, D = distorted_problem("random", 2, "pinhole", 5, n=12)
    t = lambda a: torch.tensor(np.asarray(a))  # noqa: E731
    X, x, K = t(p.X), t(p.x), t(p.K)
    bad = t(np.stack([D, D])).clone()
    bad[1, 0] = float("nan")
    res = pyfacepnp.solve_pnp(X, x, K, distortion=bad)  # NaN lens: its problem only
    assert res.status.tolist() == [0, 3]
    with pytest.raises(ValueError, match="4, 5, 8, 12"):
        pyfacepnp.solve_pnp(X, x, K, distortion=torch.zeros(14, dtype=torch.float64))
    with pytest.raises(ValueError, match="fisheye"):
        pyfacepnp.solve_pnp(X, x, K, distortion=torch.zeros(5, dtype=torch.float64),
                            camera_model="fisheye")
    with pytest.raises(ValueError, match="fisheye"):
        pyfacepnp.solve_pnp(X, x, K, camera_model="fisheye")
    with pytest.raises(ValueError, match="camera_model"):
        pyfacepnp.solve_pnp(X, x, K, camera_model="kannala")
    with pytest.raises((TypeError, ValueError), match="distortion"):
        pyfacepnp.solve_pnp(X, x, K, distortion=torch.zeros(4, dtype=torch.float32))
    with pytest.raises(ValueError, match="distortion"):  # a (3,) batch of lenses for 2 problems
        pyfacepnp.solve_pnp(X.expand(2, -1, -1), x, K, distortion=torch.zeros(3, 4, dtype=torch.float64))


def test_op_checks_distortion_itself():
    """The registered op checks its flattened lens arguments (callers of torch.ops too)."""
    p, D = distorted_problem("random", 2, "pinhole", 5, n=12)
    t = lambda a: torch.tensor(np.asarray(a))[None]  # noqa: E731
    X, x, K, w = t(p.X), t(p.x), t(p.K), torch.ones(1, 12, 2, dtype=torch.float64)
    op = torch.ops.pyfacepnp.solve_pnp
    with pytest.raises(RuntimeError, match="4, 5, 8 or 12"):
        op(X, x, K, w, None, None, "l2", 1.0, 100, 1e-10, None, torch.zeros(1, 6, dtype=torch.float64), 0)
    with pytest.raises(RuntimeError, match="camera_model"):
        op(X, x, K, w, None, None, "l2", 1.0, 100, 1e-10, None, t(D), 2)
    with pytest.raises(RuntimeError, match="needs its coefficients"):
        op(X, x, K, w, None, None, "l2", 1.0, 100, 1e-10, None, None, 1)
