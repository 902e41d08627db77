// The arguments of one batched solve_pnp forward and backward, as the torch glue hands them
// to a device's kernels: plain pointers and sizes, no torch headers (nvcc compiles this on
// machines whose torch has no CUDA). Inputs are flattened to (B, N, ...) and contiguous.
#pragma once
#include <type_traits>

#include "common/pnp_solver.h"

namespace pfp {

// Per problem, the float64 solution the backward works from, whatever the input dtype: R
// (9, row-major), t (3) and the covariance (36). Zero for a problem that did not converge.
constexpr int kStateSize = 48;

// The range of a robust kernel's scale: its square must be a normal double.
constexpr double kLossScaleMin = 1e-150;
constexpr double kLossScaleMax = 1e150;

template <typename scalar_t>
struct PnPForwardArgs {
  const scalar_t* X;       // (B, N, 3)
  const scalar_t* x;       // (B, N, 2)
  const scalar_t* w;       // (B, N, 2)
  const double* K;         // (B, 3, 3)
  const double* init_R;    // (B, 3, 3), null: no init
  const double* init_t;    // (B, 3)
  int64_t B, N;
  SolverParams<double> prm;
  const double* scales;    // (B) per-problem loss scales replacing prm.rob.delta; null: none
  scalar_t* R;             // (B, 3, 3)
  scalar_t* t;             // (B, 3)
  scalar_t* cost;          // (B)
  int32_t* iterations;     // (B)
  int32_t* status;         // (B)
  scalar_t* cov;           // (B, 6, 6)
  double* state;           // (B, kStateSize)
  const double* D;         // (B, kMaxDistortion) lens coefficients; null: plain pinhole
  int32_t model;           // CameraModel of D
};

template <typename scalar_t>
struct PnPBackwardArgs {
  const scalar_t* gR;      // (B, 3, 3) upstream gradients
  const scalar_t* gt;      // (B, 3)
  const scalar_t* gc;      // (B)
  const scalar_t* X;
  const scalar_t* x;
  const scalar_t* w;
  const double* K;         // (B, 3, 3)
  const double* state;     // (B, kStateSize), from the forward
  const int32_t* status;   // (B)
  int64_t B, N;
  Robust<double> rob;
  const double* scales;    // (B) per-problem loss scales, as in the forward; null: none
  scalar_t* gX;            // (B, N, 3)
  scalar_t* gx;            // (B, N, 2)
  scalar_t* gK;            // (B, 3, 3)
  scalar_t* gw;            // (B, N, 2)
  const double* D;         // (B, kMaxDistortion), as in the forward; null: plain pinhole
  int32_t model;
  scalar_t* gD;            // (B, kMaxDistortion) when D is given
};

// Point i's gradients (flat index b * N + n) written to a backward's (B, N, 3) and (B, N, 2)
// outputs gX, gx, gw in their dtype.
template <typename Args>
PFP_HD void store_point_gradients(const Args& a, int64_t i, const double* pX, const double* px,
                                  const double* pw) {
  using S = std::remove_pointer_t<decltype(a.gX)>;
  for (int k = 0; k < 3; ++k) a.gX[3 * i + k] = S(pX[k]);
  for (int k = 0; k < 2; ++k) {
    a.gx[2 * i + k] = S(px[k]);
    a.gw[2 * i + k] = S(pw[k]);
  }
}

// Problem b's camera: its K and, when given, its lens coefficients (pointers into arrays
// the caller may have copied closer, e.g. per thread, then with b = 0).
PFP_HD Camera<double> problem_camera(const double* K, const double* D, int32_t model,
                                     int64_t b) {
  Camera<double> cam{K + 9 * b};
  if (D != nullptr) {
    cam.D = D + kMaxDistortion * b;
    cam.model = model;
  }
  return cam;
}

// solve_pnp_minima: the forward's arguments (no init) with outputs for num_solutions
// results per problem, (B, k, ...) flattened to (B * k, ...), and the count found.
constexpr int kMaxSolutions = 8;

template <typename scalar_t>
struct PnPMinimaArgs {
  PnPForwardArgs<scalar_t> f;
  int32_t k;        // results per problem, in [1, kMaxSolutions]
  int32_t* count;   // (B) distinct minima found, <= k
};

struct RansacParams {
  double threshold2;  // squared threshold on the weighted residual norm
  double confidence;  // stop when P(an all-inlier sample was drawn) reaches this
  int32_t max_trials;
  uint64_t seed;
};

// solve_pnp_ransac: the forward's arguments (no init) and its own outputs.
template <typename scalar_t>
struct PnPRansacArgs {
  PnPForwardArgs<scalar_t> f;
  RansacParams rp;
  bool* inliers;          // (B, N), also the kernels' working inlier mask
  int32_t* num_inliers;   // (B)
  int32_t* trials;        // (B)
};

}  // namespace pfp
