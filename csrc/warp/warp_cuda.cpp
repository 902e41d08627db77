// CUDA registrations of warp_points and its backward: checks, allocation and the launch on
// the current stream. The kernels are in warp_kernels.cu (no torch headers there). Built only
// when torch has CUDA.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>
#include <torch/torch.h>

#include "warp/warp_checks.h"

namespace pyfacepnp {
namespace gpu {
// Defined in warp_kernels.cu, instantiated for float and double.
template <typename scalar_t>
cudaError_t launch_warp_points(const scalar_t* points, const scalar_t* affine, int64_t B,
                               int64_t N, scalar_t* out, cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_warp_points_backward(const scalar_t* grad, const scalar_t* points,
                                        const scalar_t* affine, int64_t B, int64_t N,
                                        scalar_t* grad_points, scalar_t* grad_affine,
                                        cudaStream_t stream);
}  // namespace gpu
}  // namespace pyfacepnp

namespace {

void check_inputs(const char* op, const at::Tensor& points, const at::Tensor& affine) {
  TORCH_CHECK(points.is_cuda() && affine.device() == points.device(), op,
              ": points and affine must be on the same CUDA device, got ", points.device(),
              " and ", affine.device());
  pyfacepnp::check_warp_inputs(op, points, affine);
}

at::Tensor warp_points_cuda(const at::Tensor& points_in, const at::Tensor& affine_in) {
  check_inputs("warp_points", points_in, affine_in);
  const c10::cuda::CUDAGuard guard(points_in.device());
  const auto points = points_in.contiguous();
  const auto affine = affine_in.contiguous();
  auto out = at::empty_like(points);
  const int64_t B = points.size(0), N = points.size(1);
  if (B * N == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "warp_points_cuda", [&] {
    C10_CUDA_CHECK(pyfacepnp::gpu::launch_warp_points<scalar_t>(
        points.data_ptr<scalar_t>(), affine.data_ptr<scalar_t>(), B, N,
        out.data_ptr<scalar_t>(), stream));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> warp_points_backward_cuda(const at::Tensor& grad_in,
                                                             const at::Tensor& points_in,
                                                             const at::Tensor& affine_in) {
  check_inputs("warp_points_backward", points_in, affine_in);
  TORCH_CHECK(grad_in.device() == points_in.device(),
              "warp_points_backward: grad_out must be on ", points_in.device(), ", got ",
              grad_in.device());
  const c10::cuda::CUDAGuard guard(points_in.device());
  const auto points = points_in.contiguous();
  const auto affine = affine_in.contiguous();
  const auto grad = grad_in.to(points.scalar_type()).contiguous();
  TORCH_CHECK(grad.sizes() == points.sizes(), "warp_points_backward: grad_out must have shape ",
              points.sizes(), ", got ", grad.sizes());
  // Every entry is written by the kernel.
  auto grad_points = at::empty_like(points);
  auto grad_affine = at::empty_like(affine);
  const int64_t B = points.size(0), N = points.size(1);
  if (B == 0) return {grad_points, grad_affine};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "warp_points_backward_cuda", [&] {
    C10_CUDA_CHECK(pyfacepnp::gpu::launch_warp_points_backward<scalar_t>(
        grad.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), affine.data_ptr<scalar_t>(), B,
        N, grad_points.data_ptr<scalar_t>(), grad_affine.data_ptr<scalar_t>(), stream));
  });
  return {grad_points, grad_affine};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfacepnp, CUDA, m) {
  m.impl("warp_points", &warp_points_cuda);
  m.impl("warp_points_backward", &warp_points_backward_cuda);
}
