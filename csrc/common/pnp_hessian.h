// The exact Hessian of the PnP objective in the local pose coordinates at a given pose, and
// its derivatives in every input (third derivatives of the objective), shared by the CPU and
// CUDA kernels: what pose_nll's log-determinant and its gradient need
// (pyfacepnp/pose_distribution.py).
//
// H = sum_i H_i, with H_i the point's term of add_point_normal_eq (exact). H_i depends on the
// pose only through Y_i = R X_i and t (the chart perturbs R on the left), so for an upstream
// gradient G = dL/dH each point's share of dL/d(inputs) is the gradient of the scalar
// phi_i = <G, H_i> in (Y_i, t, x_i, w_i, K, D), taken by forward-mode Jets (common/jet.h)
// through the same per-point functions the solver uses; then dL/dX_i = R^T dphi/dY_i and
// dL/dR = sum_i dphi/dY_i X_i^T.
#pragma once
#include "common/pnp_args.h"

namespace pfp {

template <typename scalar_t>
struct PnPHessianArgs {
  const double* R;        // (B, 3, 3) the poses the Hessian is taken at
  const double* t;        // (B, 3)
  const scalar_t* X;      // (B, N, 3)
  const scalar_t* x;      // (B, N, 2)
  const scalar_t* w;      // (B, N, 2); null: unit weights
  const double* K;        // (B, 3, 3)
  int64_t B, N;
  Robust<double> rob;
  const double* scales;   // (B) per-problem loss scales; null: none
  const double* D;        // (B, kMaxDistortion); null: plain pinhole
  int32_t model;
  // forward
  double* H;              // (B, 6, 6), zero where not valid
  bool* valid;            // (B)
  // backward
  const double* gH;       // (B, 6, 6) upstream gradient
  const bool* valid_in;   // (B) the forward's `valid`
  scalar_t* gR;           // (B, 3, 3)
  scalar_t* gt;           // (B, 3)
  scalar_t* gX;           // (B, N, 3)
  scalar_t* gx;           // (B, N, 2)
  scalar_t* gK;           // (B, 3, 3)
  scalar_t* gw;           // (B, N, 2)
  scalar_t* gD;           // (B, kMaxDistortion) when D is given
};

// Problem b's pose; false when it is not finite.
template <typename scalar_t>
PFP_HD bool hessian_pose(const PnPHessianArgs<scalar_t>& a, int64_t b, Pose<double>& P) {
  for (int i = 0; i < 9; ++i) P.R[i] = a.R[9 * b + i];
  for (int i = 0; i < 3; ++i) P.t[i] = a.t[3 * b + i];
  bool ok = true;
  for (int i = 0; i < 9; ++i) ok = ok && is_finite(P.R[i]);
  for (int i = 0; i < 3; ++i) ok = ok && is_finite(P.t[i]);
  return ok;
}

// The exact Hessian of problem b at its given pose. It exists (valid) when the inputs, the
// camera and the loss scale are valid and every active point is in front of the camera;
// elsewhere H is zero. Acc: the accumulator of common/pnp_solver.h (load, for_each_point,
// reduce, rob).
template <typename scalar_t, typename Acc>
PFP_HD void hessian_problem(Acc& acc, const PnPHessianArgs<scalar_t>& a, int64_t b,
                            const Camera<double>& cam, int lane, int lanes) {
  Pose<double> P;
  bool ok = problem_robust(a.rob, a.scales, b, acc.rob) && cam.valid() && hessian_pose(a, b, P);
  NormalEq<double> eq;
  eq.zero();
  double bad = 0.0;  // this thread's points that are invalid or not in front
  acc.for_each_point([&](int64_t n) {
    const PointObs<double> o = acc.load(n);
    if (o.w[0] == 0.0 && o.w[1] == 0.0) return;  // padding: any coordinates
    PointEval<double> e;
    if (!o.valid() || !ok || !eval_point(P, cam, o, e)) {
      bad += 1.0;
      return;
    }
    add_point_normal_eq(e, o, cam, acc.rob, true, eq);
  });
  double sums[37];
  for (int i = 0; i < 36; ++i) sums[i] = eq.H[i];
  sums[36] = bad;
  acc.reduce(sums, 37);
  for (int i = 0; i < 36; ++i) eq.H[i] = sums[i];
  eq.symmetrize();
  ok = ok && sums[36] == 0.0;
  for (int i = 0; i < 36; ++i) ok = ok && is_finite(eq.H[i]);
  for (int i = lane; i < 36; i += lanes) a.H[36 * b + i] = ok ? eq.H[i] : 0.0;
  if (lane == 0) a.valid[b] = ok;
}

// An accumulator of add_point_normal_eq that keeps no Hessian: each entry it is given is
// contracted at once with the upstream gradient, phi += Gs[k] H_k (Gs: the lower triangle of
// G + G^T, diagonal G_kk, since only H's lower triangle is accumulated).
template <typename J>
struct ContractRef {
  J* phi;
  double g;
  PFP_HD void operator+=(const J& v) const { *phi += g * v; }
  PFP_HD void operator-=(const J& v) const { *phi -= g * v; }
};
template <typename J>
struct Contraction {
  J* phi;
  const double* Gs;
  PFP_HD ContractRef<J> operator[](int k) const { return {phi, Gs[k]}; }
};
template <typename J>
struct ContractEq {
  J cost;
  J g[6];
  Contraction<J> H;
};

// The Jet directions of a point's phi: Y (3), t (3), x (2), w (2), K's rows 0-1 (6), then
// the lens coefficients when the camera has them.
constexpr int kJetY = 0, kJetT = 3, kJetX = 6, kJetW = 8, kJetK = 10, kJetD = 16;
constexpr int kJetPinhole = kJetD, kJetLens = kJetD + kMaxDistortion;

// d phi_i / d(Y, t, x, w, K, D) of one active point in front of the camera, written to
// `out` (M entries in the order above). M: kJetPinhole, or kJetLens for a distorted camera.
template <int M>
PFP_HD void hessian_point_backward(const Pose<double>& P, const Camera<double>& cam,
                                   const PointObs<double>& o, const Robust<double>& rob,
                                   const double* Gs, double* out) {
  using J = Jet<double, M>;
  double Y[3];
  matvec3(P.R, o.X, Y);
  PointEval<J> e;
  PointObs<J> oj;
  for (int k = 0; k < 3; ++k) {
    oj.X[k] = J(o.X[k]);  // not read: the point enters through Y
    e.Y[k] = J::variable(Y[k], kJetY + k);
    e.Xc[k] = e.Y[k] + J::variable(P.t[k], kJetT + k);
  }
  for (int a = 0; a < 2; ++a) {
    oj.x[a] = J::variable(o.x[a], kJetX + a);
    oj.w[a] = J::variable(o.w[a], kJetW + a);
  }
  J Kj[9], Dj[kMaxDistortion];
  for (int k = 0; k < 9; ++k) Kj[k] = k < 6 ? J::variable(cam.K[k], kJetK + k) : J(cam.K[k]);
  Camera<J> cj{Kj};
  if constexpr (M > kJetPinhole) {
    for (int k = 0; k < kMaxDistortion; ++k) Dj[k] = J::variable(cam.D[k], kJetD + k);
    cj.D = Dj;
    cj.model = cam.model;
  }
  J u[2], iz;
  cj.project(e.Xc, u, e.a, iz);  // in front: the caller's forward pass checked it
  set_residual(oj, u, e);
  const Robust<J> rj{rob.kind, J(rob.delta)};
  J phi(0.0);
  ContractEq<J> acc{J(0.0), {}, {&phi, Gs}};
  for (int k = 0; k < 6; ++k) acc.g[k] = J(0.0);
  add_point_normal_eq(e, oj, cj, rj, true, acc);
  for (int k = 0; k < M; ++k) out[k] = phi.d[k];
}

// The backward of hessian_problem for problem b: dL/d(R, t, X, x, K, w, D) from
// G = dL/dH. Writes every gradient entry of the problem: zeros where the forward was not
// valid, for inactive points, and for zero-weight coordinates' weights (a zero weight removes
// a coordinate exactly, as in solve_pnp's backward).
template <typename scalar_t, typename Acc>
PFP_HD void hessian_backward_problem(Acc& acc, const PnPHessianArgs<scalar_t>& a, int64_t b,
                                     const Camera<double>& cam, int lane, int lanes) {
  Pose<double> P;
  // A zero upstream gradient (a problem the loss masks out) gives exact zeros, whatever the
  // point terms' derivatives are.
  bool ok = a.valid_in[b] && problem_robust(a.rob, a.scales, b, acc.rob) && hessian_pose(a, b, P);
  bool any = false;
  for (int i = 0; i < 36; ++i) any = any || a.gH[36 * b + i] != 0.0;
  ok = ok && any;
  double Gs[36];
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j)
      Gs[6 * i + j] = j > i   ? 0.0
                      : j == i ? a.gH[36 * b + 7 * i]
                               : a.gH[36 * b + 6 * i + j] + a.gH[36 * b + 6 * j + i];
  // Per-problem sums: dL/dR (9), dL/dt (3), dL/dK rows 0-1 (6), dL/dD.
  constexpr int kSums = 18 + kMaxDistortion;
  double s[kSums];
  for (int k = 0; k < kSums; ++k) s[k] = 0.0;
  acc.for_each_point([&](int64_t n) {
    const int64_t i = b * a.N + n;
    double pX[3] = {0, 0, 0}, px[2] = {0, 0}, pw[2] = {0, 0};
    const PointObs<double> o = acc.load(n);
    if (ok && o.active()) {
      double d[kJetLens];
      if (cam.distorted())
        hessian_point_backward<kJetLens>(P, cam, o, acc.rob, Gs, d);
      else
        hessian_point_backward<kJetPinhole>(P, cam, o, acc.rob, Gs, d);
      matTvec3(P.R, d + kJetY, pX);
      for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) s[3 * r + c] += d[kJetY + r] * o.X[c];
      for (int k = 0; k < 3; ++k) s[9 + k] += d[kJetT + k];
      for (int k = 0; k < 6; ++k) s[12 + k] += d[kJetK + k];
      if (cam.distorted())
        for (int k = 0; k < kMaxDistortion; ++k) s[18 + k] += d[kJetD + k];
      for (int k = 0; k < 2; ++k) {
        px[k] = d[kJetX + k];
        pw[k] = o.w[k] > 0.0 ? d[kJetW + k] : 0.0;
      }
    }
    store_point_gradients(a, i, pX, px, pw);
  });
  acc.reduce(s, cam.distorted() ? kSums : 18);
  for (int k = lane; k < 9; k += lanes) {
    a.gR[9 * b + k] = scalar_t(s[k]);
    a.gK[9 * b + k] = scalar_t(k < 6 ? s[12 + k] : 0.0);
  }
  for (int k = lane; k < 3; k += lanes) a.gt[3 * b + k] = scalar_t(s[9 + k]);
  if (a.gD != nullptr)
    for (int k = lane; k < kMaxDistortion; k += lanes)
      a.gD[kMaxDistortion * b + k] = scalar_t(s[18 + k]);
}

}  // namespace pfp
