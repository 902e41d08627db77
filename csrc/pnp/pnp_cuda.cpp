// CUDA registrations of solve_pnp and its backward: checks, allocation and the launch on the
// current stream. The kernels are in pnp_kernels.cu (no torch headers there). Built only
// when torch has CUDA.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>

#include "pnp/pnp_glue.h"
#include "pnp/pnp_launch.h"

namespace {

// The forward kernel's register budget (see pnp_kernels.cu): PYFACEPNP_CUDA_PNP_WARPS_PER_SM
// = 16 selects the variant capped at 128 registers per thread, for benchmarking it against
// the default (1: up to 255 registers). Read at every call, so a benchmark can switch it.
int32_t forward_min_warps_per_sm() {
  const char* v = std::getenv("PYFACEPNP_CUDA_PNP_WARPS_PER_SM");
  if (v == nullptr || *v == '\0') return 1;
  const std::string s(v);
  TORCH_CHECK(s == "1" || s == "16", "PYFACEPNP_CUDA_PNP_WARPS_PER_SM must be 1 or 16, got '", s,
              "'");
  return int32_t(std::stoi(s));
}

void check_cuda(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got device ", t.device());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
solve_pnp_cuda(const at::Tensor& points3d_in, const at::Tensor& points2d_in,
               const at::Tensor& K_in, const std::optional<at::Tensor>& weights_in,
               const std::optional<at::Tensor>& init_R_in,
               const std::optional<at::Tensor>& init_t_in, c10::string_view loss,
               double huber_delta, int64_t max_iterations, double tolerance,
               const std::optional<at::Tensor>& loss_scales,
               const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  check_cuda(points3d_in, "solve_pnp", "points3d");
  const c10::cuda::CUDAGuard guard(points3d_in.device());
  auto call = pyfacepnp::ForwardCall::prepare(points3d_in, points2d_in, K_in, weights_in,
                                              init_R_in, init_t_in, loss, huber_delta,
                                              max_iterations, tolerance, loss_scales, distortion,
                                              camera_model);
  if (call.batch() == 0) return call.out.as_tuple();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(call.in.X.scalar_type(), "solve_pnp_cuda", [&] {
    C10_CUDA_CHECK(pyfacepnp::gpu::launch_solve_pnp<scalar_t>(call.args<scalar_t>(),
                                                              forward_min_warps_per_sm(), stream));
  });
  return call.out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_pnp_backward_cuda(
    const std::optional<at::Tensor>& grad_R_in, const std::optional<at::Tensor>& grad_t_in,
    const std::optional<at::Tensor>& grad_cost_in,
    const at::Tensor& points3d_in, const at::Tensor& points2d_in, const at::Tensor& K_in,
    const std::optional<at::Tensor>& weights_in, const at::Tensor& state_in,
    const at::Tensor& status_in,
    c10::string_view loss, double huber_delta, const std::optional<at::Tensor>& loss_scales,
    const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  check_cuda(points3d_in, "solve_pnp_backward", "points3d");
  const c10::cuda::CUDAGuard guard(points3d_in.device());
  auto call = pyfacepnp::BackwardCall::prepare(grad_R_in, grad_t_in, grad_cost_in, points3d_in,
                                               points2d_in, K_in, weights_in, state_in,
                                               status_in, loss, huber_delta, loss_scales,
                                               distortion, camera_model);
  if (call.batch() == 0) return call.out.as_tuple();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(call.in.X.scalar_type(), "solve_pnp_backward_cuda", [&] {
    C10_CUDA_CHECK(pyfacepnp::gpu::launch_solve_pnp_backward<scalar_t>(call.args<scalar_t>(),
                                                                       stream));
  });
  return call.out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor, at::Tensor>
solve_pnp_ransac_cuda(const at::Tensor& points3d_in, const at::Tensor& points2d_in,
                      const at::Tensor& K_in, const std::optional<at::Tensor>& weights_in,
                     c10::string_view loss,
                      double loss_scale, double threshold, double confidence, int64_t max_trials,
                      int64_t seed, int64_t max_iterations, double tolerance,
                      const std::optional<at::Tensor>& loss_scales,
                      const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  check_cuda(points3d_in, "solve_pnp_ransac", "points3d");
  const c10::cuda::CUDAGuard guard(points3d_in.device());
  auto call = pyfacepnp::RansacCall::prepare(points3d_in, points2d_in, K_in, weights_in, loss,
                                             loss_scale, threshold, confidence, max_trials, seed,
                                             max_iterations, tolerance, loss_scales, distortion,
                                             camera_model);
  if (call.batch() == 0) return call.out.as_tuple();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(call.in.X.scalar_type(), "solve_pnp_ransac_cuda", [&] {
    C10_CUDA_CHECK(pyfacepnp::gpu::launch_solve_pnp_ransac<scalar_t>(call.args<scalar_t>(), stream));
  });
  return call.out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
solve_pnp_minima_cuda(const at::Tensor& points3d_in, const at::Tensor& points2d_in,
                      const at::Tensor& K_in, const std::optional<at::Tensor>& weights_in,
                     c10::string_view loss,
                      double loss_scale, int64_t num_solutions, int64_t max_iterations,
                      double tolerance, const std::optional<at::Tensor>& loss_scales,
                      const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  check_cuda(points3d_in, "solve_pnp_minima", "points3d");
  const c10::cuda::CUDAGuard guard(points3d_in.device());
  auto call = pyfacepnp::MinimaCall::prepare(points3d_in, points2d_in, K_in, weights_in, loss,
                                             loss_scale, num_solutions, max_iterations,
                                             tolerance, loss_scales, distortion, camera_model);
  if (call.batch() == 0) return call.as_tuple();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(call.in.X.scalar_type(), "solve_pnp_minima_cuda", [&] {
    C10_CUDA_CHECK(pyfacepnp::gpu::launch_solve_pnp_minima<scalar_t>(call.args<scalar_t>(), stream));
  });
  return call.as_tuple();
}

std::tuple<at::Tensor, at::Tensor> pnp_hessian_cuda(
    const at::Tensor& R, const at::Tensor& t, const at::Tensor& points3d,
    const at::Tensor& points2d, const at::Tensor& K, const std::optional<at::Tensor>& weights,
    c10::string_view loss, double loss_scale, const std::optional<at::Tensor>& loss_scales,
    const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  check_cuda(points3d, "pnp_hessian", "points3d");
  const c10::cuda::CUDAGuard guard(points3d.device());
  auto call = pyfacepnp::HessianCall::prepare("pnp_hessian", R, t, points3d, points2d, K,
                                              weights, loss, loss_scale, loss_scales,
                                              distortion, camera_model);
  call.allocate_forward();
  if (call.batch() == 0) return call.forward_outputs();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(call.X.scalar_type(), "pnp_hessian_cuda", [&] {
    C10_CUDA_CHECK(pyfacepnp::gpu::launch_pnp_hessian<scalar_t>(call.args<scalar_t>(), false,
                                                                stream));
  });
  return call.forward_outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
pnp_hessian_backward_cuda(const at::Tensor& grad_H, const at::Tensor& R, const at::Tensor& t,
                          const at::Tensor& points3d, const at::Tensor& points2d,
                          const at::Tensor& K, const std::optional<at::Tensor>& weights,
                          const at::Tensor& valid, c10::string_view loss, double loss_scale,
                          const std::optional<at::Tensor>& loss_scales,
                          const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  check_cuda(points3d, "pnp_hessian_backward", "points3d");
  const c10::cuda::CUDAGuard guard(points3d.device());
  auto call = pyfacepnp::HessianCall::prepare("pnp_hessian_backward", R, t, points3d, points2d,
                                              K, weights, loss, loss_scale, loss_scales,
                                              distortion, camera_model);
  call.allocate_backward(grad_H, valid);
  if (call.batch() == 0) return call.backward_outputs();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(call.X.scalar_type(), "pnp_hessian_backward_cuda", [&] {
    C10_CUDA_CHECK(pyfacepnp::gpu::launch_pnp_hessian<scalar_t>(call.args<scalar_t>(), true,
                                                                stream));
  });
  return call.backward_outputs();
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfacepnp, CUDA, m) {
  m.impl("pnp_hessian", &pnp_hessian_cuda);
  m.impl("pnp_hessian_backward", &pnp_hessian_backward_cuda);
  m.impl("solve_pnp_minima", &solve_pnp_minima_cuda);
  m.impl("solve_pnp", &solve_pnp_cuda);
  m.impl("solve_pnp_backward", &solve_pnp_backward_cuda);
  m.impl("solve_pnp_ransac", &solve_pnp_ransac_cuda);
}
