// The CPU's vectorised point passes: the Gauss-Newton and exact normal equations of a
// pinhole problem with the l2 or Huber loss, the passes that dominate a large-N solve.
//
// The math is common/pnp_point.h's, called on every point: only the loop around it differs
// from the scalar accumulator (pnp_cpu.cpp). Points are copied once per problem into a
// structure of arrays padded to a multiple of kLanes with zero-weight points, and each pass
// runs over blocks of kLanes points with one running sum per lane, so that
//   - the inner loop over the lanes has no control flow (a point behind the camera is counted
//     and given a safe depth instead of ending the pass; a zero weight zeroes its terms) and
//     no cross-iteration dependence: GCC vectorises it without reassociating any sum;
//   - the lanes are summed in one fixed order at the end, so every SIMD width gives the same
//     bits (the build has -ffp-contract=off for the same reason).
// The passes are compiled for AVX-512, AVX2 and the x86-64 baseline and chosen at run time
// by the CPU (PYFACEPNP_CPU_ISA=baseline|avx2|avx512 forces one, and =scalar none, for
// tests), so a wheel built on one machine runs on any x86-64.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/pnp_init.h"
#include "common/pnp_point.h"
#include "pnp/pnp_cpu_starts.h"

namespace pyfacepnp {

constexpr int kLanes = 8;

// A problem's points as seven arrays (X, Y, Z, x, y, wx, wy), each n_padded long; inactive
// points and the padding are zeros (load_point's conversion, with X zeroed too).
struct PointsSoA {
  std::vector<double> buf;
  int64_t n_padded = 0;
  const double* col(int c) const { return buf.data() + c * n_padded; }
  double* col(int c) { return buf.data() + c * n_padded; }
  // Room for N points; the entries are left as they are (check_points writes every one).
  void resize(int64_t N) {
    n_padded = (N + kLanes - 1) / kLanes * kLanes;
    if (buf.size() < size_t(7 * n_padded)) buf.resize(7 * n_padded);
  }
};

// The input check, the copy into the structure of arrays and the sums of the weighted
// centroid in one pass (CpuAccumulator::check, centroid). A point with both weights zero is
// skipped whatever it holds and stored as zeros; every other point must be valid
// (PointObs::valid). Returns whether all are; n_active counts the active points and
// sums = (sum w X, sum w) over the stored points, w = wx + wy. kUnit: the weights are absent
// (ones); the branch on it is taken outside the loop, which then has none.
template <bool kUnit, typename S>
__attribute__((always_inline)) inline bool check_points_impl(const S* X, const S* x, const S* w,
                                                             int64_t N, PointsSoA& pts,
                                                             int& n_active, double* sums) {
  alignas(64) double bad[kLanes] = {}, act[kLanes] = {}, sum[4 * kLanes] = {};
  double* __restrict c[7];
  for (int k = 0; k < 7; ++k) c[k] = pts.col(k);
  // Point src into entry i of lane l; in = 0: the last block's tail (point 0 read again, weighted out).
  const auto put = [&](int l, int64_t i, int64_t src, double in) __attribute__((always_inline)) {
    const auto o = pfp::load_point<double>(X, x, kUnit ? static_cast<const S*>(nullptr) : w, src);
    const double w0 = in > 0.0 ? o.w[0] : 0.0, w1 = in > 0.0 ? o.w[1] : 0.0;
    // Masks from double comparisons only (a bool combination does not vectorise).
    const double zero = (w0 == 0.0 ? 1.0 : 0.0) * (w1 == 0.0 ? 1.0 : 0.0);
    double ok = (w0 >= 0.0 ? 1.0 : 0.0) * (w1 >= 0.0 ? 1.0 : 0.0) *
                (pfp::is_finite(w0) ? 1.0 : 0.0) * (pfp::is_finite(w1) ? 1.0 : 0.0);
    for (int k = 0; k < 3; ++k) ok *= pfp::is_finite(o.X[k]) ? 1.0 : 0.0;
    for (int k = 0; k < 2; ++k) ok *= pfp::is_finite(o.x[k]) ? 1.0 : 0.0;
    bad[l] += (1.0 - zero) * (1.0 - ok);
    act[l] += (w0 > 0.0 ? 1.0 : 0.0) + (w1 > 0.0 ? 1.0 : 0.0) > 0.0 ? 1.0 : 0.0;
    const double v[7] = {o.X[0], o.X[1], o.X[2], o.x[0], o.x[1], w0, w1};
    for (int k = 0; k < 7; ++k) c[k][i] = zero > 0.0 ? 0.0 : v[k];
    const double wi = c[5][i] + c[6][i];
    for (int k = 0; k < 3; ++k) sum[k * kLanes + l] += wi * c[k][i];
    sum[3 * kLanes + l] += wi;
  };
  const int64_t n_full = N / kLanes * kLanes;
  for (int64_t i0 = 0; i0 < n_full; i0 += kLanes)  // full blocks: a loop free of branches
    for (int l = 0; l < kLanes; ++l) put(l, i0 + l, i0 + l, 1.0);
  for (int l = 0; n_full < pts.n_padded && l < kLanes; ++l)
    put(l, n_full + l, n_full + l < N ? n_full + l : 0, n_full + l < N ? 1.0 : 0.0);
  double nb = 0.0, na = 0.0;
  for (int k = 0; k < 4; ++k) sums[k] = 0.0;
  for (int l = 0; l < kLanes; ++l) {
    nb += bad[l];
    na += act[l];
    for (int k = 0; k < 4; ++k) sums[k] += sum[k * kLanes + l];
  }
  n_active = int(na);
  return !(nb > 0.0);
}

// One lane's view of the lane-major sums: entry k of lane l is p[k * kLanes + l].
struct LaneRef {
  double* p;
  int l;
  double& operator[](int k) const { return p[k * kLanes + l]; }
};
struct LaneEq {  // add_point_normal_eq's accumulator, for one lane
  double& cost;
  LaneRef g, H;
};

// Point i of the columns c (PointsSoA's seven).
__attribute__((always_inline)) inline pfp::PointObs<double> soa_point(
    const double* __restrict const* c, int64_t i) {
  pfp::PointObs<double> o;
  for (int k = 0; k < 3; ++k) o.X[k] = c[k][i];
  for (int k = 0; k < 2; ++k) {
    o.x[k] = c[3 + k][i];
    o.w[k] = c[5 + k][i];
  }
  return o;
}

struct PinholePass {
  const PointsSoA* pts;
  pfp::Pose<double> P;
  const double* K;
  pfp::Robust<double> rob;  // l2 or Huber
};

// The normal equations of one pass: false when an active point is on or behind the camera.
// Rob: L2Kernel or ConvexRobust.
template <bool kExact, typename Rob>
__attribute__((always_inline)) inline bool pinhole_normal_eq(const PinholePass& a,
                                                             pfp::NormalEq<double>& out) {
  alignas(64) double cost[kLanes] = {}, g[6 * kLanes] = {}, H[36 * kLanes] = {};
  alignas(64) double behind[kLanes] = {};
  const pfp::Pinhole<double> cam{a.K};
  const Rob rob{a.rob};
  const pfp::Pose<double> P = a.P;
  const double* __restrict c[7];
  for (int k = 0; k < 7; ++k) c[k] = a.pts->col(k);
  for (int64_t i0 = 0; i0 < a.pts->n_padded; i0 += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const auto o = soa_point(c, i0 + l);
      pfp::PointEval<double> e;
      pfp::transform_point(P, o, e);
      // A point on or behind the camera plane gets depth 1 and adds its weight to `behind`
      // (weights are finite and >= 0: the sum is > 0 iff an active point is behind). The
      // mask multiplies rather than selects: GCC turns 1 / (front ? z : 1) back into a
      // division under a branch.
      const double m = e.Xc[2] > 0.0 ? 1.0 : 0.0;
      behind[l] += (o.w[0] + o.w[1]) * (1.0 - m);
      e.Xc[2] = e.Xc[2] * m + (1.0 - m);  // z itself when in front
      double u[2];
      cam.project(e.Xc, 1.0 / e.Xc[2], u, e.a);
      pfp::set_residual(o, u, e);
      LaneEq acc{cost[l], {g, l}, {H, l}};
      pfp::add_point_normal_eq(e, o, cam, rob, kExact, acc);
    }
  }
  out.zero();
  double nb = 0.0;
  for (int l = 0; l < kLanes; ++l) {
    nb += behind[l];
    out.cost += cost[l];
    for (int k = 0; k < 6; ++k) out.g[k] += g[k * kLanes + l];
    for (int k = 0; k < 36; ++k) out.H[k] += H[k * kLanes + l];
  }
  out.symmetrize();
  return !(nb > 0.0);
}

