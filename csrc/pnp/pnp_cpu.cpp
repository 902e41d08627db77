// CPU kernels of solve_pnp and its backward: problems in parallel (OpenMP through
// at::parallel_for), points serially; all math in double, from csrc/common/.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include "common/pnp_ransac.h"
#include "pnp/pnp_cpu_simd.h"
#include "pnp/pnp_glue.h"

namespace {

using pfp::NormalEq;
using pfp::OmegaAccum;
using pfp::PointEval;
using pfp::PointObs;
using pfp::Pose;

// Serial accumulator over one problem's points (see common/pnp_solver.h, pnp_batch.h,
// pnp_ransac.h). kMasked: whether load() may apply RANSAC's inlier mask (solve_pnp's loads
// are then free of the test). For a plain pinhole with the l2 or Huber loss, check() also
// copies the points into this thread's structure of arrays, and normal_eq() runs the
// vectorised passes over it (pnp_cpu_simd.h).
template <typename scalar_t, bool kMasked = false>
struct CpuAccumulator {
  const scalar_t* X;  // (N,3)
  const scalar_t* x;  // (N,2)
  const scalar_t* w;  // (N,2)
  pfp::Camera<double> cam;
  int64_t N;
  pfp::Robust<double> rob;
  bool* mask = nullptr;  // RANSAC's inlier set, (N); null for solve_pnp
  bool use_mask = false;

  PointObs<double> load(int64_t i) const {
    if constexpr (kMasked) return pfp::load_point<double>(X, x, w, i, use_mask ? mask : nullptr);
    return pfp::load_point<double>(X, x, w, i);
  }
  PointObs<double> load_raw(int64_t i) const { return pfp::load_point<double>(X, x, w, i); }

  void msac(const Pose<double>& P, double thr2, double bound, bool write, double& score,
            int32_t& n, int32_t& changed) const {
    score = 0.0;
    n = changed = 0;
    for (int64_t i = 0; i < N; ++i) {
      pfp::msac_add(*this, P, thr2, write, i, score, n, changed);
      if (!write && score > bound) return;  // cannot beat the bound any more
    }
  }
  void clear_mask() const {
    for (int64_t i = 0; i < N; ++i) mask[i] = false;
  }

  template <typename F>
  void for_each_point(F&& f) const {
    for (int64_t i = 0; i < N; ++i) f(i);
  }
  void reduce(double*, int) const {}  // one thread: the sums are already total

  // The global start's descents: in vector lanes where the CPU has them (pnp_cpu_starts.h).
  static pfp::StartEnds<double>& thread_starts() {
    static thread_local pfp::StartEnds<double> ends;
    return ends;
  }
  void descend_starts(const pfp::QuarticForm<double>& F) const {
    const auto lanes = pyfacepnp::pinhole_passes().starts;
    if (lanes != nullptr) lanes(F, thread_starts());
    else pfp::descend_starts_serial(F, thread_starts());
  }
  double start_minimum(int k, double* R, bool& dup) const {
    const auto& e = thread_starts();
    for (int i = 0; i < 9; ++i) R[i] = e.R[k][i];
    dup = e.dup[k];
    return e.f[k];
  }

  mutable pyfacepnp::PointsSoA* soa = nullptr;  // set by check() when the fast path applies

  // Whatever N: a problem padded with zero-weight points must give exactly (bitwise) the
  // unpadded answer, which holds only when both take the same path (the padding adds zeros to
  // the same lanes).
  bool vectorised() const {
    return !kMasked && !cam.distorted() && rob.kind <= pfp::kLossHuber &&
           pyfacepnp::pinhole_passes().omega != nullptr;
  }

  // A buffer per thread, reused by its problems (no allocation per problem).
  static pyfacepnp::PointsSoA& thread_points() {
    static thread_local pyfacepnp::PointsSoA pts;
    return pts;
  }

  mutable double soa_sums[4];  // the centroid's sums from check() when soa is set

