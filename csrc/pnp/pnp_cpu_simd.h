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
// by the CPU (PYFACEPNP_CPU_ISA=baseline|avx2|avx512 forces one, for tests), so a wheel built
// on one machine runs on any x86-64.
#pragma once
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/pnp_point.h"

namespace pyfacepnp {

constexpr int kLanes = 8;

// A problem's points as seven arrays (X, Y, Z, x, y, wx, wy), each n_padded long; inactive
// points and the padding are zeros (load_point's conversion, with X zeroed too).
struct PointsSoA {
  std::vector<double> buf;
  int64_t n_padded = 0;
  const double* col(int c) const { return buf.data() + c * n_padded; }
  double* col(int c) { return buf.data() + c * n_padded; }
  void resize(int64_t N) {
    n_padded = (N + kLanes - 1) / kLanes * kLanes;
    buf.assign(7 * n_padded, 0.0);
  }
  void store(int64_t i, const pfp::PointObs<double>& o) {
    for (int k = 0; k < 3; ++k) col(k)[i] = o.X[k];
    for (int k = 0; k < 2; ++k) {
      col(3 + k)[i] = o.x[k];
      col(5 + k)[i] = o.w[k];
    }
  }
};

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

struct PinholePass {
  const PointsSoA* pts;
  pfp::Pose<double> P;
  const double* K;
  pfp::Robust<double> rob;  // l2 or Huber
};

// The normal equations of one pass: false when an active point is on or behind the camera.
template <bool kExact>
__attribute__((always_inline)) inline bool pinhole_normal_eq(const PinholePass& a,
                                                             pfp::NormalEq<double>& out) {
  alignas(64) double cost[kLanes] = {}, g[6 * kLanes] = {}, H[36 * kLanes] = {};
  alignas(64) double behind[kLanes] = {};
  const pfp::Pinhole<double> cam{a.K};
  const pfp::ConvexRobust<double> rob{a.rob};
  const pfp::Pose<double> P = a.P;
  const double* __restrict c[7];
  for (int k = 0; k < 7; ++k) c[k] = a.pts->col(k);
  for (int64_t i0 = 0; i0 < a.pts->n_padded; i0 += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const int64_t i = i0 + l;
      pfp::PointObs<double> o;
      for (int k = 0; k < 3; ++k) o.X[k] = c[k][i];
      for (int k = 0; k < 2; ++k) {
        o.x[k] = c[3 + k][i];
        o.w[k] = c[5 + k][i];
      }
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

using NormalEqPassFn = bool (*)(const PinholePass&, pfp::NormalEq<double>&);
struct PinholePassSet {
  NormalEqPassFn gauss_newton, exact;
  const char* isa;
};

// Each ISA's copy of the passes: the target attribute recompiles the always-inline body (and,
// with flatten, everything it calls) for that instruction set.
#define PYFACEPNP_PINHOLE_PASSES(NAME, ATTR)                                                   \
  ATTR __attribute__((flatten)) inline bool NAME##_gn(const PinholePass& a,                    \
                                                     pfp::NormalEq<double>& o) {              \
    return pinhole_normal_eq<false>(a, o);                                                     \
  }                                                                                            \
  ATTR __attribute__((flatten)) inline bool NAME##_exact(const PinholePass& a,                 \
                                                        pfp::NormalEq<double>& o) {           \
    return pinhole_normal_eq<true>(a, o);                                                      \
  }

PYFACEPNP_PINHOLE_PASSES(baseline, )
#if defined(__x86_64__) && defined(__GNUC__)
#define PYFACEPNP_CPU_DISPATCH 1
PYFACEPNP_PINHOLE_PASSES(avx2, __attribute__((target("avx2,fma"))))
PYFACEPNP_PINHOLE_PASSES(avx512, __attribute__((target("avx512f,avx512dq,avx512vl"))))
#endif
#undef PYFACEPNP_PINHOLE_PASSES

// The widest variant this CPU runs, or the one PYFACEPNP_CPU_ISA names (when it runs here).
inline PinholePassSet select_pinhole_passes() {
  const PinholePassSet base{baseline_gn, baseline_exact, "baseline"};
#ifdef PYFACEPNP_CPU_DISPATCH
  const PinholePassSet v2{avx2_gn, avx2_exact, "avx2"};
  const PinholePassSet v512{avx512_gn, avx512_exact, "avx512"};
  __builtin_cpu_init();
  const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool has512 = has2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const char* want = std::getenv("PYFACEPNP_CPU_ISA");
  if (want != nullptr && std::strcmp(want, "baseline") == 0) return base;
  if (want != nullptr && std::strcmp(want, "avx2") == 0) return has2 ? v2 : base;
  return has512 ? v512 : has2 ? v2 : base;
#else
  return base;
#endif
}

inline const PinholePassSet& pinhole_passes() {
  static const PinholePassSet set = select_pinhole_passes();
  return set;
}

}  // namespace pyfacepnp
