"""The thin call path: absent weights reach the kernels as a null pointer (unit weights, read
as such), absent upstream gradients as None; both give bit-for-bit the answers of explicit
ones and zeros, on the CPU op and on the CUDA kernels' source under emulation."""

import pytest
import torch

import pyfacepnp
import pyfacepnp.ops.pnp as pnp_module
from test_cuda_emulated import emulated, emulated_solve  # noqa: F401  (fixture)
from test_cuda_emulated import pytestmark as needs_emulation
from test_cuda_pnp import family_batch
from test_ops_registration import inputs
from test_pnp_ransac import THRESHOLD, problems_with_outliers

F64 = torch.float64
OPS = torch.ops.pyfacepnp


def grads_of(fn, *tensors):
    """``fn``'s outputs and the gradients of a fixed random loss of its R, t, cost to ``tensors``."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    res = fn(*leaves)
    g = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in res[:3])
    loss.backward()
    return [o.detach() for o in res] + [a.grad for a in leaves]


def assert_identical(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_no_weights_are_unit_weights_bit_for_bit(dtype):
    X, x, K, _ = inputs(b=4, n=10, dtype=dtype)
    ones = torch.ones(4, 10, dtype=dtype)
    ref = grads_of(lambda *a: pyfacepnp.solve_pnp(*a, ones), X, x, K)
    assert_identical(grads_of(pyfacepnp.solve_pnp, X, x, K), ref)
    Xr, xr, Kr, _ = problems_with_outliers("random", 3, 20, 0.2, seed=2)
    Xr, xr, Kr = Xr.to(dtype), xr.to(dtype), Kr.to(dtype)
    ransac = lambda *a, **kw: pyfacepnp.solve_pnp_ransac(*a, threshold=THRESHOLD, **kw)  # noqa: E731
    assert_identical(grads_of(ransac, Xr, xr, Kr),
                     grads_of(lambda *a: ransac(*a, torch.ones(3, 20, dtype=dtype)), Xr, xr, Kr))
    minima = lambda *a: pyfacepnp.solve_pnp_minima(*a, num_solutions=3)  # noqa: E731
    assert_identical(grads_of(minima, X, x, K), grads_of(lambda *a: minima(*a, ones), X, x, K))


def test_backward_without_weights_or_upstream_gradients():
    X, x, K, _ = inputs()
    R, t, cost, _it, status, _cov, state = OPS.solve_pnp(X, x, K, None, None, None, "l2", 1.0, 100, 1e-10)
    gR, gt = torch.randn_like(R), torch.randn_like(t)
    ones = torch.ones_like(x)
    full = OPS.solve_pnp_backward(gR, gt, torch.zeros_like(cost), X, x, K, ones, state, status, "l2", 1.0)
    # grad_weights without weights: the gradient at unit weights.
    assert_identical(OPS.solve_pnp_backward(gR, gt, None, X, x, K, None, state, status, "l2", 1.0), full)
    none = OPS.solve_pnp_backward(None, None, None, X, x, K, None, state, status, "l2", 1.0)
    assert all(bool((g == 0).all()) for g in none)


def test_opcheck_without_weights_and_upstream_gradients():
    X, x, K, _ = inputs()
    X.requires_grad_()
    torch.library.opcheck(OPS.solve_pnp.default, (X, x, K, None, None, None, "l2", 1.0, 100, 1e-10))
    R, t, cost, _it, status, _cov, state = OPS.solve_pnp(X, x, K, None, None, None, "l2", 1.0, 100, 1e-10)
    torch.library.opcheck(OPS.solve_pnp_backward.default,
                          (torch.randn_like(R), None, None, X.detach(), x, K, None, state, status, "l2", 1.0))
    Xr, xr, Kr, _ = problems_with_outliers("random", 3, 12, 0.2, seed=4)
    torch.library.opcheck(OPS.solve_pnp_ransac.default, (Xr.requires_grad_(), xr, Kr, None, "l2", 1.0,
                                                         THRESHOLD, 0.999, 1000, 0, 100, 1e-10))
    torch.library.opcheck(OPS.solve_pnp_minima.default,
                          (X, x.clone().requires_grad_(), K, None, "l2", 1.0, 3, 100, 1e-10))


def test_batch_layouts_need_no_copy_and_keep_the_answer(monkeypatch):
    """A batch already flat reaches the op as it is (no view, no weights); a shared K gives the
    answer of its materialised copies."""
    X, x, K, _ = inputs(b=3)
    seen = []

    class Spy:
        def __getattr__(self, name):
            def call(*args):
                seen.append(args)
                return getattr(ops, name)(*args)
            return call

    ops = pnp_module.ops
    monkeypatch.setattr(pnp_module, "ops", Spy())
    pyfacepnp.solve_pnp(X, x, K)
    assert seen[0][0] is X and seen[0][1] is x and seen[0][2] is K and seen[0][3] is None
    K0 = K[0].expand(3, 3, 3).contiguous()
    assert_identical(pyfacepnp.solve_pnp(X, x, K[0]), pyfacepnp.solve_pnp(X, x, K0))


@needs_emulation
def test_emulated_cuda_kernels_read_null_weights_as_ones(emulated):  # noqa: F811
    class Absent:
        """No weights for emulated_solve: converts to itself, and points nowhere (NULL)."""
        detach = to = contiguous = lambda self, *a, **k: self
        data_ptr = lambda self: 0  # noqa: E731

    X, x, K, _ = family_batch("face", 6, 30, seed=3)
    ones = torch.ones(6, 30, 2, dtype=F64)
    for dtype in (F64, torch.float32):
        assert_identical(emulated_solve(emulated, X, x, K, Absent(), dtype),
                         emulated_solve(emulated, X, x, K, ones, dtype))
