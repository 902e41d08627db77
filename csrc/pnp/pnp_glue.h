// The torch side of solve_pnp shared by the CPU and CUDA registrations: checks of the
// flattened inputs (the Python wrapper validates the user-facing arguments first, with the
// same rules), tensor preparation and allocation, and packing into the kernels' plain
// argument structs (common/pnp_args.h).
#pragma once
#include <torch/torch.h>

#include <optional>

#include "common/pnp_args.h"
#include "common/pnp_hessian.h"

namespace pyfacepnp {

// Pivot floor of the unit-diagonal-scaled Hessian below which a problem is DEGENERATE (the
// kernels compute in float64 on both devices, so one value serves both).
constexpr double kPdTol = 1e-10;
// The limits the Python wrapper enforces too (pyfacepnp/ops/pnp.py).
constexpr int64_t kMaxIterationsLimit = 100000;
using pfp::kLossScaleMax;
using pfp::kLossScaleMin;
constexpr int64_t kMaxTrialsLimit = 1000000;

// The schema's loss string as the kernels' LossKind (the string was validated before).
inline int32_t loss_kind(c10::string_view loss) {
  if (loss == "huber") return pfp::kLossHuber;
  if (loss == "cauchy") return pfp::kLossCauchy;
  if (loss == "geman_mcclure") return pfp::kLossGemanMcClure;
  return pfp::kLossL2;
}

inline pfp::Robust<double> robust(c10::string_view loss, double huber_delta) {
  return pfp::Robust<double>{loss_kind(loss), huber_delta};
}

inline pfp::SolverParams<double> solver_params(c10::string_view loss, double huber_delta,
                                               int64_t max_iterations, double tolerance) {
  pfp::SolverParams<double> prm;
  prm.rob = robust(loss, huber_delta);
  prm.max_iterations = int32_t(max_iterations);
  prm.tolerance = tolerance;
  prm.pd_tol = kPdTol;
  return prm;
}

inline void check_pnp_inputs(const at::Tensor& X, const at::Tensor& x, const at::Tensor& K,
                             const std::optional<at::Tensor>& w,
                             const std::optional<at::Tensor>& init_R,
                             const std::optional<at::Tensor>& init_t, c10::string_view loss,
                             double huber_delta, int64_t max_iterations, double tolerance) {
  TORCH_CHECK(X.dim() == 3 && X.size(2) == 3, "solve_pnp: points3d must have shape (B, N, 3), got ",
              X.sizes());
  const int64_t B = X.size(0), N = X.size(1);
  TORCH_CHECK(x.dim() == 3 && x.size(0) == B && x.size(1) == N && x.size(2) == 2,
              "solve_pnp: points2d must have shape (", B, ", ", N, ", 2), got ", x.sizes());
  TORCH_CHECK(K.dim() == 3 && K.size(0) == B && K.size(1) == 3 && K.size(2) == 3,
              "solve_pnp: K must have shape (", B, ", 3, 3), got ", K.sizes());
  TORCH_CHECK(!w || (w->dim() == 3 && w->size(0) == B && w->size(1) == N && w->size(2) == 2),
              "solve_pnp: weights must have shape (", B, ", ", N, ", 2), got ", w->sizes());
  TORCH_CHECK(N >= 4, "solve_pnp: needs N >= 4 points per problem, got N = ", N);
  TORCH_CHECK(X.scalar_type() == at::kFloat || X.scalar_type() == at::kDouble,
              "solve_pnp: points3d must be float32 or float64, got ", X.scalar_type());
  for (const auto* t : {&x, &K, w ? &*w : &x})  // absent weights: points2d checked twice
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
  TORCH_CHECK(loss == "l2" || loss == "huber" || loss == "cauchy" || loss == "geman_mcclure",
              "solve_pnp: loss must be 'l2', 'huber', 'cauchy' or 'geman_mcclure', got '", loss,
              "'");
  TORCH_CHECK(huber_delta >= kLossScaleMin && huber_delta <= kLossScaleMax,
              "solve_pnp: loss_scale (huber_delta) must be in [", kLossScaleMin, ", ", kLossScaleMax, "], got ",
              huber_delta);
  TORCH_CHECK(max_iterations >= 1 && max_iterations <= kMaxIterationsLimit,
              "solve_pnp: max_iterations must be in [1, ", kMaxIterationsLimit, "], got ",
              max_iterations);
  TORCH_CHECK(tolerance > 0 && tolerance < 1, "solve_pnp: tolerance must be in (0, 1), got ",
              tolerance);
}

// The schema's camera_model: 0 "pinhole" (with optional OpenCV distortion), 1 "fisheye".
constexpr int64_t kSchemaPinhole = 0, kSchemaFisheye = 1;

// The optional lens coefficients: (B, D) in the points' dtype and device, D in {4, 5, 8, 12}
// for the pinhole (OpenCV's order) and 4 for the fisheye; the kernels' CameraModel.
inline int32_t check_distortion(const char* op, const std::optional<at::Tensor>& dist,
                                int64_t camera_model, const at::Tensor& X) {
  TORCH_CHECK(camera_model == kSchemaPinhole || camera_model == kSchemaFisheye, op,
              ": camera_model must be 0 (pinhole) or 1 (fisheye), got ", camera_model);
  if (!dist.has_value()) {
    TORCH_CHECK(camera_model == kSchemaPinhole, op, ": the fisheye model needs its coefficients");
    return pfp::kModelPinhole;
  }
  TORCH_CHECK(dist->dim() == 2 && dist->size(0) == X.size(0), op,
              ": distortion must have shape (", X.size(0), ", D), got ", dist->sizes());
  const int64_t n = dist->size(1);
  if (camera_model == kSchemaFisheye) {
    TORCH_CHECK(n == 4, op, ": fisheye distortion has 4 coefficients (k1..k4), got ", n);
  } else {
    TORCH_CHECK(n == 4 || n == 5 || n == 8 || n == 12, op,
                ": distortion has 4, 5, 8 or 12 coefficients (k1 k2 p1 p2 [k3 [k4 k5 k6 [s1 s2 "
                "s3 s4]]]), got ", n);
  }
  TORCH_CHECK(dist->scalar_type() == X.scalar_type() && dist->device() == X.device(), op,
              ": distortion must share dtype and device with points3d (", X.scalar_type(), ", ",
              X.device(), "), got ", dist->scalar_type(), ", ", dist->device());
  return camera_model == kSchemaFisheye ? pfp::kModelFisheye : pfp::kModelRadTan;
}

// The coefficients as the kernels read them: (B, kMaxDistortion) float64, zero-padded
// (missing trailing terms are zero in OpenCV's model); undefined when absent.
inline at::Tensor padded_distortion(const std::optional<at::Tensor>& dist) {
  if (!dist.has_value()) return {};
  auto D = at::zeros({dist->size(0), pfp::kMaxDistortion}, dist->options().dtype(at::kDouble));
  D.narrow(1, 0, dist->size(1)).copy_(*dist);
  return D;
}

// The optional per-problem loss scales: (B) float64 on the points' device.
inline void check_loss_scales(const char* op, const std::optional<at::Tensor>& scales,
                              const at::Tensor& X) {
  if (!scales.has_value()) return;
  TORCH_CHECK(scales->dim() == 1 && scales->size(0) == X.size(0) &&
                  scales->scalar_type() == at::kDouble && scales->device() == X.device(),
              op, ": loss_scales must be a float64 tensor of shape (", X.size(0), ") on ",
              X.device(), ", got ", scales->scalar_type(), " ", scales->sizes(), " on ",
              scales->device());
}

inline void check_pnp_backward_inputs(const std::optional<at::Tensor>& gR,
                                      const std::optional<at::Tensor>& gt,
                                      const std::optional<at::Tensor>& gc, const at::Tensor& X,
                                      const at::Tensor& x, const at::Tensor& K,
                                      const std::optional<at::Tensor>& w,
                                      const at::Tensor& state, const at::Tensor& status) {
  TORCH_CHECK(X.dim() == 3 && X.size(2) == 3,
              "solve_pnp_backward: points3d must have shape (B, N, 3), got ", X.sizes());
  const int64_t B = X.size(0), N = X.size(1);
  TORCH_CHECK(X.scalar_type() == at::kFloat || X.scalar_type() == at::kDouble,
              "solve_pnp_backward: points3d must be float32 or float64, got ", X.scalar_type());
  const at::Tensor& wt = w ? *w : x;  // absent weights: points2d checked twice
  TORCH_CHECK(x.scalar_type() == X.scalar_type() && wt.scalar_type() == X.scalar_type(),
              "solve_pnp_backward: points2d and weights must have the dtype of points3d (",
              X.scalar_type(), "), got ", x.scalar_type(), " and ", wt.scalar_type());
  TORCH_CHECK(x.sizes() == at::IntArrayRef({B, N, 2}) && wt.sizes() == at::IntArrayRef({B, N, 2}),
              "solve_pnp_backward: points2d and weights must have shape (B, N, 2)");
  TORCH_CHECK(K.sizes() == at::IntArrayRef({B, 3, 3}) &&
                  (!gR || gR->sizes() == at::IntArrayRef({B, 3, 3})),
              "solve_pnp_backward: K and grad_R must have shape (B, 3, 3)");
  TORCH_CHECK(!gt || gt->sizes() == at::IntArrayRef({B, 3}),
              "solve_pnp_backward: grad_t must have shape (B, 3)");
  TORCH_CHECK((!gc || gc->sizes() == at::IntArrayRef({B})) &&
                  status.sizes() == at::IntArrayRef({B}),
              "solve_pnp_backward: grad_cost and status must have shape (B,)");
  TORCH_CHECK(state.sizes() == at::IntArrayRef({B, pfp::kStateSize}) &&
                  state.scalar_type() == at::kDouble,
              "solve_pnp_backward: state must be the float64 (B, ", pfp::kStateSize,
              ") state of the forward, got ", state.scalar_type(), " ", state.sizes());
  for (const auto* g : {&gR, &gt, &gc})
    TORCH_CHECK(!*g || (*g)->device() == X.device(), "solve_pnp_backward: all inputs must be on ",
                X.device(), ", got ", (*g)->device());
  for (const auto* t : {&x, &K, &wt, &state, &status})
    TORCH_CHECK(t->device() == X.device(), "solve_pnp_backward: all inputs must be on ",
                X.device(), ", got ", t->device());
}

// An optional input made contiguous; undefined when absent (the kernels get a null pointer).
inline at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t ? t->contiguous() : at::Tensor();
}

