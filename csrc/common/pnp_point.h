// Per-point math of the PnP objective, shared by the CPU and CUDA kernels.
//
// Objective: E = 1/2 sum_i rho(s_i), s_i = sum_a w_ia r_ia^2, r_ia = u_a(R X_i + t) - x_ia,
// u_a(Xc) the camera's projection (common/camera.h). Pose perturbations are local: R = exp([dw]x) R*, t = t* + dt, theta = (dw, dt). See docs/math.md.
#pragma once
#include <type_traits>

#include "common/camera.h"
#include "common/linalg.h"

namespace pfp {

enum Status : int32_t {
  kConverged = 0,
  kMaxIterations = 1,
  kDegenerate = 2,
  kInvalidInput = 3,
};

enum LossKind : int32_t { kLossL2 = 0, kLossHuber = 1, kLossCauchy = 2, kLossGemanMcClure = 3 };

template <typename T>
struct Pose {
  T R[9];  // row-major
  T t[3];
};

// The robust kernel rho(s) of a squared (weighted) residual norm s, with its first two
// derivatives; every kernel has rho(s) = s near 0, and c = delta is its scale:
//   Huber (on the norm)  rho = s for s <= c^2, else 2 c sqrt(s) - c^2
//   Cauchy               rho = c^2 log(1 + s / c^2)
//   Geman-McClure        rho = c^2 s / (c^2 + s)            (redescending: bounded)
template <typename T>
struct Robust {
  int32_t kind;
  T delta;
  PFP_HD void eval(T s, T& rho, T& d1, T& d2) const {
    if (kind == kLossL2) {  // the common kernels first, as a short path (no sqrt for l2)
      rho = s;
      d1 = T(1);
      d2 = T(0);
    } else if (kind == kLossHuber) {
      eval_convex(s, rho, d1, d2);
    } else {
      eval_redescending(s, rho, d1, d2);
    }
  }
  // l2 and Huber. Both branches are computed and one is selected, so that a loop over points
  // calling this has no control flow and vectorises (pnp/pnp_cpu_simd.h); the discarded side
  // may be infinite (s = 0), never NaN for a finite s.
  PFP_HD void eval_convex(T s, T& rho, T& d1, T& d2) const {
    const bool outer = kind == kLossHuber && s > delta * delta;
    const T r = sqrt(s);
    rho = outer ? T(2) * delta * r - delta * delta : s;
    d1 = outer ? delta / r : T(1);
    d2 = outer ? -T(0.5) * delta / (s * r) : T(0);
  }
  PFP_HD void eval_redescending(T s, T& rho, T& d1, T& d2) const {
    if (kind == kLossCauchy) {
      const T c2 = delta * delta, q = T(1) / (T(1) + s / c2);
      rho = c2 * log1p(s / c2);
      d1 = q;
      d2 = -q * q / c2;
    } else if (kind == kLossGemanMcClure) {
      const T c2 = delta * delta, q = c2 / (c2 + s);
      rho = s * q;
      d1 = q * q;
      d2 = T(-2) * q * q * q / c2;
    } else {
      rho = s;
      d1 = T(1);
      d2 = T(0);
    }
  }
};

// The l2 and Huber kernels alone, without the branch on the kernel's kind: what the
// vectorised CPU passes use (they run only for these two kernels).
template <typename T>
struct ConvexRobust {
  Robust<T> rob;
  PFP_HD void eval(T s, T& rho, T& d1, T& d2) const { rob.eval_convex(s, rho, d1, d2); }
};

// The l2 kernel alone, as a type: Robust::eval's short path (no square root or division) for
// the CPU's vectorised l2 passes, where ConvexRobust would compute and discard Huber's. Its
// rho'' is zero by type, so the exact Hessian skips the terms it multiplies (add_point_normal_eq)
// rather than adding zeros (x + 0 y is not folded away).
template <typename T>
struct L2Kernel {
  Robust<T> rob;
  PFP_HD void eval(T s, T& rho, T& d1, T& d2) const {
    rho = s;
    d1 = T(1);
    d2 = T(0);
  }
};

// A point's observation, converted to the compute type (see load_point).
template <typename T>
struct PointObs {
  T X[3];
  T x[2];
  T w[2];
  PFP_HD bool active() const { return w[0] > T(0) || w[1] > T(0); }
  // Finite coordinates and non-negative finite weights. Inactive (zero-weight) points are
  // ignored entirely, so padding may hold any value.
  PFP_HD bool valid() const {
    bool ok = is_finite(w[0]) && is_finite(w[1]) && w[0] >= T(0) && w[1] >= T(0);
    for (int k = 0; k < 3; ++k) ok = ok && is_finite(X[k]);
    return ok && is_finite(x[0]) && is_finite(x[1]);
  }
};

// Point i of a problem's (N,3), (N,2), (N,2) arrays (`w` null: unit weights, never stored);
// `mask` (may be null) removes the points where it is false, as a zero weight would
// (RANSAC's inlier set). A coordinate of zero weight is removed exactly: its observed value is
// replaced by 0 so that whatever it holds (NaN, 1e300) never meets the arithmetic of the
// weighted residual.
template <typename T, typename S>
PFP_HD PointObs<T> load_point(const S* X, const S* x, const S* w, int64_t i,
                              const bool* mask = nullptr) {
  PointObs<T> o;
  const bool keep = mask == nullptr || mask[i];
  for (int k = 0; k < 3; ++k) o.X[k] = T(X[3 * i + k]);
  for (int k = 0; k < 2; ++k) {
    o.w[k] = !keep ? T(0) : w == nullptr ? T(1) : T(w[2 * i + k]);
    const T xk = T(x[2 * i + k]);  // read unconditionally: a select, not a branch, drops it
    o.x[k] = o.w[k] == T(0) ? T(0) : xk;
  }
  return o;
}

// Quantities of one point at one pose, reused by the gradient, Hessian and backward.
template <typename T>
struct PointEval {
  T Y[3];     // R X
  T Xc[3];    // R X + t (camera frame)
  T a[2][3];  // d u_a / d Xc = (k_a - u_a e_z) / z
  T r[2];     // residuals u_a - x_a
  T s;        // w0 r0^2 + w1 r1^2
};

// The steps of eval_point before and after the projection (the vectorised CPU passes project
// without its early exit).
template <typename T>
PFP_HD void transform_point(const Pose<T>& P, const PointObs<T>& o, PointEval<T>& e) {
  matvec3(P.R, o.X, e.Y);
  for (int k = 0; k < 3; ++k) e.Xc[k] = e.Y[k] + P.t[k];
}

template <typename T>
PFP_HD void set_residual(const PointObs<T>& o, const T* u, PointEval<T>& e) {
  e.s = T(0);
  for (int a = 0; a < 2; ++a) {
    e.r[a] = u[a] - o.x[a];
    e.s += o.w[a] * e.r[a] * e.r[a];
  }
}

// Evaluate a point; false when it lies on or behind the camera plane (z <= 0).
template <typename T>
PFP_HD bool eval_point(const Pose<T>& P, const Camera<T>& cam, const PointObs<T>& o,
                       PointEval<T>& e) {
  transform_point(P, o, e);
  T u[2], iz;
  if (!cam.project(e.Xc, u, e.a, iz)) return false;
  set_residual(o, u, e);
  return true;
}

// Accumulated normal equations of a problem at one pose: cost, gradient and a Hessian
// (6x6, dense row-major; either Gauss-Newton or exact).
template <typename T>
struct NormalEq {
  T cost;
  T g[6];
  T H[36];
  PFP_HD void zero() {
    cost = T(0);
    for (int i = 0; i < 6; ++i) g[i] = T(0);
    for (int i = 0; i < 36; ++i) H[i] = T(0);
  }
  PFP_HD void add(const NormalEq& o) {
    cost += o.cost;
    for (int i = 0; i < 6; ++i) g[i] += o.g[i];
    for (int i = 0; i < 36; ++i) H[i] += o.H[i];
  }
  // Only the lower triangle is accumulated; mirror it before use.
  PFP_HD void symmetrize() {
    for (int i = 0; i < 6; ++i)
      for (int j = i + 1; j < 6; ++j) H[i * 6 + j] = H[j * 6 + i];
  }
};

// Add a point's cost, gradient and Hessian. exact = false: Gauss-Newton, exact in the robust
// kernel (positive semi-definite, used by the LM iterations). exact = true: the true
// second derivative of E in theta, with the projection's and the chart's second-order
// terms and rho'' (used for the covariance, the final Newton polish and the backward).
// Cam is a Camera or a Pinhole, Rob a Robust, a ConvexRobust or an L2Kernel, Eq a NormalEq or
// any struct with `cost`, `g[6]` and `H[36]` that can be added to (the CPU passes' per-lane
// sums).
template <typename T, typename Cam, typename Rob, typename Eq>
PFP_HD_INLINE void add_point_normal_eq(const PointEval<T>& e, const PointObs<T>& o, const Cam& cam,
                                const Rob& rob, bool exact, Eq& acc) {
  T rho, d1, d2;
  rob.eval(e.s, rho, d1, d2);
  acc.cost += T(0.5) * rho;
  // Residual a's Jacobian row is J_a = [Y x du_a; du_a] (dXc = dw x Y + dt), so with
  // lam_a = w_a r_a and b = sum_a lam_a du_a, c = sum_a lam_a J_a = [Y x b; b] (half the
  // gradient of s).
  const T lam[2] = {o.w[0] * e.r[0], o.w[1] * e.r[1]};
  T b[3], c[6];
  for (int k = 0; k < 3; ++k) b[k] = lam[0] * e.a[0][k] + lam[1] * e.a[1][k];
  cross3(e.Y, b, c);
  for (int k = 0; k < 3; ++k) c[3 + k] = b[k];
  for (int k = 0; k < 6; ++k) acc.g[k] += d1 * c[k];
  // Exact: J^T (rho' W + 2 rho'' W r r^T W) J + the second-order terms below. The LM's
  // Gauss-Newton Hessian is IRLS's, J^T rho' W J, without the rank-one term: beyond the
  // kernel's scale that term cancels a point's curvature along its residual (Huber:
  // rho' + 2 rho'' s = 0; Cauchy and Geman-McClure turn it negative), so far from the
  // solution, where gross outliers and many inliers are beyond it, the Hessian was near
  // singular and the LM crawled (20 % uniform outliers: 47 of 64 face-like problems at
  // MAX_ITERATIONS, against 3 with IRLS). Near the solution the exact Newton polish takes
  // over, so the rate there is unchanged.
  //
  // J^T rho' W J in 3x3 blocks, from A = sum_a rho' w_a du_a du_a^T (symmetric): the (t, t)
  // block is A, the (t, w) block's row i is Y x A_i (A_i: row i of A), and the (w, w) block's
  // column j is Y x (column j of the (t, w) block). Fewer products than the 21 entries of
  // sum_a w_a J_a J_a^T.
  T u[2][3], A[3][3], N[3][3];
  for (int k = 0; k < 3; ++k) {
    u[0][k] = d1 * o.w[0] * e.a[0][k];
    u[1][k] = d1 * o.w[1] * e.a[1][k];
  }
  PFP_UNROLL
  for (int i = 0; i < 3; ++i)
    PFP_UNROLL
    for (int j = 0; j <= i; ++j) A[i][j] = A[j][i] = u[0][i] * e.a[0][j] + u[1][i] * e.a[1][j];
  for (int i = 0; i < 3; ++i) cross3(e.Y, A[i], N[i]);
  PFP_UNROLL
  for (int i = 0; i < 3; ++i)
    PFP_UNROLL
    for (int j = 0; j <= i; ++j) {
      acc.H[(3 + i) * 6 + 3 + j] += A[i][j];
      // (w, w)[i][j] = (Y x N[:, j])_i: row i of the cross product, i >= j
      const int i1 = (i + 1) % 3, i2 = (i + 2) % 3;
      acc.H[i * 6 + j] += e.Y[i1] * N[i2][j] - e.Y[i2] * N[i1][j];
    }
  PFP_UNROLL
  for (int i = 0; i < 3; ++i)
    PFP_UNROLL
    for (int j = 0; j < 3; ++j) acc.H[(3 + i) * 6 + j] += N[i][j];
  if (!exact) return;
  // The rank-one term 2 rho'' c c^T, apart (x + 0 y is not folded): l2's is zero by type.
  if constexpr (!std::is_same_v<Rob, L2Kernel<T>>) {
    const T c2 = T(2) * d2;
    PFP_UNROLL
    for (int i = 0; i < 6; ++i)
      PFP_UNROLL
      for (int j = 0; j <= i; ++j) acc.H[i * 6 + j] += c2 * c[i] * c[j];
  }
  // Second-order terms, rho' sum_a w_a r_a d2r_a/dtheta2: the projection's curvature (the
  // camera's) and the chart's, blockdiag(sym(b Y^T) - (b.Y) I, 0) with b = sum_a w_a r_a du_a.
  cam.add_curvature(e.Y, e.Xc, e.a, lam, d1, acc.H);
  const T bY = dot3(b, e.Y);
  PFP_UNROLL
  for (int i = 0; i < 3; ++i)
    PFP_UNROLL
    for (int j = 0; j <= i; ++j)
      acc.H[i * 6 + j] += d1 * (T(0.5) * (b[i] * e.Y[j] + e.Y[i] * b[j]) - (i == j ? bY : T(0)));
}

// Backward of one point. With v = H^{-1} dL/dtheta (H exact, at the optimum) and the
// upstream gradient of the cost gc, writes dL/dX (3), dL/dx (2), the point's contribution
// to dL/dK rows 0-1 (6, row-major), dL/dw (2) and, for a distorted camera, to dL/dD
// (kMaxDistortion):
//   dL/dphi = -d/dphi (v . grad_theta e_i(theta*, phi)) + gc dE_i/dphi.
// Cam is a Camera or a Pinhole, Rob a Robust or a kernel of it alone (ConvexRobust, L2Kernel),
// as in add_point_normal_eq.
template <typename T, typename Cam, typename Rob>
PFP_HD_INLINE void point_backward(const PointEval<T>& e, const PointObs<T>& o, const Cam& cam,
                                  const T* R, const Rob& rob, const T* v, T gc, T* gX, T* gx,
                                  T* gK, T* gw, T* gD) {
  T rho, d1, d2;
  rob.eval(e.s, rho, d1, d2);
  const T iz = T(1) / e.Xc[2];
  T d[3];  // d Xc along v: v_w x Y + v_t
  cross3(v, e.Y, d);
  for (int k = 0; k < 3; ++k) d[k] += v[3 + k];
  T Jv[2], S1 = T(0);
  for (int a = 0; a < 2; ++a) {
    Jv[a] = dot3(e.a[a], d);
    S1 += o.w[a] * e.r[a] * Jv[a];
  }
  T alpha[2], beta[2];  // dL/du_a and dL/d(Jv_a)
  T gXc[3] = {T(0), T(0), T(0)};  // dL/dXc-like accumulator, mapped to X by R^T
  for (int a = 0; a < 2; ++a) {
    const T wr = o.w[a] * e.r[a];
    alpha[a] = -(T(2) * d2 * S1 * wr + d1 * o.w[a] * Jv[a]) + gc * d1 * wr;
    beta[a] = -d1 * wr;
    gx[a] = -alpha[a];
    gw[a] = -(d2 * S1 * e.r[a] * e.r[a] + d1 * e.r[a] * Jv[a]) + gc * T(0.5) * d1 * e.r[a] * e.r[a];
    // Jv_a = du_a . (v_w x R X + v_t): its derivative in X through d, -(v_w x du_a) R.
    T va[3];
    cross3(v, e.a[a], va);
    for (int k = 0; k < 3; ++k) gXc[k] -= beta[a] * va[k];
  }
  cam.backward_terms(e.Xc, iz, e.a, d, Jv, alpha, beta, gXc, gK, gD);
  matTvec3(R, gXc, gX);
}

}  // namespace pfp
