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

#include "common/pnp_point.h"
#include "pnp/pnp_checks.h"

namespace pyfacepnp {
namespace gpu {
// Defined in pnp_kernels.cu, instantiated for float and double.
template <typename scalar_t>
cudaError_t launch_solve_pnp(const scalar_t* X, const scalar_t* x, const scalar_t* w,
                             const scalar_t* K, const scalar_t* init_R, const scalar_t* init_t,
                             int64_t B, int64_t N, int32_t loss, double huber_delta,
                             int32_t max_iterations, double tolerance, double pd_tol,
                             int32_t min_warps_per_sm, scalar_t* R, scalar_t* t, scalar_t* cost,
                             int32_t* iterations, int32_t* status, scalar_t* cov,
                             cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_solve_pnp_backward(const scalar_t* gR, const scalar_t* gt, const scalar_t* gc,
                                      const scalar_t* X, const scalar_t* x, const scalar_t* w,
                                      const scalar_t* K, const scalar_t* R, const scalar_t* t,
                                      const int32_t* status, const scalar_t* cov, int64_t B,
                                      int64_t N, int32_t loss, double huber_delta, scalar_t* gX,
                                      scalar_t* gx, scalar_t* gK, scalar_t* gw,
                                      cudaStream_t stream);
}  // namespace gpu
}  // namespace pyfacepnp

namespace {

using pyfacepnp::kPdTol;
using pyfacepnp::loss_kind;

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

// A per-problem tensor in the points' dtype, contiguous (no copy when it already is).
at::Tensor as_dtype(const at::Tensor& t, at::ScalarType dtype) {
  return t.to(dtype).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_pnp_cuda(
    const at::Tensor& points3d_in, const at::Tensor& points2d_in, const at::Tensor& K_in,
    const at::Tensor& weights_in, const std::optional<at::Tensor>& init_R_in,
    const std::optional<at::Tensor>& init_t_in, c10::string_view loss, double huber_delta,
    int64_t max_iterations, double tolerance) {
  pyfacepnp::check_pnp_inputs(points3d_in, points2d_in, K_in, weights_in, init_R_in, init_t_in,
                              loss, huber_delta, max_iterations, tolerance);
  check_cuda(points3d_in, "solve_pnp", "points3d");
  const c10::cuda::CUDAGuard guard(points3d_in.device());
  const auto dtype = points3d_in.scalar_type();
  const auto points3d = points3d_in.contiguous();
  const auto points2d = points2d_in.contiguous();
  const auto K = as_dtype(K_in, dtype);
  const auto weights = weights_in.contiguous();
  const bool has_init = init_R_in.has_value();
  at::Tensor init_R, init_t;
  if (has_init) {
    init_R = as_dtype(*init_R_in, dtype);
    init_t = as_dtype(*init_t_in, dtype);
  }
  const int64_t B = points3d.size(0), N = points3d.size(1);
  const auto opts = points3d.options();
  auto R = at::empty({B, 3, 3}, opts);
  auto t = at::empty({B, 3}, opts);
  auto cost = at::empty({B}, opts);
  auto iterations = at::empty({B}, opts.dtype(at::kInt));
  auto status = at::empty({B}, opts.dtype(at::kInt));
  auto cov = at::empty({B, 6, 6}, opts);
  if (B == 0) return {R, t, cost, iterations, status, cov};

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "solve_pnp_cuda", [&] {
    C10_CUDA_CHECK(pyfacepnp::gpu::launch_solve_pnp<scalar_t>(
        points3d.data_ptr<scalar_t>(), points2d.data_ptr<scalar_t>(),
        weights.data_ptr<scalar_t>(), K.data_ptr<scalar_t>(),
        has_init ? init_R.data_ptr<scalar_t>() : nullptr,
        has_init ? init_t.data_ptr<scalar_t>() : nullptr, B, N, loss_kind(loss), huber_delta,
        int32_t(max_iterations), tolerance, kPdTol, forward_min_warps_per_sm(),
        R.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), cost.data_ptr<scalar_t>(),
        iterations.data_ptr<int32_t>(), status.data_ptr<int32_t>(), cov.data_ptr<scalar_t>(),
        stream));
  });
  return {R, t, cost, iterations, status, cov};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_pnp_backward_cuda(
    const at::Tensor& grad_R_in, const at::Tensor& grad_t_in, const at::Tensor& grad_cost_in,
    const at::Tensor& points3d_in, const at::Tensor& points2d_in, const at::Tensor& K_in,
    const at::Tensor& weights_in, const at::Tensor& R_in, const at::Tensor& t_in,
    const at::Tensor& status_in, const at::Tensor& cov_in, c10::string_view loss,
    double huber_delta) {
  pyfacepnp::check_pnp_backward_inputs(grad_R_in, grad_t_in, grad_cost_in, points3d_in,
                                       points2d_in, K_in, weights_in, R_in, t_in, status_in,
                                       cov_in);
  check_cuda(points3d_in, "solve_pnp_backward", "points3d");
  const auto dtype = points3d_in.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "solve_pnp_backward: points3d must be float32 or float64, got ", dtype);
  TORCH_CHECK(points2d_in.scalar_type() == dtype && weights_in.scalar_type() == dtype,
              "solve_pnp_backward: points2d and weights must have the dtype of points3d (", dtype,
              "), got ", points2d_in.scalar_type(), " and ", weights_in.scalar_type());
  const c10::cuda::CUDAGuard guard(points3d_in.device());
  const auto points3d = points3d_in.contiguous();
  const auto points2d = points2d_in.contiguous();
  const auto weights = weights_in.contiguous();
  const auto gR = as_dtype(grad_R_in, dtype), gt = as_dtype(grad_t_in, dtype);
  const auto gc = as_dtype(grad_cost_in, dtype), K = as_dtype(K_in, dtype);
  const auto R = as_dtype(R_in, dtype), t = as_dtype(t_in, dtype), cov = as_dtype(cov_in, dtype);
  const auto status = status_in.to(at::kInt).contiguous();
  const int64_t B = points3d.size(0), N = points3d.size(1);
  // Every entry is written by the kernel (zeros for problems that did not converge).
  auto gX = at::empty_like(points3d);
  auto gx = at::empty_like(points2d);
  auto gK = at::empty_like(K);
  auto gw = at::empty_like(weights);
  if (B == 0) return {gX, gx, gK, gw};

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "solve_pnp_backward_cuda", [&] {
    C10_CUDA_CHECK(pyfacepnp::gpu::launch_solve_pnp_backward<scalar_t>(
        gR.data_ptr<scalar_t>(), gt.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
        points3d.data_ptr<scalar_t>(), points2d.data_ptr<scalar_t>(),
        weights.data_ptr<scalar_t>(), K.data_ptr<scalar_t>(), R.data_ptr<scalar_t>(),
        t.data_ptr<scalar_t>(), status.data_ptr<int32_t>(), cov.data_ptr<scalar_t>(), B, N,
        loss_kind(loss), huber_delta, gX.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(),
        gK.data_ptr<scalar_t>(), gw.data_ptr<scalar_t>(), stream));
  });
  return {gX, gx, gK, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfacepnp, CUDA, m) {
  m.impl("solve_pnp", &solve_pnp_cuda);
  m.impl("solve_pnp_backward", &solve_pnp_backward_cuda);
}