// Contiguous inputs; K and init in float64 (the kernels compute in double, and a K or init
// rounded to float32 would not be the one the solution satisfies).
struct ForwardInputs {
  at::Tensor X, x, K, w, init_R, init_t, scales, D;  // w, init, scales, D undefined when absent
  int32_t model;
  static ForwardInputs from(const at::Tensor& X, const at::Tensor& x, const at::Tensor& K,
                            const std::optional<at::Tensor>& w,
                            const std::optional<at::Tensor>& init_R,
                            const std::optional<at::Tensor>& init_t,
                            const std::optional<at::Tensor>& scales,
                            const std::optional<at::Tensor>& dist, int32_t model) {
    ForwardInputs in{X.contiguous(), x.contiguous(), K.to(at::kDouble).contiguous(),
                     contiguous_or_undefined(w), {}, {}, contiguous_or_undefined(scales),
                     padded_distortion(dist), model};
    if (init_R.has_value()) {
      in.init_R = init_R->to(at::kDouble).contiguous();
      in.init_t = init_t->to(at::kDouble).contiguous();
    }
    return in;
  }
};

struct ForwardOutputs {
  at::Tensor R, t, cost, iterations, status, cov, state;
  static ForwardOutputs empty_for(const at::Tensor& X) { return empty_for(X, X.size(0)); }
  // B results (one per problem; B * k for solve_pnp_minima) in the points' dtype.
  static ForwardOutputs empty_for(const at::Tensor& X, int64_t B) {
    const auto opts = X.options();
    return {at::empty({B, 3, 3}, opts),
            at::empty({B, 3}, opts),
            at::empty({B}, opts),
            at::empty({B}, opts.dtype(at::kInt)),
            at::empty({B}, opts.dtype(at::kInt)),
            at::empty({B, 6, 6}, opts),
            at::empty({B, pfp::kStateSize}, opts.dtype(at::kDouble))};
  }
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
  as_tuple() const {
    return {R, t, cost, iterations, status, cov, state};
  }
};