// The backward of a converged problem (common/pnp_batch.h, backward_problem) over its arrays
// in the input dtype S: each point's gradients, and rows 0-1 of dL/dK summed into gK (6).
template <typename S>
struct PinholeBackward {
  const S *X, *x, *w;  // (N,3), (N,2), (N,2) or null (unit weights)
  int64_t N;
  pfp::Pose<double> P;
  const double* K;
  pfp::Robust<double> rob;
  const double* v;  // H^-1 dL/dtheta (6)
  double gcost;
  S *gX, *gx, *gw;  // (N,3), (N,2), (N,2)
};

// The backward has no pass before it to build a structure of arrays: each block of kLanes
// points is loaded (load_point, once per point) into one on the stack, and its gradients are
// stored from another. Rob: L2Kernel or ConvexRobust.
template <typename Rob, typename S>
__attribute__((always_inline)) inline void pinhole_backward(const PinholeBackward<S>& a,
                                                            double* gK) {
  alignas(64) double gk[6 * kLanes] = {}, in[7 * kLanes], blk[7 * kLanes];
  // Local copies: the stores below could alias the arguments' arrays, and the alias checks
  // that would take are more than GCC versions a loop for.
  double K[6], v[6];
  for (int k = 0; k < 6; ++k) {
    K[k] = a.K[k];
    v[k] = a.v[k];
  }
  const pfp::Pinhole<double> cam{K};
  const Rob rob{a.rob};
  const pfp::Pose<double> P = a.P;
  const double gc = a.gcost;
  const double* __restrict c[7];
  for (int k = 0; k < 7; ++k) c[k] = in + k * kLanes;
  for (int64_t i0 = 0; i0 < a.N; i0 += kLanes) {
    const int nb = int(std::min<int64_t>(kLanes, a.N - i0));
    // Inactive points as zeros (load_point has zeroed their x; weights are >= 0), the tail too.
    const auto put = [&](int l, const pfp::PointObs<double>& o) {
      const bool act = o.w[0] + o.w[1] > 0.0;
      for (int k = 0; k < 3; ++k) in[k * kLanes + l] = act ? o.X[k] : 0.0;
      for (int k = 0; k < 2; ++k) {
        in[(3 + k) * kLanes + l] = o.x[k];
        in[(5 + k) * kLanes + l] = o.w[k];
      }
    };
    // A full block in a loop free of branches: the weights' null test is taken outside it
    // (load_point folds it then, and reads x whatever the weight).
    if (nb == kLanes && a.w != nullptr) {
      for (int l = 0; l < kLanes; ++l) put(l, pfp::load_point<double>(a.X, a.x, a.w, i0 + l));
    } else if (nb == kLanes) {
      for (int l = 0; l < kLanes; ++l)
        put(l, pfp::load_point<double>(a.X, a.x, static_cast<const S*>(nullptr), i0 + l));
    } else {
      for (int l = 0; l < kLanes; ++l)
        put(l, l < nb ? pfp::load_point<double>(a.X, a.x, a.w, i0 + l) : pfp::PointObs<double>{});
    }
    for (int l = 0; l < kLanes; ++l) {
      const auto o = soa_point(c, l);
      pfp::PointEval<double> e;
      pfp::transform_point(P, o, e);
      // The scalar backward's points, active and in front of the camera, have keep > 0
      // (weights are >= 0). The others are evaluated at depth 1 (inactive ones are zeros:
      // every term is finite) and get zeros. Masks from double comparisons only: a bool
      // combination (&&) becomes a mask conversion GCC does not vectorise.
      const double m = e.Xc[2] > 0.0 ? 1.0 : 0.0;
      const double keep = m * (o.w[0] + o.w[1]);
      e.Xc[2] = e.Xc[2] * m + (1.0 - m);
      double u[2];
      cam.project(e.Xc, 1.0 / e.Xc[2], u, e.a);
      pfp::set_residual(o, u, e);
      double gX[3], gx[2], gw[2], pk[6];
      pfp::point_backward(e, o, cam, P.R, rob, v, gc, gX, gx, pk, gw,
                          static_cast<double*>(nullptr));
      for (int k = 0; k < 3; ++k) blk[k * kLanes + l] = keep > 0.0 ? gX[k] : 0.0;
      for (int k = 0; k < 2; ++k) {
        blk[(3 + k) * kLanes + l] = keep > 0.0 ? gx[k] : 0.0;
        blk[(5 + k) * kLanes + l] = m * o.w[k] > 0.0 ? gw[k] : 0.0;  // zero weight: zero
      }
      for (int k = 0; k < 6; ++k) gk[k * kLanes + l] += keep > 0.0 ? pk[k] : 0.0;
    }
    for (int l = 0; l < nb; ++l) {
      const int64_t i = i0 + l;
      for (int k = 0; k < 3; ++k) a.gX[3 * i + k] = S(blk[k * kLanes + l]);
      for (int k = 0; k < 2; ++k) {
        a.gx[2 * i + k] = S(blk[(3 + k) * kLanes + l]);
        a.gw[2 * i + k] = S(blk[(5 + k) * kLanes + l]);
      }
    }
  }
  for (int k = 0; k < 6; ++k) gK[k] = 0.0;
  for (int l = 0; l < kLanes; ++l)
    for (int k = 0; k < 6; ++k) gK[k] += gk[k * kLanes + l];
}