  bool check(int& n_active) const {
    soa = vectorised() ? &thread_points() : nullptr;
    if (soa != nullptr) {
      soa->resize(N);
      return pyfacepnp::pinhole_passes().check<scalar_t>(w == nullptr)(X, x, w, N, *soa, n_active,
                                                                       soa_sums);
    }
    n_active = 0;
    bool ok = true;
    for (int64_t i = 0; i < N; ++i) {
      const auto o = load(i);
      if (o.w[0] == 0.0 && o.w[1] == 0.0) continue;  // zero-weight padding: any coordinates
      ok = ok && o.valid();
      n_active += o.active() ? 1 : 0;
    }
    return ok;
  }

  void centroid(double* mean) const {
    if (soa != nullptr) {
      for (int k = 0; k < 3; ++k) mean[k] = soa_sums[k] / soa_sums[3];
      return;
    }
    double s[3] = {0, 0, 0}, ws = 0;
    for (int64_t i = 0; i < N; ++i) {
      const auto o = load(i);
      if (!o.active()) continue;
      const double wi = o.w[0] + o.w[1];
      for (int k = 0; k < 3; ++k) s[k] += wi * o.X[k];
      ws += wi;
    }
    for (int k = 0; k < 3; ++k) mean[k] = s[k] / ws;
  }

  void omega(const double* mean, const pfp::RayMap<double>& rays, OmegaAccum<double>& acc) const {
    if (soa != nullptr) return pyfacepnp::pinhole_passes().omega(*soa, mean, rays.Kinv, acc);
    acc.zero();
    for (int64_t i = 0; i < N; ++i) {
      const auto o = load(i);
      if (!o.active()) continue;
      double Xr[3], m[3];
      for (int k = 0; k < 3; ++k) Xr[k] = o.X[k] - mean[k];
      pfp::Camera<double>::ray(rays, o.x, m);
      pfp::add_point_omega(Xr, m, 0.5 * (o.w[0] + o.w[1]), acc);
    }
  }

  bool normal_eq(const Pose<double>& P, bool exact, NormalEq<double>& acc) const {
    if (soa != nullptr) {
      const auto& passes = pyfacepnp::pinhole_passes();
      const pyfacepnp::PinholePass pass{soa, P, cam.K, rob};
      return passes.normal_eq(rob.kind, exact)(pass, acc);
    }
    acc.zero();
    for (int64_t i = 0; i < N; ++i) {
      const auto o = load(i);
      if (!o.active()) continue;
      PointEval<double> e;
      if (!pfp::eval_point(P, cam, o, e)) return false;
      pfp::add_point_normal_eq(e, o, cam, rob, exact, acc);
    }
    acc.symmetrize();
    return true;
  }
};

// backward_problem for a converged problem when acc.vectorised() (pnp_cpu_simd.h); false,
// having written nothing, for any other.
template <typename scalar_t>
bool vectorised_backward_problem(CpuAccumulator<scalar_t>& acc,
                                 const pfp::PnPBackwardArgs<scalar_t>& a, int64_t b) {
  Pose<double> P;
  double v[6], gcost;
  if (!pfp::backward_adjoint(a, b, acc.rob, P, v, gcost)) return false;
  const int64_t N = acc.N;
  const pyfacepnp::PinholeBackward<scalar_t> pass{
      acc.X, acc.x, acc.w, N, P, acc.cam.K, acc.rob, v, gcost,
      a.gX + b * N * 3, a.gx + b * N * 2, a.gw + b * N * 2};
  double gcam[6 + pfp::kMaxDistortion] = {};  // dL/dD stays zero: no lens
  pyfacepnp::pinhole_passes().backward<scalar_t>(acc.rob.kind)(pass, gcam);
  pfp::store_camera_grad(a, b, gcam, 0, 1);
  return true;
}

// Problem b's accumulator over the flat arrays of `a` (forward or backward arguments); null
// weights (unit weights) stay null rather than becoming an offset from null.
template <bool kMasked = false, typename Args>
auto problem_accumulator(const Args& a, int64_t b, const pfp::Camera<double>& cam,
                         const pfp::Robust<double>& rob, bool* mask = nullptr) {
  using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(a.X)>>;
  const int64_t N = a.N;
  return CpuAccumulator<scalar_t, kMasked>{a.X + b * N * 3, a.x + b * N * 2,
                                           a.w == nullptr ? nullptr : a.w + b * N * 2,
                                           cam, N, rob, mask};
}

// Problems per thread chunk: about 4096 point-evaluations, so that small problems are not
// spread over threads whose start-up costs more than the work.
int64_t grain_size(int64_t N) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1)); }

