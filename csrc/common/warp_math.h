// Per-point math of warp_points: y = A[:, :2] p + A[:, 2] for a 2x3 affine A (row-major).
#pragma once
#include "common/hd.h"

namespace pfp {

template <typename T>
PFP_HD void warp_point(const T* A, const T* p, T* y) {
  const T x0 = p[0], x1 = p[1];
  y[0] = A[0] * x0 + A[1] * x1 + A[2];
  y[1] = A[3] * x0 + A[4] * x1 + A[5];
}

// Gradients of one warped point: dL/dp = A[:, :2]^T g, and the point's contribution to
// dL/dA = g [p; 1]^T (summed over points by the caller).
template <typename T>
PFP_HD void warp_point_backward(const T* A, const T* p, const T* g, T* grad_p, T* grad_A) {
  grad_p[0] = A[0] * g[0] + A[3] * g[1];
  grad_p[1] = A[1] * g[0] + A[4] * g[1];
  grad_A[0] = g[0] * p[0];
  grad_A[1] = g[0] * p[1];
  grad_A[2] = g[0];
  grad_A[3] = g[1] * p[0];
  grad_A[4] = g[1] * p[1];
  grad_A[5] = g[1];
}

}  // namespace pfp
