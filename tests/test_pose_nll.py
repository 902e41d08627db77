"""pose_nll: the Laplace negative log-likelihood of a target pose; its Hessian is the op's,
and its gradient is exact (float64 gradcheck against finite differences of the whole,
solver included) for every input."""

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import pyfacepnp
from pnp_problems import make_problem
from pyfacepnp.pose_distribution import local_hessian, pose_nll

F64 = torch.float64
LAST = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)


def problem(seed, n=9, noise=2.0, family="random"):
    rng = np.random.default_rng(seed)
    p = make_problem(family, rng, n=n, noise=noise, skew=True)
    w = rng.uniform(0.5, 1.5, size=(n, 2))
    return [torch.tensor(a) for a in (p.X, p.x, p.K, w, p.R, p.t)]


@pytest.mark.parametrize("loss", ["l2", "huber", "cauchy", "geman_mcclure"])
def test_hessian_is_the_inverse_of_the_ops_covariance(loss):
    for seed in range(3):
        X, x, K, w, _, _ = problem(seed, n=12)
        res = pyfacepnp.solve_pnp(X, x, K, w, loss=loss, loss_scale=3.0)
        H = local_hessian(res.R, res.t, X, x, K, w, loss, 3.0)
        torch.testing.assert_close(H @ res.covariance, torch.eye(6, dtype=F64), atol=1e-8, rtol=0)


def test_hessian_with_a_lens():
    from test_pnp_distortion import distorted_problem

    p, D = distorted_problem("random", 4, "pinhole", 12, n=15)
    X, x, K, D = (torch.tensor(a) for a in (p.X, p.x, p.K, D))
    res = pyfacepnp.solve_pnp(X, x, K, distortion=D)
    H = local_hessian(res.R, res.t, X, x, K, distortion=D)
    torch.testing.assert_close(H @ res.covariance, torch.eye(6, dtype=F64), atol=1e-8, rtol=0)


@pytest.mark.parametrize("loss", ["l2", "huber"])
@pytest.mark.parametrize("seed", range(4))
def test_gradcheck_every_input(seed, loss):
    """The target pose off the solution by a few degrees and centimetres: the log-determinant's
    derivatives (third derivatives of the objective) and the solution's (implicit backward)."""
    X, x, K, w, R, t = problem(10 + seed)
    R_tgt = pyfacepnp.geometry.rotation.so3_exp(torch.tensor([0.03, -0.02, 0.05], dtype=F64)) @ R
    t_tgt = t + torch.tensor([0.02, -0.01, 0.05], dtype=F64)

    def fn(X, x, Ktop, w, R_tgt, t_tgt):
        nll, valid, res = pose_nll(X, x, torch.cat([Ktop, LAST]), w, R_target=R_tgt, t_target=t_tgt,
                                   loss=loss, loss_scale=3.0, tolerance=1e-14)
        assert bool(valid)
        return nll

    inputs = tuple(a.clone().requires_grad_() for a in (X, x, K[:2], w, R_tgt, t_tgt))
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_with_a_lens():
    from test_pnp_distortion import distorted_problem

    p, D = distorted_problem("random", 6, "fisheye", 4, n=9)
    X, x, K, D = (torch.tensor(a) for a in (p.X, p.x, p.K, D))
    t_tgt = torch.tensor(p.t) + 0.02

    def fn(X, D, t_tgt):
        nll, valid, res = pose_nll(X, x, K, R_target=torch.tensor(p.R), t_target=t_tgt, distortion=D,
                                   camera_model="fisheye", tolerance=1e-14)
        assert bool(valid)
        return nll

    assert gradcheck(fn, tuple(a.clone().requires_grad_() for a in (X, D, t_tgt)), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_value_batches_padding_and_statuses():
    """At the solution the NLL is -1/2 log det H + 3 log 2 pi; zero-weight padding (NaN) changes
    nothing; a problem that does not converge has nll 0 and no gradient."""
    X, x, K, w, R, t = problem(3, n=10)
    res = pyfacepnp.solve_pnp(X, x, K, w)
    nll = pose_nll(X, x, K, w, R_target=res.R, t_target=res.t).nll
    expected = 0.5 * torch.logdet(res.covariance) + 3 * math.log(2 * math.pi)
    assert float(nll.detach()) == pytest.approx(float(expected), rel=1e-9)
    Xp = torch.cat([X, torch.full((3, 3), float("nan"), dtype=F64)])
    xp = torch.cat([x, torch.zeros(3, 2, dtype=F64)])
    wp = torch.cat([w, torch.zeros(3, 2, dtype=F64)])
    Xb = torch.stack([Xp, Xp.clone()]).requires_grad_()
    xb = torch.stack([xp, xp.clone()])
    xb[1, 0, 0] = float("inf")  # an invalid problem beside a good one
    nll2, valid2, res2 = pose_nll(Xb, xb, K, wp, R_target=R, t_target=t)
    ref = pose_nll(X, x, K, w, R_target=R, t_target=t).nll
    assert res2.status.tolist() == [0, 3] and valid2.tolist() == [True, False] and float(nll2[1]) == 0.0
    assert float(nll2[0].detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    nll2.sum().backward()
    assert torch.isfinite(Xb.grad).all() and (Xb.grad[1] == 0).all() and (Xb.grad[0, 10:] == 0).all()


def test_gaussian_limit_matches_sampled_density():
    """The Laplace NLL is the exact Gaussian NLL of the linearised problem: with tiny noise the
    objective is quadratic near the solution, and -log p of a target at the solution equals
    -1/2 log det H + 3 log 2 pi (the density of N(y*, H^-1) at its mean)."""
    X, x, K, w, R, t = problem(21, n=30, noise=1e-6)
    nll, _, res = pose_nll(X, x, K, w, R_target=R, t_target=t)
    H = torch.linalg.inv(res.covariance)
    dist = torch.distributions.MultivariateNormal(torch.zeros(6, dtype=F64), precision_matrix=H)
    assert float(nll.detach()) == pytest.approx(-float(dist.log_prob(torch.zeros(6, dtype=F64))), rel=1e-6, abs=1e-6)


def test_target_behind_the_camera_is_not_valid_and_never_nan():
    """A target pose that puts a weighted point behind the camera has no defined objective:
    valid is False, nll 0, gradients zero and finite."""
    X, x, K, w, R, t = problem(8, n=10)
    t_bad = t.clone()
    t_bad[2] = -t_bad[2]
    Xg = X.clone().requires_grad_()
    nll, valid, res = pose_nll(Xg, x, K, w, R_target=torch.stack([R, R]), t_target=torch.stack([t, t_bad]))
    assert valid.tolist() == [True, False] and float(nll[1]) == 0.0 and torch.isfinite(nll).all()
    nll.sum().backward()
    assert torch.isfinite(Xg.grad).all()
