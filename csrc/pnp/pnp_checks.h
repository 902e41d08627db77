// Shape, dtype and device checks of solve_pnp's flattened inputs, shared by the CPU and
// CUDA registrations (the Python wrapper checks the user-facing shapes first).
#pragma once
#include <torch/torch.h>

#include <optional>

#include "common/pnp_point.h"

namespace pyfacepnp {

// Pivot floor of the unit-diagonal-scaled Hessian below which a problem is DEGENERATE (the
// kernels compute in float64 on both devices, so one value serves both).
constexpr double kPdTol = 1e-10;

// The schema's loss string as the kernels' LossKind (the string was validated before).
inline int32_t loss_kind(c10::string_view loss) {
  return loss == "huber" ? pfp::kLossHuber : pfp::kLossL2;
}

inline void check_pnp_inputs(const at::Tensor& X, const at::Tensor& x, const at::Tensor& K,
                             const at::Tensor& w, const std::optional<at::Tensor>& init_R,
                             const std::optional<at::Tensor>& init_t, c10::string_view loss,
                             double huber_delta, int64_t max_iterations, double tolerance) {
  TORCH_CHECK(X.dim() == 3 && X.size(2) == 3, "solve_pnp: points3d must have shape (B, N, 3), got ",
              X.sizes());
  const int64_t B = X.size(0), N = X.size(1);
  TORCH_CHECK(x.dim() == 3 && x.size(0) == B && x.size(1) == N && x.size(2) == 2,
              "solve_pnp: points2d must have shape (", B, ", ", N, ", 2), got ", x.sizes());
  TORCH_CHECK(K.dim() == 3 && K.size(0) == B && K.size(1) == 3 && K.size(2) == 3,
              "solve_pnp: K must have shape (", B, ", 3, 3), got ", K.sizes());
  TORCH_CHECK(w.dim() == 3 && w.size(0) == B && w.size(1) == N && w.size(2) == 2,
              "solve_pnp: weights must have shape (", B, ", ", N, ", 2), got ", w.sizes());
  TORCH_CHECK(N >= 4, "solve_pnp: needs N >= 4 points per problem, got N = ", N);
  TORCH_CHECK(X.scalar_type() == at::kFloat || X.scalar_type() == at::kDouble,
              "solve_pnp: points3d must be float32 or float64, got ", X.scalar_type());
  for (const auto* t : {&x, &K, &w})
    TORCH_CHECK(t->scalar_type() == X.scalar_type() && t->device() == X.device(),
                "solve_pnp: all inputs must share dtype and device with points3d (",
                X.scalar_type(), ", ", X.device(), "), got ", t->scalar_type(), ", ", t->device());
  TORCH_CHECK(init_R.has_value() == init_t.has_value(),
              "solve_pnp: init_R and init_t must be given together");
  if (init_R.has_value()) {
    TORCH_CHECK(init_R->dim() == 3 && init_R->size(0) == B && init_R->size(1) == 3 &&
                    init_R->size(2) == 3,
                "solve_pnp: init R must have shape (", B, ", 3, 3), got ", init_R->sizes());
    TORCH_CHECK(init_t->dim() == 2 && init_t->size(0) == B && init_t->size(1) == 3,
                "solve_pnp: init t must have shape (", B, ", 3), got ", init_t->sizes());
    TORCH_CHECK(init_R->device() == X.device() && init_t->device() == X.device(),
                "solve_pnp: init must be on ", X.device());
  }
  TORCH_CHECK(loss == "l2" || loss == "huber", "solve_pnp: loss must be 'l2' or 'huber', got '",
              loss, "'");
  TORCH_CHECK(huber_delta > 0 && std::isfinite(huber_delta),
              "solve_pnp: huber_delta must be positive and finite, got ", huber_delta);
  TORCH_CHECK(max_iterations >= 1 && max_iterations <= 100000,
              "solve_pnp: max_iterations must be in [1, 100000], got ", max_iterations);
  TORCH_CHECK(tolerance > 0 && tolerance < 1, "solve_pnp: tolerance must be in (0, 1), got ",
              tolerance);
}

inline void check_pnp_backward_inputs(const at::Tensor& gR, const at::Tensor& gt,
                                      const at::Tensor& gc, const at::Tensor& X,
                                      const at::Tensor& x, const at::Tensor& K,
                                      const at::Tensor& w, const at::Tensor& R,
                                      const at::Tensor& t, const at::Tensor& status,
                                      const at::Tensor& cov) {
  TORCH_CHECK(X.dim() == 3 && X.size(2) == 3,
              "solve_pnp_backward: points3d must have shape (B, N, 3), got ", X.sizes());
  const int64_t B = X.size(0), N = X.size(1);
  TORCH_CHECK(x.sizes() == at::IntArrayRef({B, N, 2}) && w.sizes() == at::IntArrayRef({B, N, 2}),
              "solve_pnp_backward: points2d and weights must have shape (B, N, 2)");
  TORCH_CHECK(K.sizes() == at::IntArrayRef({B, 3, 3}) && R.sizes() == at::IntArrayRef({B, 3, 3}) &&
                  gR.sizes() == at::IntArrayRef({B, 3, 3}),
              "solve_pnp_backward: K, R and grad_R must have shape (B, 3, 3)");
  TORCH_CHECK(t.sizes() == at::IntArrayRef({B, 3}) && gt.sizes() == at::IntArrayRef({B, 3}),
              "solve_pnp_backward: t and grad_t must have shape (B, 3)");
  TORCH_CHECK(gc.sizes() == at::IntArrayRef({B}) && status.sizes() == at::IntArrayRef({B}),
              "solve_pnp_backward: grad_cost and status must have shape (B,)");
  TORCH_CHECK(cov.sizes() == at::IntArrayRef({B, 6, 6}),
              "solve_pnp_backward: covariance must have shape (B, 6, 6)");
  for (const auto* t : {&gR, &gt, &gc, &x, &K, &w, &R, &t, &status, &cov})
    TORCH_CHECK(t->device() == X.device(), "solve_pnp_backward: all inputs must be on ",
                X.device(), ", got ", t->device());
}

}  // namespace pyfacepnp
