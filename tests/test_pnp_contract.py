"""The op's contract under extreme inputs, asserted on every example (docs/api.md, "Contract"):

- a CONVERGED problem has finite R (a rotation), t, cost and covariance and, for a finite
  upstream gradient, finite gradients to every input;
- every other problem has a non-CONVERGED status, zero covariance and zero gradients;
- nothing of one problem reaches another's outputs or gradients: the good problems of a batch
  are bit-identical to being solved alone, and a shared K's gradient stays finite.

A property suite (hypothesis) places one bad problem (scaled over 1e-300..1e300, denormal,
non-finite, huge padding, bad init, extreme options) among good ones, over dtypes and layouts;
regression tests pin each case reported against the op.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pyfacepnp
from pyfacepnp import PnPStatus
from pyfacepnp.geometry.rotation import quaternion_to_matrix

F64, F32 = torch.float64, torch.float32
N = 12


def good_problem(rng, n=N):
    """A well-posed problem in float64: object points, pixels, K, ground-truth pose."""
    X = rng.uniform(-1, 1, (n, 3))
    R = quaternion_to_matrix(rng.normal(size=4))
    t = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(5, 8)])
    K = np.array([[600.0, 0, 320], [0, 620.0, 240], [0, 0, 1]])
    Xc = X @ R.T + t
    x = (Xc @ K.T)[:, :2] / Xc[:, 2:] + rng.normal(0, 0.3, (n, 2))
    return dict(X=X, x=x, K=K, w=np.ones((n, 2)), R=R, t=t)


def upstream(B, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=F64).to(dtype) for s in ((B, 3, 3), (B, 3), (B,))]


def solve_with_grads(X, x, K, w, init=None, up=None, **opts):
    """Forward, then the backward of an upstream gradient (default: random, unit scale)."""
    X, x, K, w = (a.detach().clone().requires_grad_() for a in (X, x, K, w))
    res = pyfacepnp.solve_pnp(X, x, K, w, init=init, **opts)
    gR, gt, gc = up if up is not None else upstream(X.shape[0], X.dtype)
    ((res.R * gR).sum() + (res.t * gt).sum() + (res.cost * gc).sum()).backward()
    return res, (X.grad, x.grad, K.grad, w.grad)


def assert_contract(res, grads, dtype, grads64=None):
    """``grads64``: for float32 inputs, the gradients of the same values solved in float64.
    A float32 problem is solved in float64, so its gradients are those rounded to float32: an
    entry is finite wherever the float64 one fits float32 (a gradient beyond float32's range
    becomes +-inf, as any float32 arithmetic would; never NaN)."""
    conv = res.converged
    for name, field in (("R", res.R), ("t", res.t), ("cost", res.cost), ("covariance", res.covariance)):
        assert torch.isfinite(field[conv]).all(), name
    if conv.any():
        R = res.R[conv].double()
        err = (R @ R.transpose(-1, -2) - torch.eye(3, dtype=F64)).abs().max()
        assert err < (1e-12 if dtype == F64 else 1e-5), err
    assert (res.covariance[~conv] == 0).all()
    names = ("points3d", "points2d", "K", "weights")
    for i, (name, g) in enumerate(zip(names, grads)):
        assert not torch.isnan(g).any(), name
        if grads64 is None:
            assert torch.isfinite(g).all(), name
        else:
            ref = grads64[i][conv].to(F32)  # rounding of the float64 gradient
            assert torch.equal(g[conv], ref), name
            assert (torch.isfinite(g[conv]) | (grads64[i][conv].abs() > 3.4028234e38)).all(), name
        assert (g[~conv] == 0).all(), name


# --- the property suite ---------------------------------------------------------------

BAD_KINDS = ["scale_scene", "scale_points", "scale_weights", "scale_K", "denormal", "nonfinite",
             "huge_padding", "nan_padding", "collinear", "mirrored", "none"]


def make_bad(kind, p, rng, dtype, exponent):
    """Turn a good problem (float64 numpy) into an extreme one of the given kind."""
    p = {k: v.copy() for k, v in p.items()}
    s = 10.0 ** exponent
    if kind == "scale_scene":  # the same image of a scene scaled by s
        p["X"] *= s
    elif kind == "scale_points":
        p["X"] = p["X"] * s
        p["x"] = p["x"] * (1.0 if s < 1 else s)
    elif kind == "scale_weights":
        p["w"] *= s
    elif kind == "scale_K":
        p["K"][:2] *= s
    elif kind == "denormal":
        tiny = np.finfo(np.float32 if dtype == F32 else np.float64).tiny
        p["X"] = p["X"] * tiny * 0.25
    elif kind == "nonfinite":
        field = ["X", "x", "w", "K"][rng.integers(4)]
        flat = p[field].reshape(-1)
        flat[rng.integers(flat.size - (3 if field == "K" else 0))] = [math.nan, math.inf, -math.inf][rng.integers(3)]
    elif kind in ("huge_padding", "nan_padding"):
        pad = rng.choice(N, size=4, replace=False)
        p["w"][pad] = 0.0
        big = 1e300 if dtype == F64 else 3e38
        value = math.nan if kind == "nan_padding" else big * rng.choice([-1.0, 1.0])
        p["X"][pad[:2]] = value
        p["x"][pad[2:]] = value
    elif kind == "collinear":
        p["X"] = np.outer(np.linspace(-1, 1, N), rng.normal(size=3))
    elif kind == "mirrored":  # -X under (R, -t) lies behind the camera and fits the pixels:
        # the answer is a front-facing minimum (or another status), never a crash
        p["X"] = -p["X"]
    return p


def to_tensors(problems, dtype):
    def stack(key):
        return torch.tensor(np.stack([p[key] for p in problems])).to(dtype)

    return stack("X"), stack("x"), stack("K"), stack("w")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([F64, F32]),
    kind=st.sampled_from(BAD_KINDS),
    exponent=st.floats(-300, 300),
    position=st.integers(0, 3),
    loss=st.sampled_from(["l2", "huber"]),
    huber_exp=st.floats(-150, 150),
    max_iterations=st.sampled_from([1, 3, 100]),
    init_kind=st.sampled_from(["none", "truth", "scaled", "random", "behind"]),
    layout=st.sampled_from(["contiguous", "noncontiguous", "shared_K"]),
)
def test_contract_holds_and_bad_problem_stays_in_its_place(seed, dtype, kind, exponent, position,
                                                          loss, huber_exp, max_iterations,
                                                          init_kind, layout):
    rng = np.random.default_rng(seed)
    B = 4
    problems = [good_problem(rng) for _ in range(B)]
    if dtype == F32:
        exponent = float(np.clip(exponent, -45, 38))
    problems[position] = make_bad(kind, problems[position], rng, dtype, exponent)
    X, x, K, w = to_tensors(problems, dtype)
    opts = dict(loss=loss, loss_scale=10.0 ** float(np.clip(huber_exp, -150, 150)),
                max_iterations=max_iterations)
    init = None
    if init_kind != "none":
        R0 = torch.tensor(np.stack([p["R"] for p in problems])).to(dtype)
        t0 = torch.tensor(np.stack([p["t"] for p in problems])).to(dtype)
        if init_kind == "scaled":
            R0[position] *= float(rng.uniform(0.1, 3.0))
        elif init_kind == "random":
            R0[position] = torch.tensor(rng.normal(size=(3, 3))).to(dtype)
        elif init_kind == "behind":
            t0[position, 2] = -t0[position, 2]
        init = (R0, t0)
    if layout == "noncontiguous":  # the same values in views with strides of their own
        X = X.transpose(-1, -2).contiguous().transpose(-1, -2)
        x = torch.stack([x, x], -1)[..., 0]
        assert not X.is_contiguous() and not x.is_contiguous()
    res, grads = solve_with_grads(X, x, K, w, init=init, **opts)
    event(f"{kind}: {PnPStatus(int(res.status[position])).name}")
    grads64 = None
    if dtype == F32:  # the same values in float64: the float32 gradient is its rounding
        up64 = [u.double() for u in upstream(B, dtype)]
        init64 = None if init is None else tuple(a.double() for a in init)
        res64, grads64 = solve_with_grads(X.double(), x.double(), K.double(), w.double(),
                                          init=init64, up=up64, **opts)
        conv = res.converged
        assert bool(res64.converged[conv].all())
        assert torch.equal(res.R[conv], res64.R[conv].float())
        assert torch.equal(res.t[conv], res64.t[conv].float())
    assert_contract(res, grads, dtype, grads64)

    if layout == "shared_K":  # one K for the batch (stride 0): its gradient sums every problem
        Kb = K[(position + 1) % B]  # a good problem's K, for every problem
        Ks = Kb.detach().clone().requires_grad_()
        Xs, xs, ws = (a.detach().clone().requires_grad_() for a in (X, x, w))
        r = pyfacepnp.solve_pnp(Xs, xs, Ks, ws, init=init, **opts)
        gR, gt, gc = upstream(B, dtype)
        ((r.R * gR).sum() + (r.t * gt).sum() + (r.cost * gc).sum()).backward()
        good = torch.arange(B) != position
        assert r.status[good].tolist() == res.status[good].tolist()
        assert not torch.isnan(Ks.grad).any()
        if dtype == F64 or bool(torch.isfinite(grads[2]).all()):
            assert torch.isfinite(Ks.grad).all()

    # The good problems, solved alone, give bit-identical outputs and gradients.
    up = upstream(B, dtype)
    for b in range(B):
        if b == position:
            continue
        sl = slice(b, b + 1)
        init_b = None if init is None else (init[0][sl], init[1][sl])
        alone, galone = solve_with_grads(X[sl], x[sl], K[sl], w[sl], init=init_b,
                                         up=[u[sl] for u in up], **opts)
        for f in PNP_FIELDS:
            assert torch.equal(getattr(res, f)[sl], getattr(alone, f)), (f, b)
        for g_batch, g_alone in zip(grads, galone):
            assert torch.equal(g_batch[sl], g_alone), b


PNP_FIELDS = ("R", "t", "cost", "iterations", "status", "covariance")


# --- regressions: each case reported against the op ---------------------------------------

def reported_setup():
    D = F64
    g = torch.Generator().manual_seed(0)
    X = torch.rand(3, 12, 3, generator=g, dtype=D) * 2 - 1
    K = torch.tensor([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]], dtype=D)
    Xc = X + torch.tensor([0.1, -0.2, 6.0], dtype=D)
    x = (Xc @ K.T)[..., :2] / Xc[..., 2:] + 0.3 * torch.randn(3, 12, 2, generator=g, dtype=D)
    return X, x, K


def test_float32_overflow_is_invalid_and_does_not_reach_a_shared_K():
    X, x, K = reported_setup()
    Xf = X.float().clone()
    Xf[1] *= 1e30
    Kf = K.float().requires_grad_()
    r = pyfacepnp.solve_pnp(Xf, x.float(), Kf)
    r.t[[0, 2]].sum().backward()
    assert r.status.tolist() == [0, PnPStatus.INVALID_INPUT, 0]
    assert torch.isfinite(Kf.grad).all() and torch.isfinite(r.covariance).all()
    assert torch.equal(r.R[1], torch.eye(3)) and (r.t[1] == 0).all() and float(r.cost[1].detach()) == 0


@pytest.mark.parametrize("case", ["weights_flt_max", "scene_above_flt_max"])
def test_float32_outputs_beyond_float32_are_invalid(case):
    X, x, K = reported_setup()
    w = torch.ones(3, 12)
    Xf = X.float()
    if case == "weights_flt_max":  # the cost, 1/2 sum w r^2, exceeds float32's maximum
        w[1] = 3.4e38
        x = x.clone()
        x[1] += 3.0 * torch.randn(12, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    else:
        Xf = (X * 1e38).float()
        Xf[[0, 2]] = X[[0, 2]].float()
    r = pyfacepnp.solve_pnp(Xf, x.float(), K.float(), w)
    assert r.status.tolist() == [0, PnPStatus.INVALID_INPUT, 0]
    assert torch.isfinite(r.cost).all() and torch.isfinite(r.t).all()


def test_float32_gradient_is_that_of_the_float64_solution():
    """The backward works from the float64 pose and covariance, not the float32 outputs."""
    X, x, K = reported_setup()
    g64 = [a.grad for a in _grads(X, x, K, F64)]
    g32 = [a.grad for a in _grads(X, x, K, F32)]
    for a, b in zip(g32, g64):
        assert float((a.double() - b).abs().max() / b.abs().max()) < 1e-5


def _grads(X, x, K, dtype):
    X, x, K = (a.detach().to(dtype).clone().requires_grad_() for a in (X, x, K))
    r = pyfacepnp.solve_pnp(X, x, K)
    assert bool(r.converged.all())
    (r.R.sum() + r.t.sum()).backward()
    return X, x, K


@pytest.mark.parametrize("scale", [1e105, 1e120, 1e150])
def test_float64_huge_scene_has_finite_gradients(scale):
    X, x, K = reported_setup()
    Kg = K.clone().requires_grad_()
    Xg = (X[0] * scale).requires_grad_()
    r = pyfacepnp.solve_pnp(Xg, x[0], Kg)
    assert int(r.status) == PnPStatus.CONVERGED
    (r.t.sum() + r.R.sum()).backward()
    assert torch.isfinite(Kg.grad).all() and torch.isfinite(Xg.grad).all()
    # The solution scales with the scene: t / scale is the unit-scale answer.
    ref = pyfacepnp.solve_pnp(X[0], x[0], K)
    assert torch.allclose(r.t / scale, ref.t, rtol=1e-9)


def test_zero_weight_padding_with_huge_coordinates_does_not_poison_gradients():
    X, x, K = reported_setup()
    X3, x3 = X.clone(), x.clone()
    X3[1, :2] = 1e300
    x3[1, 2:4] = -1e300
    w = torch.ones(3, 12, dtype=F64)
    w[1, :4] = 0
    Kg, Xg, xg, wg = (a.clone().requires_grad_() for a in (K, X3, x3, w))
    r = pyfacepnp.solve_pnp(Xg, xg, Kg, wg)
    (r.t.sum() + r.R.sum() + r.cost.sum()).backward()
    assert r.status.tolist() == [0, 0, 0]
    for g in (Kg.grad, Xg.grad, xg.grad, wg.grad):
        assert torch.isfinite(g).all()
    assert (Xg.grad[1, :4] == 0).all() and (xg.grad[1, :4] == 0).all() and (wg.grad[1, :4] == 0).all()
    # ... and the answer is that of the problem without those points.
    ref = pyfacepnp.solve_pnp(X[1, 4:], x[1, 4:], K)
    assert torch.allclose(r.t[1], ref.t, atol=1e-12) and torch.allclose(r.R[1], ref.R, atol=1e-12)


def test_per_axis_zero_weight_coordinate_may_hold_anything():
    X, x, K = reported_setup()
    x2 = x[0].clone()
    w = torch.ones(12, 2, dtype=F64)
    w[3, 0] = 0
    ref = pyfacepnp.solve_pnp(X[0], x2, K, w)
    for value in (math.nan, 1e308, -math.inf):
        x2[3, 0] = value
        xg = x2.clone().requires_grad_()
        r = pyfacepnp.solve_pnp(X[0], xg, K, w)
        assert int(r.status) == 0 and torch.equal(r.t, ref.t)
        r.t.sum().backward()
        assert torch.isfinite(xg.grad).all() and float(xg.grad[3, 0]) == 0


@pytest.mark.parametrize("scale", [2.0, 0.5, 3.0, 1.01])
def test_scaled_init_rotation_is_invalid(scale):
    X, x, K = reported_setup()
    ref = pyfacepnp.solve_pnp(X[0], x[0], K)
    r = pyfacepnp.solve_pnp(X[0], x[0], K, init=(scale * torch.eye(3, dtype=F64), ref.t))
    assert int(r.status) == PnPStatus.INVALID_INPUT


def test_init_rotation_rounded_to_float32_is_accepted_and_result_is_a_rotation():
    X, x, K = reported_setup()
    ref = pyfacepnp.solve_pnp(X[0], x[0], K)
    R0 = ref.R.float().double() * (1 + 1e-6)  # rounding and a tiny scale error
    r = pyfacepnp.solve_pnp(X[0], x[0], K, init=(R0, ref.t))
    assert int(r.status) == 0
    assert float((r.R @ r.R.T - torch.eye(3, dtype=F64)).abs().max()) < 1e-14
    assert torch.allclose(r.t, ref.t, atol=1e-10)


@pytest.mark.parametrize("delta, err, match", [
    (1e-320, ValueError, r"huber_delta must be in \[1e-150, 1e\+150\], got 1e-320"),
    (math.inf, ValueError, r"huber_delta must be in \[1e-150, 1e\+150\], got inf"),
    (math.nan, ValueError, r"huber_delta must be positive, got nan"),
    ("2", TypeError, r"huber_delta must be a real number, got str '2'"),
    (True, TypeError, r"huber_delta must be a real number, got bool"),
])
def test_huber_delta_outside_its_range_is_a_clear_error(delta, err, match):
    """The deprecated alias's errors name it."""
    X, x, K = reported_setup()
    with pytest.warns(DeprecationWarning), pytest.raises(err, match=match):
        pyfacepnp.solve_pnp(X, x, K, loss="huber", huber_delta=delta)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(tolerance=None), TypeError, r"tolerance must be a real number, got NoneType None"),
    (dict(tolerance=1.0), ValueError, r"tolerance must be in \(0, 1\), got 1.0"),
    (dict(max_iterations=100001), ValueError, r"max_iterations must be in \[1, 100000\], got 100001"),
    (dict(max_iterations=2**63), ValueError, r"max_iterations must be in \[1, 100000\], got 9223372036854775808"),
    (dict(max_iterations=True), TypeError, r"max_iterations must be an int, got bool True"),
    (dict(max_iterations=10.0), TypeError, r"max_iterations must be an int, got float 10.0"),
    (dict(loss=None), ValueError, r"loss must be one of \('l2', 'huber', 'cauchy', 'geman_mcclure'\), got None"),
    (dict(loss_scale="1"), TypeError, r"loss_scale must be a real number, got str '1'"),
    (dict(loss_scale=1e151), ValueError, r"loss_scale must be in \[1e-150, 1e\+150\], got 1e\+151"),
    (dict(loss_scale=1.0, huber_delta=1.0), ValueError, r"give loss_scale or its deprecated alias huber_delta, not both"),
])
def test_option_errors_name_the_argument_and_value(kwargs, err, match):
    X, x, K = reported_setup()
    with pytest.raises(err, match=match):
        pyfacepnp.solve_pnp(X, x, K, **kwargs)


