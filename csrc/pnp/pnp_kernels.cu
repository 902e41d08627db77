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
// no CUDA (docs/building.md). The torch glue is pnp_cuda.cpp.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "common/pnp_hessian.h"
#include "common/pnp_ransac.h"
#include "pnp/pnp_launch.h"

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
// kMasked: whether load() may apply RANSAC's inlier mask.
template <typename scalar_t, bool kMasked = false>
struct WarpAccumulator {
  const scalar_t* __restrict__ X;  // (N,3)
  const scalar_t* __restrict__ x;  // (N,2)
  const scalar_t* __restrict__ w;  // (N,2)
  pfp::Camera<double> cam;         // its parameters: a per-thread copy
  int64_t N;
  int lane;
  pfp::Robust<double> rob;
  double start_R[9];  // this lane's object-space start, after descend_starts()
  double start_f;

  bool* mask;     // RANSAC's inlier set, (N); null for solve_pnp
  bool use_mask;  // each lane reads and writes only its own points' entries

  __device__ PointObs<double> load(int64_t i) const {
    if constexpr (kMasked) return pfp::load_point<double>(X, x, w, i, use_mask ? mask : nullptr);
    return pfp::load_point<double>(X, x, w, i);
  }
  __device__ PointObs<double> load_raw(int64_t i) const {
    return pfp::load_point<double>(X, x, w, i);
  }

  // Full sums (no early exit: the lanes stay converged); `bound` is not needed.
  __device__ __noinline__ void msac(const Pose<double>& P, double thr2, double /*bound*/,
                                    bool write, double& score, int32_t& n,
                                    int32_t& changed) const {
    double s = 0.0;
    int32_t c = 0, ch = 0;
    for (int64_t i = lane; i < N; i += kWarp) pfp::msac_add(*this, P, thr2, write, i, s, c, ch);
    score = warp_sum(s);
    n = warp_sum(int(c));
    changed = warp_sum(int(ch));
  }
  __device__ void clear_mask() const {
    for (int64_t i = lane; i < N; i += kWarp) mask[i] = false;
  }

