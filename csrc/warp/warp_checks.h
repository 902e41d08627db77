// Shape, dtype and device checks of warp_points' flattened inputs, shared by the CPU and
// CUDA registrations (the Python wrapper checks the user-facing shapes first).
#pragma once
#include <torch/torch.h>

namespace pyfacepnp {

inline void check_warp_inputs(const char* op, const at::Tensor& points, const at::Tensor& affine) {
  TORCH_CHECK(points.dim() == 3 && points.size(2) == 2, op,
              ": points must have shape (B, N, 2), got ", points.sizes());
  TORCH_CHECK(affine.dim() == 3 && affine.size(1) == 2 && affine.size(2) == 3 &&
                  affine.size(0) == points.size(0),
              op, ": affine must have shape (B, 2, 3) with B = ", points.size(0), ", got ",
              affine.sizes());
  TORCH_CHECK(points.scalar_type() == at::kFloat || points.scalar_type() == at::kDouble, op,
              ": points must be float32 or float64, got ", points.scalar_type());
  TORCH_CHECK(points.scalar_type() == affine.scalar_type(), op,
              ": points and affine must share a dtype, got ", points.scalar_type(), " and ",
              affine.scalar_type());
  TORCH_CHECK(affine.device() == points.device(), op,
              ": points and affine must be on the same device, got ", points.device(), " and ",
              affine.device());
}

}  // namespace pyfacepnp
