// What a kernel does with one problem of the batch, shared by the CPU and CUDA kernels: the
// forward (solve, make the result fit the output dtype, store) and the backward driver.
//
// The threads that cooperate on a problem (one on the CPU, a warp on the GPU) all call these
// with the same arguments; `lane` and `lanes` share out the stores. The backward's sums over
// points go through the accumulator (see common/pnp_solver.h), which also provides
//   void for_each_point(F f)           f(n) for this thread's points n
//   void reduce(double* v, int n)      sum v over the cooperating threads, to every thread
#pragma once
#include "common/pnp_args.h"

namespace pfp {

// The largest finite value of an output dtype.
template <typename scalar_t>
struct DtypeMax;
template <>
struct DtypeMax<float> {
  static constexpr double value = 3.4028234663852886e38;
};
template <>
struct DtypeMax<double> {
  static constexpr double value = 1.7976931348623157e308;
};

template <typename scalar_t>
PFP_HD bool fits(double v) {
  return is_finite(v) && tabs(v) <= DtypeMax<scalar_t>::value;
}

// The outputs of an INVALID_INPUT problem: R = I, t = 0, cost = 0, zero covariance.
template <typename T>
PFP_HD void set_invalid(ProblemResult<T>& res) {
  for (int i = 0; i < 9; ++i) res.pose.R[i] = (i % 4 == 0) ? T(1) : T(0);
  for (int i = 0; i < 3; ++i) res.pose.t[i] = T(0);
  for (int i = 0; i < 36; ++i) res.cov[i] = T(0);
  res.cost = T(0);
  res.status = kInvalidInput;
}

// A result whose pose, cost or covariance does not fit the output dtype (a float32 scene
// beyond float32's range, weights near its maximum, a float64 scene scaled by ~1e155) is
// INVALID_INPUT: a CONVERGED problem always has finite outputs in the caller's dtype, and
// the backward never meets an overflowed covariance.
template <typename scalar_t>
PFP_HD void make_representable(ProblemResult<double>& res) {
  bool ok = fits<scalar_t>(res.cost);
  for (int i = 0; i < 9; ++i) ok = ok && fits<scalar_t>(res.pose.R[i]);
  for (int i = 0; i < 3; ++i) ok = ok && fits<scalar_t>(res.pose.t[i]);
  for (int i = 0; i < 36; ++i) ok = ok && fits<scalar_t>(res.cov[i]);
  if (!ok) set_invalid(res);
}

// Problem b's robust kernel: the batch's, with the problem's own scale when per-problem scales
// are given (false when that scale is outside [kLossScaleMin, kLossScaleMax]).
PFP_HD bool problem_robust(const Robust<double>& batch, const double* scales, int64_t b,
                           Robust<double>& rob) {
  rob = batch;
  if (scales == nullptr) return true;
  rob.delta = scales[b];
  return rob.delta >= kLossScaleMin && rob.delta <= kLossScaleMax;
}

// Store problem b's result; the float64 state is zero unless it converged.
template <typename scalar_t>
PFP_HD void store_result(const PnPForwardArgs<scalar_t>& a, int64_t b,
                         const ProblemResult<double>& res, int lane, int lanes) {
  const bool conv = res.status == kConverged;
  for (int i = lane; i < 9; i += lanes) a.R[9 * b + i] = scalar_t(res.pose.R[i]);
  for (int i = lane; i < 3; i += lanes) a.t[3 * b + i] = scalar_t(res.pose.t[i]);
  for (int i = lane; i < 36; i += lanes) a.cov[36 * b + i] = scalar_t(res.cov[i]);
  for (int i = lane; i < kStateSize; i += lanes) {
    const double v = i < 9 ? res.pose.R[i] : i < 12 ? res.pose.t[i - 9] : res.cov[i - 12];
    a.state[kStateSize * b + i] = conv ? v : 0.0;
  }
  if (lane == 0) {
    a.cost[b] = scalar_t(res.cost);
    a.iterations[b] = res.iterations;
    a.status[b] = res.status;
  }
}

// Solve problem b with its camera (whose parameters the caller may keep close) and store
// the result.
template <typename scalar_t, typename Acc>
PFP_HD void forward_problem(Acc& acc, const PnPForwardArgs<scalar_t>& a, int64_t b,
                            const Camera<double>& cam, int lane, int lanes) {
  Pose<double> init;
  const bool has_init = a.init_R != nullptr;
  if (has_init) {
    for (int i = 0; i < 9; ++i) init.R[i] = a.init_R[9 * b + i];
    for (int i = 0; i < 3; ++i) init.t[i] = a.init_t[3 * b + i];
  }
  ProblemResult<double> res;
  if (problem_robust(a.prm.rob, a.scales, b, acc.rob)) {
    solve_problem(acc, cam, has_init ? &init : nullptr, a.prm, res);
    make_representable<scalar_t>(res);
  } else {
    set_invalid(res);
    res.iterations = 0;
  }
  store_result(a, b, res, lane, lanes);
}

// Every minimum of problem b (common/pnp_solver.h, solve_minima), the k lowest stored in
// its slots b * k + j, sorted by cost. The slots past the count found hold R = I, t = 0 and
// the status DEGENERATE (no further minimum), or the problem's own status when it has none
// (INVALID_INPUT, DEGENERATE).
template <typename scalar_t, typename Acc>
PFP_HD void minima_problem(Acc& acc, const PnPMinimaArgs<scalar_t>& m, int64_t b,
                           const Camera<double>& cam, int lane, int lanes) {
  const auto& a = m.f;
  ProblemResult<double> res[kMaxSolutions];
  int count = 0;
  if (problem_robust(a.prm.rob, a.scales, b, acc.rob)) {
    count = solve_minima(acc, cam, a.prm, res, m.k);
  } else {
    set_invalid(res[0]);
    res[0].iterations = 0;
  }
  const int32_t none = count == 0 ? res[0].status : int32_t(kDegenerate);
  for (int j = 0; j < m.k; ++j) {
    if (j < count) {
      make_representable<scalar_t>(res[j]);
    } else {
      set_invalid(res[j]);
      res[j].iterations = 0;
      res[j].status = none;
    }
    store_result(a, b * m.k + j, res[j], lane, lanes);
  }
  if (lane == 0) m.count[b] = count;
}

// What every point's backward of problem b needs, from the float64 state of the forward: the
// robust kernel, the pose, v = H^-1 dL/dtheta and the cost's upstream gradient. False (v = 0)
// unless the problem converged.
template <typename scalar_t>
PFP_HD bool backward_adjoint(const PnPBackwardArgs<scalar_t>& a, int64_t b, Robust<double>& rob,
                             Pose<double>& P, double* v, double& gcost) {
  const bool conv = problem_robust(a.rob, a.scales, b, rob) && a.status[b] == kConverged;
  const double* st = a.state + kStateSize * b;
  for (int i = 0; i < 6; ++i) v[i] = 0.0;
  gcost = 0.0;
  for (int i = 0; i < 9; ++i) P.R[i] = st[i];
  for (int i = 0; i < 3; ++i) P.t[i] = st[9 + i];
  if (conv) {
    double gR[9], gt[3], gtheta[6];
    for (int i = 0; i < 9; ++i) gR[i] = double(a.gR[9 * b + i]);
    for (int i = 0; i < 3; ++i) gt[i] = double(a.gt[3 * b + i]);
    pose_cotangent(P.R, gR, gt, gtheta);
    for (int i = 0; i < 6; ++i) {
      double s = 0.0;
      for (int j = 0; j < 6; ++j) s += st[12 + 6 * i + j] * gtheta[j];
      v[i] = s;
    }
    gcost = double(a.gc[b]);
  }
  return conv;
}

// Problem b's dL/dK (rows 0-1 of gcam; row 2 is zero) and dL/dD.
template <typename scalar_t>
PFP_HD void store_camera_grad(const PnPBackwardArgs<scalar_t>& a, int64_t b, const double* gcam,
                              int lane, int lanes) {
  for (int k = lane; k < 9; k += lanes) a.gK[9 * b + k] = scalar_t(k < 6 ? gcam[k] : 0.0);
  if (a.gD != nullptr)
    for (int k = lane; k < kMaxDistortion; k += lanes)
      a.gD[kMaxDistortion * b + k] = scalar_t(gcam[6 + k]);
}

// The implicit backward of problem b (see docs/math.md): backward_adjoint, then each point's
// term. Writes every gradient entry of the problem: zeros unless it converged, and zeros for
// zero-weight coordinates (a zero weight removes a coordinate exactly; its weight's gradient
// is zero too, see docs/api.md).
template <typename scalar_t, typename Acc>
PFP_HD void backward_problem(Acc& acc, const PnPBackwardArgs<scalar_t>& a, int64_t b,
                             const Camera<double>& cam, int lane, int lanes) {
  Pose<double> P;
  double v[6], gcost;
  const bool conv = backward_adjoint(a, b, acc.rob, P, v, gcost);
  // dL/dK rows 0-1 (6), then dL/dD (kMaxDistortion) for a distorted camera.
  constexpr int kCam = 6 + kMaxDistortion;
  double gcam[kCam];
  for (int k = 0; k < kCam; ++k) gcam[k] = 0.0;
  acc.for_each_point([&](int64_t n) {
    const int64_t i = b * a.N + n;
    double pX[3] = {0, 0, 0}, px[2] = {0, 0}, pw[2] = {0, 0};
    if (conv) {
      const PointObs<double> o = acc.load(n);
      PointEval<double> e;
      if (o.active() && eval_point(P, cam, o, e)) {
        double pc[kCam];
        point_backward(e, o, cam, P.R, acc.rob, v, gcost, pX, px, pc, pw, pc + 6);
        for (int k = 0; k < 2; ++k)
          if (!(o.w[k] > 0.0)) pw[k] = 0.0;
        const int nc = cam.distorted() ? kCam : 6;
        for (int k = 0; k < nc; ++k) gcam[k] += pc[k];
      }
    }
    store_point_gradients(a, i, pX, px, pw);
  });
  acc.reduce(gcam, cam.distorted() ? kCam : 6);
  store_camera_grad(a, b, gcam, lane, lanes);
}

}  // namespace pfp