def test_huber_delta_is_a_deprecated_alias_of_loss_scale():
    X, x, K = reported_setup()
    with pytest.warns(DeprecationWarning, match="huber_delta is deprecated: use loss_scale"):
        old = pyfacepnp.solve_pnp(X, x, K, loss="huber", huber_delta=0.5)
    new = pyfacepnp.solve_pnp(X, x, K, loss="huber", loss_scale=0.5)
    assert torch.equal(old.R, new.R) and torch.equal(old.t, new.t) and torch.equal(old.cost, new.cost)


def test_numpy_integer_options_are_accepted():
    X, x, K = reported_setup()
    r = pyfacepnp.solve_pnp(X, x, K, max_iterations=np.int64(50), tolerance=np.float64(1e-10))
    assert bool(r.converged.all())


def test_non_converged_problems_have_zero_covariance():
    """DEGENERATE (identical and collinear points) and MAX_ITERATIONS: zero covariance."""
    rng = np.random.default_rng(5)
    problems = [good_problem(rng) for _ in range(6)]
    problems[0]["X"] = np.repeat(problems[0]["X"][:1], len(problems[0]["X"]), 0)
    p = problems[1]  # collinear points seen exactly: the rotation about their line is free
    p["X"] = np.outer(np.linspace(-1, 1, N), rng.normal(size=3))
    Xc = p["X"] @ p["R"].T + p["t"]
    p["x"] = (Xc @ p["K"].T)[:, :2] / Xc[:, 2:]
    X, x, K, w = to_tensors(problems, F64)
    r = pyfacepnp.solve_pnp(X, x, K, w)
    assert int(r.status[0]) == PnPStatus.DEGENERATE and int(r.status[1]) == PnPStatus.DEGENERATE
    r1 = pyfacepnp.solve_pnp(X, x, K, w, max_iterations=1)
    for res in (r, r1):
        bad = ~res.converged
        assert bad.any() and (res.covariance[bad] == 0).all()
    assert (r1.status[2:] == PnPStatus.MAX_ITERATIONS).all()