  template <typename F>
  __device__ void for_each_point(F&& f) const {
    for (int64_t i = lane; i < N; i += kWarp) f(i);
  }
  __device__ void reduce(double* v, int n) const {
    for (int k = 0; k < n; ++k) v[k] = warp_sum(v[k]);
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

  __device__ __noinline__ void omega(const double* mean, const pfp::RayMap<double>& rays,
                                     OmegaAccum<double>& acc) const {
    acc.zero();
    for (int64_t i = lane; i < N; i += kWarp) {
      const auto o = load(i);
      if (!o.active()) continue;
      double Xr[3], m[3];
#pragma unroll
      for (int k = 0; k < 3; ++k) Xr[k] = o.X[k] - mean[k];
      pfp::Camera<double>::ray(rays, o.x, m);
      pfp::add_point_omega(Xr, m, 0.5 * (o.w[0] + o.w[1]), acc);
    }
#pragma unroll
    for (int i = 0; i < 6; ++i) acc.S[i] = warp_sum(acc.S[i]);
#pragma unroll
    for (int i = 0; i < 18; ++i) acc.B[i] = warp_sum(acc.B[i]);
#pragma unroll
    for (int i = 0; i < 36; ++i) acc.C[i] = warp_sum(acc.C[i]);
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
      if (!pfp::eval_point(P, cam, o, e)) {
        in_front = false;
        continue;
      }
      pfp::add_point_normal_eq(e, o, cam, rob, exact, acc);
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
  __device__ __noinline__ void descend_starts(const pfp::QuarticForm<double>& F) {
    start_f = 0.0;
    for (int i = 0; i < 9; ++i) start_R[i] = 0.0;
    if (lane < pfp::kNumStarts) {
      pfp::cube_rotation(lane, start_R);
      bool dup;
      start_f = pfp::quartic_descent<double>(F, start_R, pfp::kStartIterations, nullptr, 0, 0, dup);
    }
  }

  __device__ double start_minimum(int k, double* R, bool& dup) const {
    dup = false;
#pragma unroll
    for (int i = 0; i < 9; ++i) R[i] = __shfl_sync(kFullMask, start_R[i], k);
    return __shfl_sync(kFullMask, start_f, k);
  }
};

// Problem b's camera parameters copied to the thread (registers or local memory), read in
// every point evaluation; camera() points into the copy, so the copy must outlive it.
struct CameraCopy {
  double K[9];
  double D[pfp::kMaxDistortion];
  bool has_D;
  int32_t model;
  __device__ CameraCopy(const double* K_all, const double* D_all, int32_t m, int64_t b)
      : has_D(D_all != nullptr), model(m) {
#pragma unroll
    for (int i = 0; i < 9; ++i) K[i] = K_all[9 * b + i];
#pragma unroll
    for (int i = 0; i < pfp::kMaxDistortion; ++i)
      D[i] = has_D ? D_all[pfp::kMaxDistortion * b + i] : 0.0;
  }
  __device__ pfp::Camera<double> camera() const {
    return pfp::problem_camera(K, has_D ? D : nullptr, model, 0);
  }
};

template <bool kMasked = false, typename scalar_t>
__device__ WarpAccumulator<scalar_t, kMasked> warp_accumulator(
    const scalar_t* X, const scalar_t* x, const scalar_t* w, int64_t b, int64_t N,
    const pfp::Camera<double>& cam, int lane, const pfp::Robust<double>& rob) {
  WarpAccumulator<scalar_t, kMasked> acc;
  acc.X = X + 3 * b * N;
  acc.x = x + 2 * b * N;
  acc.w = w == nullptr ? nullptr : w + 2 * b * N;  // null: unit weights
  acc.cam = cam;
  acc.N = N;
  acc.lane = lane;
  acc.rob = rob;
  acc.mask = nullptr;
  acc.use_mask = false;
  return acc;
}

// Problem b = this warp's, then every stride-th after it (a grid-stride loop), with the lane.
template <typename F>
__device__ __forceinline__ void for_each_warp_problem(int64_t B, F&& f) {
  const int lane = threadIdx.x % kWarp;
  const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x / kWarp;
  for (int64_t b = first; b < B; b += stride) f(b, lane);
}

template <typename scalar_t>
__device__ void solve_one(const pfp::PnPForwardArgs<scalar_t>& a, int64_t b, int lane) {
  CameraCopy c(a.K, a.D, a.model, b);  // read in every point evaluation
  auto acc = warp_accumulator(a.X, a.x, a.w, b, a.N, c.camera(), lane, a.prm.rob);
  // Every lane holds the same result: the lanes share the writes.
  pfp::forward_problem(acc, a, b, acc.cam, lane, kWarp);
}

template <typename scalar_t, int kMinWarpsPerSM>
__global__ void __launch_bounds__(kWarp* kForwardWarpsPerBlock,
                                  kMinWarpsPerSM / kForwardWarpsPerBlock)
    solve_pnp_kernel(const pfp::PnPForwardArgs<scalar_t> a) {
  for_each_warp_problem(a.B, [&](int64_t b, int lane) { solve_one(a, b, lane); });
}

template <typename scalar_t>
__global__ void __launch_bounds__(kWarp* kForwardWarpsPerBlock, 1)
    solve_pnp_ransac_kernel(const pfp::PnPRansacArgs<scalar_t> ra) {
  const auto& a = ra.f;
  for_each_warp_problem(a.B, [&](int64_t b, int lane) {
    CameraCopy c(a.K, a.D, a.model, b);
    auto acc = warp_accumulator<true>(a.X, a.x, a.w, b, a.N, c.camera(), lane, a.prm.rob);
    acc.mask = ra.inliers + b * a.N;
    pfp::ransac_problem(acc, ra, b, acc.cam, lane, kWarp);
  });
}

template <typename scalar_t>
__global__ void __launch_bounds__(kWarp* kForwardWarpsPerBlock, 1)
    solve_pnp_minima_kernel(const pfp::PnPMinimaArgs<scalar_t> m) {
  const auto& a = m.f;
  for_each_warp_problem(a.B, [&](int64_t b, int lane) {
    CameraCopy c(a.K, a.D, a.model, b);
    auto acc = warp_accumulator(a.X, a.x, a.w, b, a.N, c.camera(), lane, a.prm.rob);
    pfp::minima_problem(acc, m, b, acc.cam, lane, kWarp);
  });
}

// Writes every gradient entry of problem b (zeros unless it converged, as on the CPU).
template <typename scalar_t>
__device__ void backward_one(const pfp::PnPBackwardArgs<scalar_t>& a, int64_t b, int lane) {
  CameraCopy c(a.K, a.D, a.model, b);
  auto acc = warp_accumulator(a.X, a.x, a.w, b, a.N, c.camera(), lane, a.rob);
  pfp::backward_problem(acc, a, b, acc.cam, lane, kWarp);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kWarp* kBackwardWarpsPerBlock, kBackwardMinBlocksPerSM)
    solve_pnp_backward_kernel(const pfp::PnPBackwardArgs<scalar_t> a) {
  for_each_warp_problem(a.B, [&](int64_t b, int lane) { backward_one(a, b, lane); });
}

// pnp_hessian and its backward: one streaming pass over the points each, as the backward
// (whose register budget the Hessian's pass keeps; its backward's Jets get the full one).
template <typename scalar_t, bool kBackward>
__global__ void __launch_bounds__(kWarp* kBackwardWarpsPerBlock,
                                  kBackward ? 1 : kBackwardMinBlocksPerSM)
    pnp_hessian_kernel(const pfp::PnPHessianArgs<scalar_t> a) {
  for_each_warp_problem(a.B, [&](int64_t b, int lane) {
    CameraCopy c(a.K, a.D, a.model, b);
    auto acc = warp_accumulator(a.X, a.x, a.w, b, a.N, c.camera(), lane, a.rob);
    if constexpr (kBackward)
      pfp::hessian_backward_problem(acc, a, b, acc.cam, lane, kWarp);
    else
      pfp::hessian_problem(acc, a, b, acc.cam, lane, kWarp);
  });
}

int64_t blocks_for(int64_t problems, int warps_per_block) {
  const int64_t blocks = (problems + warps_per_block - 1) / warps_per_block;
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

}  // namespace

// Host launchers (declared in pnp_launch.h).
template <typename scalar_t>
cudaError_t launch_solve_pnp(const pfp::PnPForwardArgs<scalar_t>& a, int32_t min_warps_per_sm,
                             cudaStream_t stream) {
  if (min_warps_per_sm != kForwardMinWarpsDefault && min_warps_per_sm != kForwardMinWarpsTight)
    return cudaErrorInvalidValue;
  if (a.B <= 0) return cudaSuccess;
  const dim3 grid(unsigned(blocks_for(a.B, kForwardWarpsPerBlock)));
  const dim3 block(kWarp * kForwardWarpsPerBlock);
  if (min_warps_per_sm == kForwardMinWarpsTight)
    solve_pnp_kernel<scalar_t, kForwardMinWarpsTight><<<grid, block, 0, stream>>>(a);
  else
    solve_pnp_kernel<scalar_t, kForwardMinWarpsDefault><<<grid, block, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_solve_pnp_backward(const pfp::PnPBackwardArgs<scalar_t>& a,
                                      cudaStream_t stream) {
  if (a.B <= 0) return cudaSuccess;
  const int64_t blocks = blocks_for(a.B, kBackwardWarpsPerBlock);
  solve_pnp_backward_kernel<scalar_t>
      <<<dim3(unsigned(blocks)), dim3(kWarp * kBackwardWarpsPerBlock), 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_solve_pnp_ransac(const pfp::PnPRansacArgs<scalar_t>& a, cudaStream_t stream) {
  if (a.f.B <= 0) return cudaSuccess;
  const dim3 grid(unsigned(blocks_for(a.f.B, kForwardWarpsPerBlock)));
  solve_pnp_ransac_kernel<scalar_t><<<grid, dim3(kWarp * kForwardWarpsPerBlock), 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_solve_pnp_minima(const pfp::PnPMinimaArgs<scalar_t>& m, cudaStream_t stream) {
  if (m.f.B <= 0) return cudaSuccess;
  const dim3 grid(unsigned(blocks_for(m.f.B, kForwardWarpsPerBlock)));
  solve_pnp_minima_kernel<scalar_t><<<grid, dim3(kWarp * kForwardWarpsPerBlock), 0, stream>>>(m);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_pnp_hessian(const pfp::PnPHessianArgs<scalar_t>& a, bool backward,
                               cudaStream_t stream) {
  if (a.B <= 0) return cudaSuccess;
  const dim3 grid(unsigned(blocks_for(a.B, kBackwardWarpsPerBlock)));
  const dim3 block(kWarp * kBackwardWarpsPerBlock);
  if (backward)
    pnp_hessian_kernel<scalar_t, true><<<grid, block, 0, stream>>>(a);
  else
    pnp_hessian_kernel<scalar_t, false><<<grid, block, 0, stream>>>(a);
  return cudaGetLastError();
}

template cudaError_t launch_pnp_hessian<float>(const pfp::PnPHessianArgs<float>&, bool, cudaStream_t);
template cudaError_t launch_pnp_hessian<double>(const pfp::PnPHessianArgs<double>&, bool, cudaStream_t);
template cudaError_t launch_solve_pnp_minima<float>(const pfp::PnPMinimaArgs<float>&, cudaStream_t);
template cudaError_t launch_solve_pnp_minima<double>(const pfp::PnPMinimaArgs<double>&, cudaStream_t);
template cudaError_t launch_solve_pnp_ransac<float>(const pfp::PnPRansacArgs<float>&, cudaStream_t);
template cudaError_t launch_solve_pnp_ransac<double>(const pfp::PnPRansacArgs<double>&, cudaStream_t);
template cudaError_t launch_solve_pnp<float>(const pfp::PnPForwardArgs<float>&, int32_t, cudaStream_t);
template cudaError_t launch_solve_pnp<double>(const pfp::PnPForwardArgs<double>&, int32_t, cudaStream_t);
template cudaError_t launch_solve_pnp_backward<float>(const pfp::PnPBackwardArgs<float>&, cudaStream_t);
template cudaError_t launch_solve_pnp_backward<double>(const pfp::PnPBackwardArgs<double>&, cudaStream_t);

}  // namespace gpu
}  // namespace pyfacepnp
