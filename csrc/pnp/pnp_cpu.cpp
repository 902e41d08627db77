// CPU kernels of solve_pnp and its backward: problems in parallel (OpenMP through
// at::parallel_for), points serially; all math in double, from csrc/common/.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include "common/pnp_solver.h"
#include "pnp/pnp_checks.h"

namespace {

using pfp::NormalEq;
using pfp::OmegaAccum;
using pfp::PointEval;
using pfp::PointObs;
using pfp::Pose;

// Serial accumulator over one problem's points (see common/pnp_solver.h).
template <typename scalar_t>
struct CpuAccumulator {
  const scalar_t* X;  // (N,3)
  const scalar_t* x;  // (N,2)
  const scalar_t* w;  // (N,2)
  const double* K;
  int64_t N;
  pfp::Robust<double> rob;

  PointObs<double> load(int64_t i) const {
    PointObs<double> o;
    for (int k = 0; k < 3; ++k) o.X[k] = double(X[3 * i + k]);
    for (int k = 0; k < 2; ++k) {
      o.x[k] = double(x[2 * i + k]);
      o.w[k] = double(w[2 * i + k]);
    }
    return o;
  }

  bool check(int& n_active) const {
    n_active = 0;
    bool ok = true;
    for (int64_t i = 0; i < N; ++i) {
      const auto o = load(i);
      const bool zero_w = o.w[0] == 0.0 && o.w[1] == 0.0;  // padding: any coordinates
      if (zero_w) continue;
      ok = ok && o.valid();
      n_active += o.active() ? 1 : 0;
    }
    return ok;
  }

  void centroid(double* mean) const {
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

  void omega(const double* mean, const double* Kinv, OmegaAccum<double>& acc) const {
    acc.zero();
    for (int64_t i = 0; i < N; ++i) {
      const auto o = load(i);
      if (!o.active()) continue;
      double Xr[3], m[3];
      for (int k = 0; k < 3; ++k) Xr[k] = o.X[k] - mean[k];
      const double xh[3] = {o.x[0], o.x[1], 1.0};
      pfp::matvec3(Kinv, xh, m);
      pfp::add_point_omega(Xr, m, 0.5 * (o.w[0] + o.w[1]), acc);
    }
  }

  bool normal_eq(const Pose<double>& P, bool exact, NormalEq<double>& acc) const {
    acc.zero();
    for (int64_t i = 0; i < N; ++i) {
      const auto o = load(i);
      if (!o.active()) continue;
      PointEval<double> e;
      if (!pfp::eval_point(P, K, o, e)) return false;
      pfp::add_point_normal_eq(e, o, rob, exact, acc);
    }
    acc.symmetrize();
    return true;
  }
};

// Problems per thread chunk: about 4096 point-evaluations, so that small problems are not
// spread over threads whose start-up costs more than the work.
int64_t grain_size(int64_t N) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1)); }

