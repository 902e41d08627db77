"""warp_points on CUDA: agreement with the CPU op (values and gradients), gradcheck, opcheck,
empty and huge sizes, mixed devices.

Skipped without a CUDA device (or when the extension was built without its CUDA kernels).
"""

import pytest
import torch
from torch.autograd import gradcheck

import pyfacepnp

HAS_CUDA = torch.cuda.is_available() and pyfacepnp.build_info()["with_cuda"]
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and pyfacepnp's CUDA kernels"),
]

DEVICE = "cuda"
F64 = torch.float64


def inputs(B, N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = (torch.rand(B, N, 2, generator=g, dtype=F64) * 800).to(dtype)
    A = torch.randn(B, 2, 3, generator=g, dtype=F64).to(dtype)
    gy = torch.randn(B, N, 2, generator=g, dtype=F64).to(dtype)
    return p, A, gy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 68), (9, 1220), (700, 5), (5, 0), (0, 7)])
def test_cuda_matches_cpu(shape, dtype):
    p, A, gy = inputs(*shape, dtype)
    y0 = torch.ops.pyfacepnp.warp_points(p, A)
    gp0, gA0 = torch.ops.pyfacepnp.warp_points_backward(gy, p, A)
    d = lambda a: a.to(DEVICE)  # noqa: E731
    y = torch.ops.pyfacepnp.warp_points(d(p), d(A))
    gp, gA = torch.ops.pyfacepnp.warp_points_backward(d(gy), d(p), d(A))
    assert y.device.type == torch.device(DEVICE).type and y.dtype == dtype and gA.shape == A.shape
    # Per point the same formula (up to fused multiply-adds, an ulp of the largest term); the
    # affine gradient sums N points in another order.
    rtol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(y.cpu(), y0, rtol=rtol, atol=rtol * 4000)
    torch.testing.assert_close(gp.cpu(), gp0, rtol=rtol, atol=rtol * 20)
    scale = max(1.0, float(gA0.abs().max())) if gA0.numel() else 1.0
    torch.testing.assert_close(gA.cpu(), gA0, rtol=rtol, atol=rtol * scale)
    if shape[1] == 0:  # no points: the affine gradient is exactly zero
        assert (gA == 0).all()


def test_autograd_and_gradcheck_cuda():
    g = torch.Generator().manual_seed(1)
    p = torch.randn(3, 7, 2, dtype=F64, generator=g).to(DEVICE).requires_grad_()
    A = torch.randn(3, 2, 3, dtype=F64, generator=g).to(DEVICE).requires_grad_()
    assert gradcheck(pyfacepnp.warp_points, (p, A))
    A1 = torch.randn(2, 3, dtype=F64, generator=g).to(DEVICE).requires_grad_()  # broadcast
    assert gradcheck(pyfacepnp.warp_points, (p, A1))


def test_opcheck_cuda():
    p = torch.randn(4, 7, 2, dtype=F64, device=DEVICE, requires_grad=True)
    A = torch.randn(4, 2, 3, dtype=F64, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.pyfacepnp.warp_points.default, (p, A))
    torch.library.opcheck(torch.ops.pyfacepnp.warp_points_backward.default,
                          (torch.randn(4, 7, 2, dtype=F64, device=DEVICE), p.detach(), A.detach()))


def test_noncontiguous_inputs():
    p, A, gy = inputs(6, 50, F64, seed=3)
    pt = p.transpose(1, 2).contiguous().to(DEVICE).transpose(1, 2)
    assert not pt.is_contiguous()
    torch.testing.assert_close(pyfacepnp.warp_points(pt, A.to(DEVICE)).cpu(), pyfacepnp.warp_points(p, A))


def test_mixed_devices_are_a_clear_error():
    p, A, gy = inputs(2, 5, F64)
    with pytest.raises(ValueError, match="same device"):
        pyfacepnp.warp_points(p.to(DEVICE), A)
    with pytest.raises(RuntimeError, match="same CUDA device"):
        torch.ops.pyfacepnp.warp_points(p.to(DEVICE), A)
    with pytest.raises(RuntimeError, match="grad_out must be on"):
        torch.ops.pyfacepnp.warp_points_backward(gy, p.to(DEVICE), A.to(DEVICE))


def test_more_than_two_billion_coordinates():
    """B * N * 2 > 2^31: the kernels index with 64 bits."""
    N = (1 << 30) + 3  # 2^31 + 6 float32 coordinates, 8.6 GB in and 8.6 GB out
    need = 2 * (2 * N * 4) + (1 << 30)
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs {need / 1e9:.1f} GB of free GPU memory, {free / 1e9:.1f} GB free")
    p = torch.empty(1, N, 2, dtype=torch.float32, device=DEVICE)
    p[..., 0] = 1.0
    p[..., 1] = 2.0
    p[0, -1] = torch.tensor([5.0, -3.0], device=DEVICE)
    A = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]]], device=DEVICE)
    y = torch.ops.pyfacepnp.warp_points(p, A)
    del p
    assert y[0, 0].tolist() == [3.0, 5.0] and y[0, -1].tolist() == [11.0, -10.0]
    assert y[0, (1 << 30) - 5].tolist() == [3.0, 5.0]
