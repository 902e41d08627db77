// CUDA kernels of solve_pnp and its backward: one warp per problem.
//
// The per-problem driver (common/pnp_solver.h) runs in lockstep on the 32 lanes of a warp.
// Every sum over a problem's points goes through WarpAccumulator: each lane takes the points
// lane, lane + 32, ..., and a butterfly of shuffles adds the 32 partial sums. A butterfly
// leaves the bitwise-identical total in every lane, so every lane takes the same branches
// and warp-wide shuffles stay converged. The 24 object-space starts run one per lane.
// All math is in double, as on the CPU (float32 inputs are converted on load): the devices
// differ only by summation order and fused multiply-adds.
//
// Kernels only: no torch headers, so that nvcc compiles this file on machines whose torch has
// no CUDA (see design §4). The torch glue is pnp_cuda.cpp.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "common/pnp_solver.h"

namespace pyfacepnp {
namespace gpu {
namespace {

using pfp::NormalEq;
using pfp::OmegaAccum;
using pfp::PointEval;
using pfp::PointObs;
using pfp::Pose;

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
// Forward: one warp per block, so that a problem that iterates long never keeps a block of
// finished problems resident: the SM takes a new problem as soon as one ends.
constexpr int kForwardWarpsPerBlock = 1;
// Resident problems per SM the forward kernel is compiled for: 1 lets the compiler use up to
// 255 registers per thread (8 problems per SM fit), 16 caps it at 128 registers (16 fit) at
// the price of spills to local memory. The launcher takes either; the default is the first.
constexpr int kForwardMinWarpsDefault = 1;
constexpr int kForwardMinWarpsTight = 16;
constexpr int kBackwardWarpsPerBlock = 4;
// The backward is one streaming pass: 128 registers (16 warps per SM) cost it no spills.
constexpr int kBackwardMinBlocksPerSM = 4;
// The largest grid launched; problems beyond it are taken in a grid-stride loop.
constexpr int64_t kMaxBlocks = INT_MAX;

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ int warp_sum(int v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// One problem's points, reduced across a warp (the accumulator of common/pnp_solver.h).
template <typename scalar_t>
struct WarpAccumulator {
  static constexpr bool kParallelStarts = true;

  const scalar_t* __restrict__ X;  // (N,3)
  const scalar_t* __restrict__ x;  // (N,2)
  const scalar_t* __restrict__ w;  // (N,2)
  const double* K;                 // row-major 3x3, per-thread copy
  int64_t N;
  int lane;
  pfp::Robust<double> rob;
  double start_R[9];  // this lane's object-space start, after descend_starts()
  double start_f;

  __device__ PointObs<double> load(int64_t i) const {
    PointObs<double> o;
#pragma unroll
    for (int k = 0; k < 3; ++k) o.X[k] = double(X[3 * i + k]);
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      o.x[k] = double(x[2 * i + k]);
      o.w[k] = double(w[2 * i + k]);
    }
    return o;
  }

  __device__ bool check(int& n_active) const {
    bool ok = true;
    int n = 0;
    for (int64_t i = lane; i < N; i += kWarp) {
      const auto o = load(i);
      if (o.w[0] == 0.0 && o.w[1] == 0.0) continue;  // padding: any coordinates
      ok = ok && o.valid();
      n += o.active() ? 1 : 0;
    }
    n_active = warp_sum(n);
    return __all_sync(kFullMask, ok);
  }

  __device__ void centroid(double* mean) const {
    double s[3] = {0.0, 0.0, 0.0}, ws = 0.0;
    for (int64_t i = lane; i < N; i += kWarp) {
      const auto o = load(i);
      if (!o.active()) continue;
      const double wi = o.w[0] + o.w[1];
#pragma unroll
      for (int k = 0; k < 3; ++k) s[k] += wi * o.X[k];
      ws += wi;
    }
    ws = warp_sum(ws);
#pragma unroll
    for (int k = 0; k < 3; ++k) mean[k] = warp_sum(s[k]) / ws;
  }

  __device__ __noinline__ void omega(const double* mean, const double* Kinv,
                                     OmegaAccum<double>& acc) const {
    acc.zero();
    for (int64_t i = lane; i < N; i += kWarp) {
      const auto o = load(i);
      if (!o.active()) continue;
      double Xr[3], m[3];
#pragma unroll
      for (int k = 0; k < 3; ++k) Xr[k] = o.X[k] - mean[k];
      const double xh[3] = {o.x[0], o.x[1], 1.0};
      pfp::matvec3(Kinv, xh, m);
      pfp::add_point_omega(Xr, m, 0.5 * (o.w[0] + o.w[1]), acc);
    }
#pragma unroll
    for (int i = 0; i < 9; ++i) acc.S[i] = warp_sum(acc.S[i]);
#pragma unroll
    for (int i = 0; i < 27; ++i) acc.B[i] = warp_sum(acc.B[i]);
#pragma unroll
    for (int r = 0; r < 9; ++r)  // only the lower triangle is accumulated (and read)
#pragma unroll
      for (int c = 0; c <= r; ++c) acc.C[9 * r + c] = warp_sum(acc.C[9 * r + c]);
  }

  // The totals are reduced even when a point is behind the camera, so that every lane
  // leaves with the same `acc` whatever the answer.
  __device__ __noinline__ bool normal_eq(const Pose<double>& P, bool exact,
                                         NormalEq<double>& acc) const {
    acc.zero();
    bool in_front = true;
    // The hot loop of the solver: the next point's loads are issued before this one's math.
    PointObs<double> next;
    if (lane < N) next = load(lane);
    for (int64_t i = lane; i < N; i += kWarp) {
      const PointObs<double> o = next;
      if (i + kWarp < N) next = load(i + kWarp);
      if (!o.active()) continue;
      PointEval<double> e;
      if (!pfp::eval_point(P, K, o, e)) {
        in_front = false;
        continue;
      }
      pfp::add_point_normal_eq(e, o, rob, exact, acc);
    }
    acc.cost = warp_sum(acc.cost);
#pragma unroll
    for (int i = 0; i < 6; ++i) acc.g[i] = warp_sum(acc.g[i]);
#pragma unroll
    for (int i = 0; i < 6; ++i)  // lower triangle, as accumulated
#pragma unroll
      for (int j = 0; j <= i; ++j) acc.H[6 * i + j] = warp_sum(acc.H[6 * i + j]);
    acc.symmetrize();
    return __all_sync(kFullMask, in_front);
  }

  // Lane k < 24 descends from the k-th cube rotation to its end (side by side, no descent
  // knows the others' minima; duplicates are removed by the caller); the others idle.
  __device__ __noinline__ void descend_starts(const double* Omega) {
    start_f = 0.0;
    for (int i = 0; i < 9; ++i) start_R[i] = 0.0;
    if (lane < pfp::kNumStarts) {
      pfp::cube_rotation(lane, start_R);
      bool dup;
      start_f = pfp::so3_descent<double>(Omega, start_R, pfp::kStartIterations, nullptr, 0, 0, dup);
    }
  }

  __device__ double start_minimum(int k, double* R) const {
#pragma unroll
    for (int i = 0; i < 9; ++i) R[i] = __shfl_sync(kFullMask, start_R[i], k);
    return __shfl_sync(kFullMask, start_f, k);
  }
};

template <typename scalar_t>
struct ForwardArgs {
  const scalar_t* X;
  const scalar_t* x;
  const scalar_t* w;
  const scalar_t* K;
  const scalar_t* init_R;  // null: no init
  const scalar_t* init_t;
  int64_t B, N;
  pfp::SolverParams<double> prm;
  scalar_t* R;
  scalar_t* t;
  scalar_t* cost;
  int32_t* iterations;
  int32_t* status;
  scalar_t* cov;
};

template <typename scalar_t>
__device__ void solve_one(const ForwardArgs<scalar_t>& a, int64_t b, int lane) {
  const int64_t N = a.N;
  double K[9];
#pragma unroll
  for (int i = 0; i < 9; ++i) K[i] = double(a.K[9 * b + i]);
  WarpAccumulator<scalar_t> acc;
  acc.X = a.X + 3 * b * N;
  acc.x = a.x + 2 * b * N;
  acc.w = a.w + 2 * b * N;
  acc.K = K;
  acc.N = N;
  acc.lane = lane;
  acc.rob = a.prm.rob;
  Pose<double> init;
  const bool has_init = a.init_R != nullptr;
  if (has_init) {
#pragma unroll
    for (int i = 0; i < 9; ++i) init.R[i] = double(a.init_R[9 * b + i]);
#pragma unroll
    for (int i = 0; i < 3; ++i) init.t[i] = double(a.init_t[3 * b + i]);
  }
  pfp::ProblemResult<double> res;
  pfp::solve_problem(acc, K, has_init ? &init : nullptr, a.prm, res);
  // Every lane holds the same result: the lanes share the writes.
  if (lane < 9) a.R[9 * b + lane] = scalar_t(res.pose.R[lane]);
  if (lane < 3) a.t[3 * b + lane] = scalar_t(res.pose.t[lane]);
  if (lane == 0) {
    a.cost[b] = scalar_t(res.cost);
    a.iterations[b] = res.iterations;
    a.status[b] = res.status;
  }
  for (int i = lane; i < 36; i += kWarp) a.cov[36 * b + i] = scalar_t(res.cov[i]);
}

template <typename scalar_t, int kMinWarpsPerSM>
__global__ void __launch_bounds__(kWarp* kForwardWarpsPerBlock,
                                  kMinWarpsPerSM / kForwardWarpsPerBlock)
    solve_pnp_kernel(const ForwardArgs<scalar_t> a) {
  const int lane = threadIdx.x % kWarp;
  const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x / kWarp;
  for (int64_t b = first; b < a.B; b += stride) solve_one(a, b, lane);
}

template <typename scalar_t>
struct BackwardArgs {
  const scalar_t* gR;
  const scalar_t* gt;
  const scalar_t* gc;
  const scalar_t* X;
  const scalar_t* x;
  const scalar_t* w;
  const scalar_t* K;
  const scalar_t* R;
  const scalar_t* t;
  const int32_t* status;
  const scalar_t* cov;
  int64_t B, N;
  pfp::Robust<double> rob;
  scalar_t* gX;
  scalar_t* gx;
  scalar_t* gK;
  scalar_t* gw;
};

// Writes every gradient entry of problem b: zero unless the problem converged (as the CPU).
template <typename scalar_t>
__device__ void backward_one(const BackwardArgs<scalar_t>& a, int64_t b, int lane) {
  const int64_t N = a.N;
  const int64_t p0 = b * N;
  const bool converged = a.status[b] == pfp::kConverged;
  Pose<double> P;
  double K[9], v[6] = {0, 0, 0, 0, 0, 0}, gcost = 0.0;
  if (converged) {
#pragma unroll
    for (int i = 0; i < 9; ++i) {
      P.R[i] = double(a.R[9 * b + i]);
      K[i] = double(a.K[9 * b + i]);
    }
#pragma unroll
    for (int i = 0; i < 3; ++i) P.t[i] = double(a.t[3 * b + i]);
    double gR[9], gt[3], gtheta[6];
#pragma unroll
    for (int i = 0; i < 9; ++i) gR[i] = double(a.gR[9 * b + i]);
#pragma unroll
    for (int i = 0; i < 3; ++i) gt[i] = double(a.gt[3 * b + i]);
    pfp::pose_cotangent(P.R, gR, gt, gtheta);
#pragma unroll
    for (int i = 0; i < 6; ++i) {
      double s = 0.0;
#pragma unroll
      for (int j = 0; j < 6; ++j) s += double(a.cov[36 * b + 6 * i + j]) * gtheta[j];
      v[i] = s;
    }
    gcost = double(a.gc[b]);
  }
  double gK[6] = {0, 0, 0, 0, 0, 0};
  for (int64_t n = lane; n < N; n += kWarp) {
    const int64_t i = p0 + n;
    double pX[3] = {0, 0, 0}, px[2] = {0, 0}, pw[2] = {0, 0};
    if (converged) {
      PointObs<double> o;
#pragma unroll
      for (int k = 0; k < 3; ++k) o.X[k] = double(a.X[3 * i + k]);
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        o.x[k] = double(a.x[2 * i + k]);
        o.w[k] = double(a.w[2 * i + k]);
      }
      PointEval<double> e;
      // Zero-weight padding may hold non-finite values or lie behind the camera.
      if (o.valid() && pfp::eval_point(P, K, o, e)) {
        double pK[6];
        pfp::point_backward(e, o, P.R, a.rob, v, gcost, pX, px, pK, pw);
#pragma unroll
        for (int k = 0; k < 6; ++k) gK[k] += pK[k];
      }
    }
#pragma unroll
    for (int k = 0; k < 3; ++k) a.gX[3 * i + k] = scalar_t(pX[k]);
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      a.gx[2 * i + k] = scalar_t(px[k]);
      a.gw[2 * i + k] = scalar_t(pw[k]);
    }
  }
#pragma unroll
  for (int k = 0; k < 6; ++k) gK[k] = warp_sum(gK[k]);
  if (lane < 9) a.gK[9 * b + lane] = scalar_t(lane < 6 ? gK[lane] : 0.0);  // K's last row is fixed
}

template <typename scalar_t>
__global__ void __launch_bounds__(kWarp* kBackwardWarpsPerBlock, kBackwardMinBlocksPerSM)
    solve_pnp_backward_kernel(const BackwardArgs<scalar_t> a) {
  const int lane = threadIdx.x % kWarp;
  const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x / kWarp;
  for (int64_t b = first; b < a.B; b += stride) backward_one(a, b, lane);
}

int64_t blocks_for(int64_t problems, int warps_per_block) {
  const int64_t blocks = (problems + warps_per_block - 1) / warps_per_block;
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

}  // namespace

// Host launchers (declared in pnp_cuda.cpp). They enqueue on `stream` and return the launch
// status; B == 0 launches nothing. `min_warps_per_sm` picks the forward kernel's register
// budget (kForwardMinWarpsDefault or kForwardMinWarpsTight, see above).
template <typename scalar_t>
cudaError_t launch_solve_pnp(const scalar_t* X, const scalar_t* x, const scalar_t* w,
                             const scalar_t* K, const scalar_t* init_R, const scalar_t* init_t,
                             int64_t B, int64_t N, int32_t loss, double huber_delta,
                             int32_t max_iterations, double tolerance, double pd_tol,
                             int32_t min_warps_per_sm, scalar_t* R, scalar_t* t, scalar_t* cost,
                             int32_t* iterations, int32_t* status, scalar_t* cov,
                             cudaStream_t stream) {
  if (min_warps_per_sm != kForwardMinWarpsDefault && min_warps_per_sm != kForwardMinWarpsTight)
    return cudaErrorInvalidValue;
  if (B <= 0) return cudaSuccess;
  ForwardArgs<scalar_t> a;
  a.X = X;
  a.x = x;
  a.w = w;
  a.K = K;
  a.init_R = init_R;
  a.init_t = init_t;
  a.B = B;
  a.N = N;
  a.prm.rob.kind = loss;
  a.prm.rob.delta = huber_delta;
  a.prm.max_iterations = max_iterations;
  a.prm.tolerance = tolerance;
  a.prm.pd_tol = pd_tol;
  a.R = R;
  a.t = t;
  a.cost = cost;
  a.iterations = iterations;
  a.status = status;
  a.cov = cov;
  const dim3 grid(unsigned(blocks_for(B, kForwardWarpsPerBlock)));
  const dim3 block(kWarp * kForwardWarpsPerBlock);
  if (min_warps_per_sm == kForwardMinWarpsTight)
    solve_pnp_kernel<scalar_t, kForwardMinWarpsTight><<<grid, block, 0, stream>>>(a);
  else
    solve_pnp_kernel<scalar_t, kForwardMinWarpsDefault><<<grid, block, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_solve_pnp_backward(const scalar_t* gR, const scalar_t* gt, const scalar_t* gc,
                                      const scalar_t* X, const scalar_t* x, const scalar_t* w,
                                      const scalar_t* K, const scalar_t* R, const scalar_t* t,
                                      const int32_t* status, const scalar_t* cov, int64_t B,
                                      int64_t N, int32_t loss, double huber_delta, scalar_t* gX,
                                      scalar_t* gx, scalar_t* gK, scalar_t* gw,
                                      cudaStream_t stream) {
  if (B <= 0) return cudaSuccess;
  BackwardArgs<scalar_t> a;
  a.gR = gR;
  a.gt = gt;
  a.gc = gc;
  a.X = X;
  a.x = x;
  a.w = w;
  a.K = K;
  a.R = R;
  a.t = t;
  a.status = status;
  a.cov = cov;
  a.B = B;
  a.N = N;
  a.rob.kind = loss;
  a.rob.delta = huber_delta;
  a.gX = gX;
  a.gx = gx;
  a.gK = gK;
  a.gw = gw;
  const int64_t blocks = blocks_for(B, kBackwardWarpsPerBlock);
  solve_pnp_backward_kernel<scalar_t>
      <<<dim3(unsigned(blocks)), dim3(kWarp * kBackwardWarpsPerBlock), 0, stream>>>(a);
  return cudaGetLastError();
}

#define PFP_INSTANTIATE(scalar_t)                                                                \
  template cudaError_t launch_solve_pnp<scalar_t>(                                               \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,       \
      const scalar_t*, int64_t, int64_t, int32_t, double, int32_t, double, double, int32_t,      \
      scalar_t*, scalar_t*, scalar_t*, int32_t*, int32_t*, scalar_t*, cudaStream_t);             \
  template cudaError_t launch_solve_pnp_backward<scalar_t>(                                      \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,       \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const int32_t*,        \
      const scalar_t*, int64_t, int64_t, int32_t, double, scalar_t*, scalar_t*, scalar_t*,       \
      scalar_t*, cudaStream_t);
PFP_INSTANTIATE(float)
PFP_INSTANTIATE(double)
#undef PFP_INSTANTIATE

}  // namespace gpu
}  // namespace pyfacepnp