struct LaneOmega {  // add_point_omega's accumulator, for one lane
  LaneRef S, B, C;
};

// The global start's sums (common/pnp_init.h) over the points centred at `mean`, with the
// pinhole's rays K^-1 x. Inactive points have weight 0 and finite coordinates: they add zeros.
__attribute__((always_inline)) inline void pinhole_omega(const PointsSoA& pts, const double* mean,
                                                         const double* Kinv,
                                                         pfp::OmegaAccum<double>& out) {
  alignas(64) double S[6 * kLanes] = {}, B[18 * kLanes] = {}, C[36 * kLanes] = {};
  const double* __restrict c[7];
  for (int k = 0; k < 7; ++k) c[k] = pts.col(k);
  const double mu[3] = {mean[0], mean[1], mean[2]};
  double Ki[9];
  for (int k = 0; k < 9; ++k) Ki[k] = Kinv[k];
  for (int64_t i0 = 0; i0 < pts.n_padded; i0 += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const int64_t i = i0 + l;
      const double Xr[3] = {c[0][i] - mu[0], c[1][i] - mu[1], c[2][i] - mu[2]};
      const double x[2] = {c[3][i], c[4][i]};
      double m[3];
      pfp::Pinhole<double>::ray(Ki, x, m);
      LaneOmega acc{{S, l}, {B, l}, {C, l}};
      pfp::add_point_omega(Xr, m, 0.5 * (c[5][i] + c[6][i]), acc);
    }
  }
  out.zero();
  for (int l = 0; l < kLanes; ++l) {
    for (int k = 0; k < 6; ++k) out.S[k] += S[k * kLanes + l];
    for (int k = 0; k < 18; ++k) out.B[k] += B[k * kLanes + l];
    for (int k = 0; k < 36; ++k) out.C[k] += C[k * kLanes + l];
  }
}