template <typename scalar_t>
pfp::PnPForwardArgs<scalar_t> forward_args(const ForwardInputs& in, ForwardOutputs& out,
                                           const pfp::SolverParams<double>& prm) {
  pfp::PnPForwardArgs<scalar_t> a;
  a.X = in.X.data_ptr<scalar_t>();
  a.x = in.x.data_ptr<scalar_t>();
  a.w = in.w.defined() ? in.w.data_ptr<scalar_t>() : nullptr;  // null: unit weights
  a.K = in.K.data_ptr<double>();
  a.init_R = in.init_R.defined() ? in.init_R.data_ptr<double>() : nullptr;
  a.init_t = in.init_t.defined() ? in.init_t.data_ptr<double>() : nullptr;
  a.B = in.X.size(0);
  a.N = in.X.size(1);
  a.prm = prm;
  a.scales = in.scales.defined() ? in.scales.data_ptr<double>() : nullptr;
  a.R = out.R.data_ptr<scalar_t>();
  a.t = out.t.data_ptr<scalar_t>();
  a.cost = out.cost.data_ptr<scalar_t>();
  a.iterations = out.iterations.data_ptr<int32_t>();
  a.status = out.status.data_ptr<int32_t>();
  a.cov = out.cov.data_ptr<scalar_t>();
  a.state = out.state.data_ptr<double>();
  a.D = in.D.defined() ? in.D.data_ptr<double>() : nullptr;
  a.model = in.model;
  return a;
}