pfp::Robust<double> make_robust(c10::string_view loss, double huber_delta) {
  return pfp::Robust<double>{pyfacepnp::loss_kind(loss), huber_delta};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_pnp_cpu(
    const at::Tensor& points3d_in, const at::Tensor& points2d_in, const at::Tensor& K_in,
    const at::Tensor& weights_in, const std::optional<at::Tensor>& init_R_in,
    const std::optional<at::Tensor>& init_t_in, c10::string_view loss, double huber_delta,
    int64_t max_iterations, double tolerance) {
  pyfacepnp::check_pnp_inputs(points3d_in, points2d_in, K_in, weights_in, init_R_in, init_t_in,
                              loss, huber_delta, max_iterations, tolerance);
  const auto points3d = points3d_in.contiguous();
  const auto points2d = points2d_in.contiguous();
  const auto Kt = K_in.to(at::kDouble).contiguous();
  const auto weights = weights_in.contiguous();
  const bool has_init = init_R_in.has_value();
  at::Tensor init_R, init_t;
  if (has_init) {
    init_R = init_R_in->to(at::kDouble).contiguous();
    init_t = init_t_in->to(at::kDouble).contiguous();
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

  pfp::SolverParams<double> prm;
  prm.rob = make_robust(loss, huber_delta);
  prm.max_iterations = int32_t(max_iterations);
  prm.tolerance = tolerance;
  prm.pd_tol = pyfacepnp::kPdTol;

  AT_DISPATCH_FLOATING_TYPES(points3d.scalar_type(), "solve_pnp_cpu", [&] {
    const scalar_t* X = points3d.data_ptr<scalar_t>();
    const scalar_t* x = points2d.data_ptr<scalar_t>();
    const scalar_t* w = weights.data_ptr<scalar_t>();
    const double* Kp = Kt.data_ptr<double>();
    const double* iR = has_init ? init_R.data_ptr<double>() : nullptr;
    const double* it = has_init ? init_t.data_ptr<double>() : nullptr;
    scalar_t* Ro = R.data_ptr<scalar_t>();
    scalar_t* to = t.data_ptr<scalar_t>();
    scalar_t* co = cost.data_ptr<scalar_t>();
    int32_t* io = iterations.data_ptr<int32_t>();
    int32_t* so = status.data_ptr<int32_t>();
    scalar_t* vo = cov.data_ptr<scalar_t>();
    at::parallel_for(0, B, grain_size(N), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        CpuAccumulator<scalar_t> acc{X + b * N * 3, x + b * N * 2, w + b * N * 2, Kp + 9 * b, N,
                                     prm.rob};
        Pose<double> init;
        if (has_init) {
          for (int i = 0; i < 9; ++i) init.R[i] = iR[9 * b + i];
          for (int i = 0; i < 3; ++i) init.t[i] = it[3 * b + i];
        }
        pfp::ProblemResult<double> res;
        pfp::solve_problem(acc, Kp + 9 * b, has_init ? &init : nullptr, prm, res);
        for (int i = 0; i < 9; ++i) Ro[9 * b + i] = scalar_t(res.pose.R[i]);
        for (int i = 0; i < 3; ++i) to[3 * b + i] = scalar_t(res.pose.t[i]);
        co[b] = scalar_t(res.cost);
        io[b] = res.iterations;
        so[b] = res.status;
        for (int i = 0; i < 36; ++i) vo[36 * b + i] = scalar_t(res.cov[i]);
      }
    });
  });
  return {R, t, cost, iterations, status, cov};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_pnp_backward_cpu(
    const at::Tensor& grad_R_in, const at::Tensor& grad_t_in, const at::Tensor& grad_cost_in,
    const at::Tensor& points3d_in, const at::Tensor& points2d_in, const at::Tensor& K_in,
    const at::Tensor& weights_in, const at::Tensor& R_in, const at::Tensor& t_in,
    const at::Tensor& status_in, const at::Tensor& cov_in, c10::string_view loss,
    double huber_delta) {
  pyfacepnp::check_pnp_backward_inputs(grad_R_in, grad_t_in, grad_cost_in, points3d_in,
                                       points2d_in, K_in, weights_in, R_in, t_in, status_in,
                                       cov_in);
  const auto points3d = points3d_in.contiguous();
  const auto points2d = points2d_in.contiguous();
  const auto weights = weights_in.contiguous();
  const auto dbl = [](const at::Tensor& a) { return a.to(at::kDouble).contiguous(); };
  const auto gR = dbl(grad_R_in), gt = dbl(grad_t_in), gc = dbl(grad_cost_in);
  const auto Kt = dbl(K_in), Rt = dbl(R_in), tt = dbl(t_in), Ct = dbl(cov_in);
  const auto st = status_in.to(at::kInt).contiguous();
  const int64_t B = points3d.size(0), N = points3d.size(1);
  auto gX = at::zeros_like(points3d);
  auto gx = at::zeros_like(points2d);
  auto gK = at::zeros_like(K_in.contiguous());
  auto gw = at::zeros_like(weights);
  if (B == 0) return {gX, gx, gK, gw};
  const auto rob = make_robust(loss, huber_delta);

  AT_DISPATCH_FLOATING_TYPES(points3d.scalar_type(), "solve_pnp_backward_cpu", [&] {
    const scalar_t* X = points3d.data_ptr<scalar_t>();
    const scalar_t* x = points2d.data_ptr<scalar_t>();
    const scalar_t* w = weights.data_ptr<scalar_t>();
    scalar_t* gXo = gX.data_ptr<scalar_t>();
    scalar_t* gxo = gx.data_ptr<scalar_t>();
    scalar_t* gKo = gK.data_ptr<scalar_t>();
    scalar_t* gwo = gw.data_ptr<scalar_t>();
    at::parallel_for(0, B, grain_size(N), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        if (st.data_ptr<int32_t>()[b] != pfp::kConverged) continue;  // zero gradients
        Pose<double> P;
        for (int i = 0; i < 9; ++i) P.R[i] = Rt.data_ptr<double>()[9 * b + i];
        for (int i = 0; i < 3; ++i) P.t[i] = tt.data_ptr<double>()[3 * b + i];
        const double* cov = Ct.data_ptr<double>() + 36 * b;
        const double* K = Kt.data_ptr<double>() + 9 * b;
        double gtheta[6], v[6];
        pfp::pose_cotangent(P.R, gR.data_ptr<double>() + 9 * b, gt.data_ptr<double>() + 3 * b,
                            gtheta);
        for (int i = 0; i < 6; ++i) {
          double s = 0;
          for (int j = 0; j < 6; ++j) s += cov[6 * i + j] * gtheta[j];
          v[i] = s;
        }
        const double gcost = gc.data_ptr<double>()[b];
        CpuAccumulator<scalar_t> acc{X + b * N * 3, x + b * N * 2, w + b * N * 2, K, N, rob};
        double gKacc[6] = {0, 0, 0, 0, 0, 0};
        for (int64_t n = 0; n < N; ++n) {
          const auto o = acc.load(n);
          const int64_t i = b * N + n;
          if (!o.valid()) continue;  // zero-weight padding with non-finite values
          PointEval<double> e;
          if (!pfp::eval_point(P, K, o, e)) continue;  // only padding can be behind the camera
          double pX[3], px[2], pK[6], pw[2];
          pfp::point_backward(e, o, P.R, rob, v, gcost, pX, px, pK, pw);
          for (int k = 0; k < 3; ++k) gXo[3 * i + k] = scalar_t(pX[k]);
          for (int k = 0; k < 2; ++k) {
            gxo[2 * i + k] = scalar_t(px[k]);
            gwo[2 * i + k] = scalar_t(pw[k]);
          }
          for (int k = 0; k < 6; ++k) gKacc[k] += pK[k];
        }
        for (int k = 0; k < 6; ++k) gKo[9 * b + k] = scalar_t(gKacc[k]);
      }
    });
  });
  return {gX, gx, gK, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfacepnp, CPU, m) {
  m.impl("solve_pnp", &solve_pnp_cpu);
  m.impl("solve_pnp_backward", &solve_pnp_backward_cpu);
}