// f(b, cam) for every problem b of `a` (flat arguments with K, D, model, B and N), problems
// in parallel, each with its camera.
template <typename Args, typename F>
void for_each_problem(const Args& a, F&& f) {
  at::parallel_for(0, a.B, grain_size(a.N), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) f(b, pfp::problem_camera(a.K, a.D, a.model, b));
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
solve_pnp_cpu(const at::Tensor& points3d_in, const at::Tensor& points2d_in, const at::Tensor& K_in,
              const std::optional<at::Tensor>& weights_in,
              const std::optional<at::Tensor>& init_R_in,
              const std::optional<at::Tensor>& init_t_in, c10::string_view loss,
              double huber_delta, int64_t max_iterations, double tolerance,
              const std::optional<at::Tensor>& loss_scales,
              const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  auto call = pyfacepnp::ForwardCall::prepare(points3d_in, points2d_in, K_in, weights_in,
                                              init_R_in, init_t_in, loss, huber_delta,
                                              max_iterations, tolerance, loss_scales, distortion,
                                              camera_model);
  const int64_t B = call.batch();
  if (B == 0) return call.out.as_tuple();
  AT_DISPATCH_FLOATING_TYPES(call.in.X.scalar_type(), "solve_pnp_cpu", [&] {
    const auto a = call.args<scalar_t>();
    for_each_problem(a, [&](int64_t b, const pfp::Camera<double>& cam) {
      auto acc = problem_accumulator(a, b, cam, a.prm.rob);
      pfp::forward_problem(acc, a, b, cam, 0, 1);
    });
  });
  return call.out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_pnp_backward_cpu(
    const std::optional<at::Tensor>& grad_R_in, const std::optional<at::Tensor>& grad_t_in,
    const std::optional<at::Tensor>& grad_cost_in,
    const at::Tensor& points3d_in, const at::Tensor& points2d_in, const at::Tensor& K_in,
    const std::optional<at::Tensor>& weights_in, const at::Tensor& state_in,
    const at::Tensor& status_in,
    c10::string_view loss, double huber_delta, const std::optional<at::Tensor>& loss_scales,
    const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  auto call = pyfacepnp::BackwardCall::prepare(grad_R_in, grad_t_in, grad_cost_in, points3d_in,
                                               points2d_in, K_in, weights_in, state_in,
                                               status_in, loss, huber_delta, loss_scales,
                                               distortion, camera_model);
  const int64_t B = call.batch();
  if (B == 0) return call.out.as_tuple();
  AT_DISPATCH_FLOATING_TYPES(call.in.X.scalar_type(), "solve_pnp_backward_cpu", [&] {
    const auto a = call.args<scalar_t>();
    for_each_problem(a, [&](int64_t b, const pfp::Camera<double>& cam) {
      auto acc = problem_accumulator(a, b, cam, a.rob);
      if (!(acc.vectorised() && vectorised_backward_problem(acc, a, b)))
        pfp::backward_problem(acc, a, b, cam, 0, 1);
    });
  });
  return call.out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor, at::Tensor>
solve_pnp_ransac_cpu(const at::Tensor& points3d_in, const at::Tensor& points2d_in,
                     const at::Tensor& K_in, const std::optional<at::Tensor>& weights_in,
                     c10::string_view loss,
                     double loss_scale, double threshold, double confidence, int64_t max_trials,
                     int64_t seed, int64_t max_iterations, double tolerance,
                     const std::optional<at::Tensor>& loss_scales,
                     const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  auto call = pyfacepnp::RansacCall::prepare(points3d_in, points2d_in, K_in, weights_in, loss,
                                             loss_scale, threshold, confidence, max_trials, seed,
                                             max_iterations, tolerance, loss_scales, distortion,
                                             camera_model);
  const int64_t B = call.batch(), N = call.in.X.size(1);
  if (B == 0) return call.out.as_tuple();
  AT_DISPATCH_FLOATING_TYPES(call.in.X.scalar_type(), "solve_pnp_ransac_cpu", [&] {
    const auto ra = call.args<scalar_t>();
    const auto& a = ra.f;
    for_each_problem(a, [&](int64_t b, const pfp::Camera<double>& cam) {
      auto acc = problem_accumulator<true>(a, b, cam, a.prm.rob, ra.inliers + b * N);
      pfp::ransac_problem(acc, ra, b, cam, 0, 1);
    });
  });
  return call.out.as_tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
solve_pnp_minima_cpu(const at::Tensor& points3d_in, const at::Tensor& points2d_in,
                     const at::Tensor& K_in, const std::optional<at::Tensor>& weights_in,
                     c10::string_view loss,
                     double loss_scale, int64_t num_solutions, int64_t max_iterations,
                     double tolerance, const std::optional<at::Tensor>& loss_scales,
                     const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  auto call = pyfacepnp::MinimaCall::prepare(points3d_in, points2d_in, K_in, weights_in, loss,
                                             loss_scale, num_solutions, max_iterations,
                                             tolerance, loss_scales, distortion, camera_model);
  const int64_t B = call.batch();
  if (B == 0) return call.as_tuple();
  AT_DISPATCH_FLOATING_TYPES(call.in.X.scalar_type(), "solve_pnp_minima_cpu", [&] {
    const auto m = call.args<scalar_t>();
    const auto& a = m.f;
    for_each_problem(a, [&](int64_t b, const pfp::Camera<double>& cam) {
      auto acc = problem_accumulator(a, b, cam, a.prm.rob);
      pfp::minima_problem(acc, m, b, cam, 0, 1);
    });
  });
  return call.as_tuple();
}

std::tuple<at::Tensor, at::Tensor> pnp_hessian_cpu(
    const at::Tensor& R, const at::Tensor& t, const at::Tensor& points3d,
    const at::Tensor& points2d, const at::Tensor& K, const std::optional<at::Tensor>& weights,
    c10::string_view loss, double loss_scale, const std::optional<at::Tensor>& loss_scales,
    const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  auto call = pyfacepnp::HessianCall::prepare("pnp_hessian", R, t, points3d, points2d, K,
                                              weights, loss, loss_scale, loss_scales,
                                              distortion, camera_model);
  call.allocate_forward();
  AT_DISPATCH_FLOATING_TYPES(call.X.scalar_type(), "pnp_hessian_cpu", [&] {
    const auto a = call.args<scalar_t>();
    for_each_problem(a, [&](int64_t b, const pfp::Camera<double>& cam) {
      auto acc = problem_accumulator(a, b, cam, a.rob);
      pfp::hessian_problem(acc, a, b, cam, 0, 1);
    });
  });
  return call.forward_outputs();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
pnp_hessian_backward_cpu(const at::Tensor& grad_H, const at::Tensor& R, const at::Tensor& t,
                         const at::Tensor& points3d, const at::Tensor& points2d,
                         const at::Tensor& K, const std::optional<at::Tensor>& weights,
                         const at::Tensor& valid, c10::string_view loss, double loss_scale,
                         const std::optional<at::Tensor>& loss_scales,
                         const std::optional<at::Tensor>& distortion, int64_t camera_model) {
  auto call = pyfacepnp::HessianCall::prepare("pnp_hessian_backward", R, t, points3d, points2d,
                                              K, weights, loss, loss_scale, loss_scales,
                                              distortion, camera_model);
  call.allocate_backward(grad_H, valid);
  AT_DISPATCH_FLOATING_TYPES(call.X.scalar_type(), "pnp_hessian_backward_cpu", [&] {
    const auto a = call.args<scalar_t>();
    for_each_problem(a, [&](int64_t b, const pfp::Camera<double>& cam) {
      auto acc = problem_accumulator(a, b, cam, a.rob);
      pfp::hessian_backward_problem(acc, a, b, cam, 0, 1);
    });
  });
  return call.backward_outputs();
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfacepnp, CPU, m) {
  m.impl("pnp_hessian", &pnp_hessian_cpu);
  m.impl("pnp_hessian_backward", &pnp_hessian_backward_cpu);
  m.impl("solve_pnp_minima", &solve_pnp_minima_cpu);
  m.impl("solve_pnp", &solve_pnp_cpu);
  m.impl("solve_pnp_backward", &solve_pnp_backward_cpu);
  m.impl("solve_pnp_ransac", &solve_pnp_ransac_cpu);
}