inline void check_ransac_options(double threshold, double confidence, int64_t max_trials) {
  TORCH_CHECK(threshold > 0 && threshold <= kLossScaleMax,
              "solve_pnp_ransac: threshold must be in (0, ", kLossScaleMax, "], got ", threshold);
  TORCH_CHECK(confidence > 0 && confidence < 1,
              "solve_pnp_ransac: confidence must be in (0, 1), got ", confidence);
  TORCH_CHECK(max_trials >= 1 && max_trials <= kMaxTrialsLimit,
              "solve_pnp_ransac: max_trials must be in [1, ", kMaxTrialsLimit, "], got ",
              max_trials);
}

struct RansacOutputs {
  ForwardOutputs f;
  at::Tensor inliers, num_inliers, trials;
  // solve_pnp's outputs `f` (already allocated) and RANSAC's own.
  static RansacOutputs around(ForwardOutputs f, const at::Tensor& X) {
    const int64_t B = X.size(0), N = X.size(1);
    const auto opts = X.options();
    return {std::move(f), at::empty({B, N}, opts.dtype(at::kBool)),
            at::empty({B}, opts.dtype(at::kInt)), at::empty({B}, opts.dtype(at::kInt))};
  }
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
             at::Tensor, at::Tensor, at::Tensor>
  as_tuple() const {
    return {f.R, f.t, f.cost, f.iterations, f.status, f.cov, f.state, inliers, num_inliers, trials};
  }
};

template <typename scalar_t>
pfp::PnPRansacArgs<scalar_t> ransac_args(const ForwardInputs& in, RansacOutputs& out,
                                         const pfp::SolverParams<double>& prm, double threshold,
                                         double confidence, int64_t max_trials, int64_t seed) {
  pfp::PnPRansacArgs<scalar_t> a;
  a.f = forward_args<scalar_t>(in, out.f, prm);
  a.rp.threshold2 = threshold * threshold;
  a.rp.confidence = confidence;
  a.rp.max_trials = int32_t(max_trials);
  a.rp.seed = uint64_t(seed);
  a.inliers = out.inliers.data_ptr<bool>();
  a.num_inliers = out.num_inliers.data_ptr<int32_t>();
  a.trials = out.trials.data_ptr<int32_t>();
  return a;
}