using NormalEqPassFn = bool (*)(const PinholePass&, pfp::NormalEq<double>&);
using OmegaPassFn = void (*)(const PointsSoA&, const double*, const double*,
                             pfp::OmegaAccum<double>&);
template <typename S>
using BackwardPassFn = void (*)(const PinholeBackward<S>&, double*);
using StartsFn = void (*)(const pfp::QuarticForm<double>&, pfp::StartEnds<double>&);
template <typename S>
using CheckFn = bool (*)(const S*, const S*, const S*, int64_t, PointsSoA&, int&, double*);
struct PinholePassSet {
  NormalEqPassFn gauss_newton[2], exact[2];  // l2, Huber
  OmegaPassFn omega;
  BackwardPassFn<float> backward_f32[2];  // l2, Huber
  BackwardPassFn<double> backward_f64[2];
  // The global start's descents (any camera and loss: they see only the quartic form). Null
  // on the baseline, where the lanes do not vectorise and the serial order is faster.
  StartsFn starts;
  CheckFn<float> check_f32[2];  // weights given, absent
  CheckFn<double> check_f64[2];
  const char* isa;
  template <typename S>
  BackwardPassFn<S> backward(int32_t loss) const {
    const int h = loss == pfp::kLossHuber ? 1 : 0;
    if constexpr (std::is_same_v<S, float>) return backward_f32[h];
    else return backward_f64[h];
  }
  NormalEqPassFn normal_eq(int32_t loss, bool is_exact) const {
    const int h = loss == pfp::kLossHuber ? 1 : 0;
    return is_exact ? exact[h] : gauss_newton[h];
  }
  template <typename S>
  CheckFn<S> check(bool unit_weights) const {
    if constexpr (std::is_same_v<S, float>) return check_f32[unit_weights ? 1 : 0];
    else return check_f64[unit_weights ? 1 : 0];
  }
};

