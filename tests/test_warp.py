"""warp_points / invert_affine: values, gradients, shapes and errors."""

import pytest
import torch
from torch.autograd import gradcheck

import pyfacepnp

F64 = torch.float64


def reference(points, affine):
    return points @ affine[..., :2].transpose(-1, -2) + affine[..., 2].unsqueeze(-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(dtype):
    g = torch.Generator().manual_seed(0)
    p = torch.randn(5, 30, 2, dtype=dtype, generator=g) * 100
    A = torch.randn(5, 2, 3, dtype=dtype, generator=g)
    out = pyfacepnp.warp_points(p, A)
    assert out.dtype == dtype
    assert torch.allclose(out, reference(p, A), rtol=1e-6 if dtype == torch.float32 else 1e-14)


def test_gradcheck_both_inputs():
    g = torch.Generator().manual_seed(1)
    p = torch.randn(3, 7, 2, dtype=F64, generator=g, requires_grad=True)
    A = torch.randn(3, 2, 3, dtype=F64, generator=g, requires_grad=True)
    assert gradcheck(pyfacepnp.warp_points, (p, A))
    # shared affine broadcast over a batch of point sets
    A1 = torch.randn(2, 3, dtype=F64, generator=g, requires_grad=True)
    assert gradcheck(pyfacepnp.warp_points, (p, A1))


def test_invert_affine_round_trip_and_gradient():
    g = torch.Generator().manual_seed(2)
    A = torch.randn(4, 2, 3, dtype=F64, generator=g)
    p = torch.randn(4, 9, 2, dtype=F64, generator=g)
    back = pyfacepnp.warp_points(pyfacepnp.warp_points(p, A), pyfacepnp.invert_affine(A))
    assert torch.allclose(back, p, atol=1e-10)
    assert gradcheck(pyfacepnp.invert_affine, (A.requires_grad_(),))


def test_shapes_and_errors():
    p = torch.zeros(2, 5, 2)
    assert pyfacepnp.warp_points(p, torch.zeros(2, 3)).shape == (2, 5, 2)
    assert pyfacepnp.warp_points(torch.zeros(0, 5, 2), torch.zeros(0, 2, 3)).shape == (0, 5, 2)
    with pytest.raises(ValueError, match=r"points must have shape \(\.\.\., N, 2\), got \(5, 3\)"):
        pyfacepnp.warp_points(torch.zeros(5, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"affine must have shape \(\.\.\., 2, 3\), got \(3, 3\)"):
        pyfacepnp.warp_points(p, torch.zeros(3, 3))
    with pytest.raises(TypeError, match=r"points and affine must have the same dtype"):
        pyfacepnp.warp_points(p, torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"batch dimensions do not broadcast"):
        pyfacepnp.warp_points(torch.zeros(2, 5, 2), torch.zeros(3, 2, 3))
    with pytest.raises(ValueError, match=r"singular 2x2 linear part"):
        pyfacepnp.invert_affine(torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 1.0]]))


def test_warp_points_with_no_points():
    assert pyfacepnp.warp_points(torch.zeros(0, 2), torch.eye(2, 3)).shape == (0, 2)
    assert pyfacepnp.warp_points(torch.zeros(3, 0, 2), torch.eye(2, 3)).shape == (3, 0, 2)


def test_invert_affine_float32_at_large_scale_inverts():
    """The determinant of a 1e20-scale affine overflows float32: the inverse is formed in float64."""
    A = torch.tensor([[1e20, 3e19, 5.0], [2e19, 1e20, 1.0]])
    Ai = pyfacepnp.invert_affine(A)
    assert Ai.dtype == torch.float32 and torch.isfinite(Ai).all()
    p = torch.tensor([[3.0, 4.0], [-1.0, 2.0]])
    assert torch.allclose(pyfacepnp.warp_points(pyfacepnp.warp_points(p, A), Ai), p, rtol=1e-5)
    exact = torch.linalg.inv(torch.cat([A.double(), torch.tensor([[0, 0, 1.0]], dtype=F64)]))[:2]
    assert torch.allclose(Ai.double(), exact, rtol=1e-6, atol=0)


@pytest.mark.parametrize("A, what", [
    ([[1e20, 1e20, 0.0], [1e20, 1e20, 0.0]], "has a singular 2x2 linear part"),
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "has a singular 2x2 linear part"),
    ([[float("nan"), 0.0, 0.0], [0.0, 1.0, 0.0]], "is not finite"),
    ([[1.0, 0.0, float("inf")], [0.0, 1.0, 0.0]], "is not finite"),
    ([[1e-30, 0.0, 1e30], [0.0, 1e-30, 0.0]], "has an inverse that does not fit torch.float32"),
])
def test_invert_affine_bad_affines_are_errors_naming_the_index(A, what):
    batch = torch.eye(2, 3).repeat(3, 1, 1)
    batch[1] = torch.tensor(A)
    with pytest.raises(ValueError, match=rf"batch index \(1,\) {what}"):
        pyfacepnp.invert_affine(batch)