// The checked, prepared inputs, allocated outputs and parameters of one call: the prologue
// both devices' registrations share (a device's own checks, e.g. CUDA tensors, come first).
struct ForwardCall {
  ForwardInputs in;
  ForwardOutputs out;
  pfp::SolverParams<double> prm;

  static ForwardCall prepare(const at::Tensor& X, const at::Tensor& x, const at::Tensor& K,
                             const std::optional<at::Tensor>& w,
                             const std::optional<at::Tensor>& init_R,
                             const std::optional<at::Tensor>& init_t, c10::string_view loss,
                             double loss_scale, int64_t max_iterations, double tolerance,
                             const std::optional<at::Tensor>& scales,
                             const std::optional<at::Tensor>& dist, int64_t camera_model) {
    check_pnp_inputs(X, x, K, w, init_R, init_t, loss, loss_scale, max_iterations, tolerance);
    check_loss_scales("solve_pnp", scales, X);
    const int32_t model = check_distortion("solve_pnp", dist, camera_model, X);
    auto in = ForwardInputs::from(X, x, K, w, init_R, init_t, scales, dist, model);
    auto out = ForwardOutputs::empty_for(in.X);
    return {std::move(in), std::move(out),
            solver_params(loss, loss_scale, max_iterations, tolerance)};
  }
  int64_t batch() const { return in.X.size(0); }
  template <typename scalar_t>
  pfp::PnPForwardArgs<scalar_t> args() {
    return forward_args<scalar_t>(in, out, prm);
  }
};

// The checked, prepared inputs, allocated outputs and parameters of one solve_pnp_ransac
// call: the prologue both devices' registrations share.
struct RansacCall {
  ForwardInputs in;
  RansacOutputs out;
  pfp::SolverParams<double> prm;
  double threshold, confidence;
  int64_t max_trials, seed;

  static RansacCall prepare(const at::Tensor& X, const at::Tensor& x, const at::Tensor& K,
                            const std::optional<at::Tensor>& w, c10::string_view loss,
                            double loss_scale,
                            double threshold, double confidence, int64_t max_trials, int64_t seed,
                            int64_t max_iterations, double tolerance,
                            const std::optional<at::Tensor>& scales,
                            const std::optional<at::Tensor>& dist, int64_t camera_model) {
    check_ransac_options(threshold, confidence, max_trials);
    // The finish is a solve_pnp without init: its checks, inputs, outputs and parameters.
    auto fc = ForwardCall::prepare(X, x, K, w, {}, {}, loss, loss_scale, max_iterations,
                                   tolerance, scales, dist, camera_model);
    auto out = RansacOutputs::around(std::move(fc.out), fc.in.X);
    return {std::move(fc.in), std::move(out), fc.prm, threshold, confidence, max_trials, seed};
  }
  int64_t batch() const { return in.X.size(0); }
  template <typename scalar_t>
  pfp::PnPRansacArgs<scalar_t> args() {
    return ransac_args<scalar_t>(in, out, prm, threshold, confidence, max_trials, seed);
  }
};

// The checked, prepared inputs, allocated outputs (B * k results) and parameters of one
// solve_pnp_minima call.
struct MinimaCall {
  ForwardInputs in;
  ForwardOutputs out;
  at::Tensor count;
  pfp::SolverParams<double> prm;
  int64_t k;