// Each ISA's copy of the passes: the target attribute recompiles the always-inline body (and,
// with flatten, everything it calls) for that instruction set.
#define PYFACEPNP_PINHOLE_PASSES(NAME, ATTR)                                                   \
  template <typename Rob>                                                                       \
  ATTR __attribute__((flatten)) inline bool NAME##_gn(const PinholePass& a,                    \
                                                     pfp::NormalEq<double>& o) {              \
    return pinhole_normal_eq<false, Rob>(a, o);                                                \
  }                                                                                            \
  template <typename Rob>                                                                      \
  ATTR __attribute__((flatten)) inline bool NAME##_exact(const PinholePass& a,                 \
                                                        pfp::NormalEq<double>& o) {           \
    return pinhole_normal_eq<true, Rob>(a, o);                                                 \
  }                                                                                            \
  ATTR __attribute__((flatten)) inline void NAME##_omega(                                      \
      const PointsSoA& p, const double* mean, const double* Kinv, pfp::OmegaAccum<double>& o) { \
    pinhole_omega(p, mean, Kinv, o);                                                           \
  }                                                                                            \
  template <typename Rob, typename S>                                                          \
  ATTR __attribute__((flatten)) inline void NAME##_backward(const PinholeBackward<S>& a,       \
                                                           double* gK) {                       \
    pinhole_backward<Rob>(a, gK);                                                              \
  }                                                                                            \
  template <bool kUnit, typename S>                                                            \
  ATTR __attribute__((flatten)) inline bool NAME##_check(const S* X, const S* x, const S* w,   \
                                                        int64_t N, PointsSoA& p, int& n,       \
                                                        double* sums) {                        \
    return check_points_impl<kUnit>(X, x, w, N, p, n, sums);                                   \
  }
#define PYFACEPNP_START_LANES(NAME, ATTR, LANES)                                               \
  ATTR __attribute__((flatten)) inline void NAME##_starts(const pfp::QuarticForm<double>& F,   \
                                                         pfp::StartEnds<double>& e) {          \
    descend_start_lanes<LANES>(F, e);                                                          \
  }
#define PYFACEPNP_PASS_SET(NAME, STARTS)                                                       \
  PinholePassSet {                                                                             \
    {NAME##_gn<pfp::L2Kernel<double>>, NAME##_gn<pfp::ConvexRobust<double>>},                 \
        {NAME##_exact<pfp::L2Kernel<double>>, NAME##_exact<pfp::ConvexRobust<double>>},        \
        NAME##_omega,                                                                          \
        {NAME##_backward<pfp::L2Kernel<double>, float>,                                        \
         NAME##_backward<pfp::ConvexRobust<double>, float>},                                   \
        {NAME##_backward<pfp::L2Kernel<double>, double>,                                       \
         NAME##_backward<pfp::ConvexRobust<double>, double>},                                  \
        STARTS, {NAME##_check<false, float>, NAME##_check<true, float>},                       \
        {NAME##_check<false, double>, NAME##_check<true, double>}, #NAME                       \
  }

PYFACEPNP_PINHOLE_PASSES(baseline, )
#if defined(__x86_64__) && defined(__GNUC__)
#define PYFACEPNP_CPU_DISPATCH 1
PYFACEPNP_PINHOLE_PASSES(avx2, __attribute__((target("avx2,fma"))))
PYFACEPNP_PINHOLE_PASSES(avx512, __attribute__((target("avx512f,avx512dq,avx512vl"))))
PYFACEPNP_START_LANES(avx2, __attribute__((target("avx2,fma"))), 4)
PYFACEPNP_START_LANES(avx512, __attribute__((target("avx512f,avx512dq,avx512vl"))), 8)
#endif
#undef PYFACEPNP_PINHOLE_PASSES
#undef PYFACEPNP_START_LANES

// The widest variant this CPU runs, or the one PYFACEPNP_CPU_ISA names (when it runs here);
// "scalar" turns the vectorised passes off (CpuAccumulator::vectorised()), for comparisons.
inline PinholePassSet select_pinhole_passes() {
  const char* want = std::getenv("PYFACEPNP_CPU_ISA");
  const auto wants = [&](const char* isa) {
    return want != nullptr && std::strcmp(want, isa) == 0;
  };
  if (wants("scalar"))
    return PinholePassSet{{}, {}, nullptr, {}, {}, nullptr, {}, {}, "scalar"};
  const PinholePassSet base = PYFACEPNP_PASS_SET(baseline, nullptr);
#ifdef PYFACEPNP_CPU_DISPATCH
  const PinholePassSet v2 = PYFACEPNP_PASS_SET(avx2, avx2_starts);
  const PinholePassSet v512 = PYFACEPNP_PASS_SET(avx512, avx512_starts);
  __builtin_cpu_init();
  const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool has512 = has2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (wants("baseline")) return base;
  if (wants("avx2")) return has2 ? v2 : base;
  return has512 ? v512 : has2 ? v2 : base;
#else
  return base;
#endif
}

#undef PYFACEPNP_PASS_SET

inline const PinholePassSet& pinhole_passes() {
  static const PinholePassSet set = select_pinhole_passes();
  return set;
}

}  // namespace pyfacepnp