  static MinimaCall prepare(const at::Tensor& X, const at::Tensor& x, const at::Tensor& K,
                            const std::optional<at::Tensor>& w, c10::string_view loss,
                            double loss_scale,
                            int64_t k, int64_t max_iterations, double tolerance,
                            const std::optional<at::Tensor>& scales,
                            const std::optional<at::Tensor>& dist, int64_t camera_model) {
    TORCH_CHECK(k >= 1 && k <= pfp::kMaxSolutions, "solve_pnp_minima: num_solutions must be in [1, ",
                pfp::kMaxSolutions, "], got ", k);
    auto fc = ForwardCall::prepare(X, x, K, w, {}, {}, loss, loss_scale, max_iterations,
                                   tolerance, scales, dist, camera_model);
    const int64_t B = fc.batch();
    auto out = ForwardOutputs::empty_for(fc.in.X, B * k);
    auto count = at::empty({B}, fc.in.X.options().dtype(at::kInt));
    return {std::move(fc.in), std::move(out), count, fc.prm, k};
  }
  int64_t batch() const { return in.X.size(0); }
  template <typename scalar_t>
  pfp::PnPMinimaArgs<scalar_t> args() {
    pfp::PnPMinimaArgs<scalar_t> m;
    m.f = forward_args<scalar_t>(in, out, prm);
    m.k = int32_t(k);
    m.count = count.data_ptr<int32_t>();
    return m;
  }
  // The outputs as (B, k, ...), then the count (B).
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
             at::Tensor>
  as_tuple() const {
    const int64_t B = batch();
    return {out.R.view({B, k, 3, 3}),   out.t.view({B, k, 3}),
            out.cost.view({B, k}),      out.iterations.view({B, k}),
            out.status.view({B, k}),    out.cov.view({B, k, 6, 6}),
            out.state.view({B, k, pfp::kStateSize}), count};
  }
};

// Contiguous inputs; upstream gradients in the points' dtype (zeros when absent: the kernels
// read every problem's), K in float64.
struct BackwardInputs {
  at::Tensor gR, gt, gc, X, x, K, w, state, status, scales, D;  // w, scales, D: undefined if absent
  int32_t model;
  int64_t num_coeffs;  // the caller's distortion length (0: none)
  static BackwardInputs from(const std::optional<at::Tensor>& gR,
                             const std::optional<at::Tensor>& gt,
                             const std::optional<at::Tensor>& gc, const at::Tensor& X,
                             const at::Tensor& x, const at::Tensor& K,
                             const std::optional<at::Tensor>& w, const at::Tensor& state,
                             const at::Tensor& status, const std::optional<at::Tensor>& scales,
                             const std::optional<at::Tensor>& dist, int32_t model) {
    const int64_t B = X.size(0);
    const auto grad = [&](const std::optional<at::Tensor>& g, at::IntArrayRef shape) {
      return g ? g->to(X.scalar_type()).contiguous() : at::zeros(shape, X.options());
    };
    return {grad(gR, {B, 3, 3}),
            grad(gt, {B, 3}),
            grad(gc, {B}),
            X.contiguous(),
            x.contiguous(),
            K.to(at::kDouble).contiguous(),
            contiguous_or_undefined(w),
            state.contiguous(),
            status.to(at::kInt).contiguous(),
            contiguous_or_undefined(scales),
            padded_distortion(dist),
            model,
            dist.has_value() ? dist->size(1) : 0};
  }
};

// Every entry is written by the kernels (zeros for problems that did not converge).
// gD is (B, kMaxDistortion) for the kernels and returned as the caller's (B, D).
struct BackwardOutputs {
  at::Tensor gX, gx, gK, gw, gD;
  int64_t num_coeffs;
  static BackwardOutputs empty_for(const BackwardInputs& in) {
    const int64_t B = in.X.size(0);
    // gw has points2d's layout; without weights it is the gradient at unit weights.
    return {at::empty_like(in.X), at::empty_like(in.x), at::empty({B, 3, 3}, in.X.options()),
            at::empty_like(in.x),
            at::empty({B, in.D.defined() ? pfp::kMaxDistortion : 0}, in.X.options()),
            in.num_coeffs};
  }
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> as_tuple() const {
    return {gX, gx, gK, gw, gD.narrow(1, 0, num_coeffs).contiguous()};
  }
};

template <typename scalar_t>
pfp::PnPBackwardArgs<scalar_t> backward_args(const BackwardInputs& in, BackwardOutputs& out,
                                             const pfp::Robust<double>& rob) {
  pfp::PnPBackwardArgs<scalar_t> a;
  a.gR = in.gR.data_ptr<scalar_t>();
  a.gt = in.gt.data_ptr<scalar_t>();
  a.gc = in.gc.data_ptr<scalar_t>();
  a.X = in.X.data_ptr<scalar_t>();
  a.x = in.x.data_ptr<scalar_t>();
  a.w = in.w.defined() ? in.w.data_ptr<scalar_t>() : nullptr;
  a.K = in.K.data_ptr<double>();
  a.state = in.state.data_ptr<double>();
  a.status = in.status.data_ptr<int32_t>();
  a.B = in.X.size(0);
  a.N = in.X.size(1);
  a.rob = rob;
  a.scales = in.scales.defined() ? in.scales.data_ptr<double>() : nullptr;
  a.gX = out.gX.data_ptr<scalar_t>();
  a.gx = out.gx.data_ptr<scalar_t>();
  a.gK = out.gK.data_ptr<scalar_t>();
  a.gw = out.gw.data_ptr<scalar_t>();
  a.D = in.D.defined() ? in.D.data_ptr<double>() : nullptr;
  a.model = in.model;
  a.gD = in.D.defined() ? out.gD.data_ptr<scalar_t>() : nullptr;
  return a;
}

struct BackwardCall {
  BackwardInputs in;
  BackwardOutputs out;
  pfp::Robust<double> rob;

  static BackwardCall prepare(const std::optional<at::Tensor>& gR,
                              const std::optional<at::Tensor>& gt,
                              const std::optional<at::Tensor>& gc, const at::Tensor& X,
                              const at::Tensor& x, const at::Tensor& K,
                              const std::optional<at::Tensor>& w, const at::Tensor& state,
                              const at::Tensor& status, c10::string_view loss,
                              double loss_scale, const std::optional<at::Tensor>& scales,
                              const std::optional<at::Tensor>& dist, int64_t camera_model) {
    check_pnp_backward_inputs(gR, gt, gc, X, x, K, w, state, status);
    check_loss_scales("solve_pnp_backward", scales, X);
    const int32_t model = check_distortion("solve_pnp_backward", dist, camera_model, X);
    auto in = BackwardInputs::from(gR, gt, gc, X, x, K, w, state, status, scales, dist, model);
    auto out = BackwardOutputs::empty_for(in);
    return {std::move(in), std::move(out), robust(loss, loss_scale)};
  }
  int64_t batch() const { return in.X.size(0); }
  template <typename scalar_t>
  pfp::PnPBackwardArgs<scalar_t> args() {
    return backward_args<scalar_t>(in, out, rob);
  }
};

// The checked, prepared inputs and allocated outputs of one pnp_hessian call (forward) or
// pnp_hessian_backward call (with `gH` and `valid`): the prologue both devices share.
struct HessianCall {
  at::Tensor R, t, X, x, K, w, scales, D, gH, valid;  // w, scales, D: undefined if absent
  int32_t model;
  int64_t num_coeffs;  // the caller's distortion length (0: none)
  pfp::Robust<double> rob;
  at::Tensor H, valid_out, gR, gt, gX, gx, gK, gw, gD;

  static HessianCall prepare(const char* op, const at::Tensor& R, const at::Tensor& t,
                             const at::Tensor& X, const at::Tensor& x, const at::Tensor& K,
                             const std::optional<at::Tensor>& w, c10::string_view loss,
                             double loss_scale, const std::optional<at::Tensor>& scales,
                             const std::optional<at::Tensor>& dist, int64_t camera_model) {
    // The points, K, weights, loss and scale obey solve_pnp's rules (the iteration options
    // are not the Hessian's: valid placeholders).
    check_pnp_inputs(X, x, K, w, {}, {}, loss, loss_scale, 1, 0.5);
    const int64_t B = X.size(0);
    TORCH_CHECK(R.sizes() == at::IntArrayRef({B, 3, 3}) && t.sizes() == at::IntArrayRef({B, 3}),
                op, ": R and t must have shapes (", B, ", 3, 3) and (", B, ", 3), got ",
                R.sizes(), " and ", t.sizes());
    TORCH_CHECK(R.is_floating_point() && t.is_floating_point() && R.device() == X.device() &&
                    t.device() == X.device(),
                op, ": R and t must be floating-point tensors on ", X.device());
    check_loss_scales(op, scales, X);
    HessianCall c;
    c.model = check_distortion(op, dist, camera_model, X);
    c.R = R.to(at::kDouble).contiguous();
    c.t = t.to(at::kDouble).contiguous();
    c.X = X.contiguous();
    c.x = x.contiguous();
    c.K = K.to(at::kDouble).contiguous();
    c.w = contiguous_or_undefined(w);
    c.scales = contiguous_or_undefined(scales);
    c.D = padded_distortion(dist);
    c.num_coeffs = dist.has_value() ? dist->size(1) : 0;
    c.rob = robust(loss, loss_scale);
    return c;
  }
  int64_t batch() const { return X.size(0); }

  void allocate_forward() {
    H = at::empty({batch(), 6, 6}, X.options().dtype(at::kDouble));
    valid_out = at::empty({batch()}, X.options().dtype(at::kBool));
  }
  void allocate_backward(const at::Tensor& grad_H, const at::Tensor& valid_in) {
    const int64_t B = batch();
    TORCH_CHECK(grad_H.sizes() == at::IntArrayRef({B, 6, 6}) &&
                    valid_in.sizes() == at::IntArrayRef({B}) &&
                    valid_in.scalar_type() == at::kBool && grad_H.device() == X.device() &&
                    valid_in.device() == X.device(),
                "pnp_hessian_backward: grad_hessian must be (", B, ", 6, 6) and valid the "
                "forward's bool (", B, ") on ", X.device());
    gH = grad_H.to(at::kDouble).contiguous();
    valid = valid_in.contiguous();
    gR = at::empty({B, 3, 3}, X.options());
    gt = at::empty({B, 3}, X.options());
    gX = at::empty_like(X);
    gx = at::empty_like(x);
    gK = at::empty({B, 3, 3}, X.options());
    gw = at::empty_like(x);  // the gradient at unit weights when weights are absent
    gD = at::empty({B, D.defined() ? pfp::kMaxDistortion : 0}, X.options());
  }

  template <typename scalar_t>
  pfp::PnPHessianArgs<scalar_t> args() {
    pfp::PnPHessianArgs<scalar_t> a{};
    a.R = R.data_ptr<double>();
    a.t = t.data_ptr<double>();
    a.X = X.data_ptr<scalar_t>();
    a.x = x.data_ptr<scalar_t>();
    a.w = w.defined() ? w.data_ptr<scalar_t>() : nullptr;
    a.K = K.data_ptr<double>();
    a.B = X.size(0);
    a.N = X.size(1);
    a.rob = rob;
    a.scales = scales.defined() ? scales.data_ptr<double>() : nullptr;
    a.D = D.defined() ? D.data_ptr<double>() : nullptr;
    a.model = model;
    if (H.defined()) {
      a.H = H.data_ptr<double>();
      a.valid = valid_out.data_ptr<bool>();
    }
    if (gH.defined()) {
      a.gH = gH.data_ptr<double>();
      a.valid_in = valid.data_ptr<bool>();
      a.gR = gR.data_ptr<scalar_t>();
      a.gt = gt.data_ptr<scalar_t>();
      a.gX = gX.data_ptr<scalar_t>();
      a.gx = gx.data_ptr<scalar_t>();
      a.gK = gK.data_ptr<scalar_t>();
      a.gw = gw.data_ptr<scalar_t>();
      a.gD = D.defined() ? gD.data_ptr<scalar_t>() : nullptr;
    }
    return a;
  }
  std::tuple<at::Tensor, at::Tensor> forward_outputs() const { return {H, valid_out}; }
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
  backward_outputs() const {
    return {gR, gt, gX, gx, gK, gw, gD.narrow(1, 0, num_coeffs).contiguous()};
  }
};

}  // namespace pyfacepnp
