// CUDA kernels of warp_points and its backward. Kernels only: no torch headers, so that nvcc
// compiles this file on machines whose torch has no CUDA (docs/building.md). The torch glue is
// warp_cuda.cpp; the per-point math is common/warp_math.h, shared with the CPU kernel.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "common/warp_math.h"

namespace pyfacepnp {
namespace gpu {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = INT_MAX;

int64_t blocks_for(int64_t items, int64_t per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

// One thread per point, 64-bit indices, grid-stride.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    warp_points_kernel(const scalar_t* __restrict__ points, const scalar_t* __restrict__ affine,
                       int64_t N, int64_t total, scalar_t* __restrict__ out) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride)
    pfp::warp_point(affine + (i / N) * 6, points + 2 * i, out + 2 * i);
}

// One warp per problem: per-point gradients, and the affine's gradient summed over the
// problem's points (in double, as on the CPU) by a shuffle reduction.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    warp_points_backward_kernel(const scalar_t* __restrict__ grad,
                                const scalar_t* __restrict__ points,
                                const scalar_t* __restrict__ affine, int64_t B, int64_t N,
                                scalar_t* __restrict__ grad_points,
                                scalar_t* __restrict__ grad_affine) {
  const int lane = threadIdx.x % kWarp;
  const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x / kWarp;
  for (int64_t b = first; b < B; b += stride) {
    const scalar_t* A = affine + 6 * b;
    double acc[6] = {0, 0, 0, 0, 0, 0};
    for (int64_t n = lane; n < N; n += kWarp) {
      const int64_t i = b * N + n;
      scalar_t ga[6];
      pfp::warp_point_backward(A, points + 2 * i, grad + 2 * i, grad_points + 2 * i, ga);
#pragma unroll
      for (int k = 0; k < 6; ++k) acc[k] += double(ga[k]);
    }
#pragma unroll
    for (int k = 0; k < 6; ++k)
#pragma unroll
      for (int o = kWarp / 2; o > 0; o >>= 1) acc[k] += __shfl_xor_sync(kFullMask, acc[k], o);
    if (lane < 6) {
      double v = acc[0];  // acc[lane] without a run-time index into the register array
#pragma unroll
      for (int k = 1; k < 6; ++k) v = lane == k ? acc[k] : v;
      grad_affine[6 * b + lane] = scalar_t(v);
    }
  }
}

}  // namespace

// Host launchers (declared in warp_cuda.cpp): enqueue on `stream`, return the launch status.
template <typename scalar_t>
cudaError_t launch_warp_points(const scalar_t* points, const scalar_t* affine, int64_t B,
                               int64_t N, scalar_t* out, cudaStream_t stream) {
  const int64_t total = B * N;
  if (total <= 0) return cudaSuccess;
  warp_points_kernel<scalar_t><<<dim3(unsigned(blocks_for(total, kThreads))), dim3(kThreads), 0,
                                 stream>>>(points, affine, N, total, out);
  return cudaGetLastError();
}

// Writes every entry of grad_points and grad_affine (zeros for the affine when N == 0).
template <typename scalar_t>
cudaError_t launch_warp_points_backward(const scalar_t* grad, const scalar_t* points,
                                        const scalar_t* affine, int64_t B, int64_t N,
                                        scalar_t* grad_points, scalar_t* grad_affine,
                                        cudaStream_t stream) {
  if (B <= 0) return cudaSuccess;
  warp_points_backward_kernel<scalar_t>
      <<<dim3(unsigned(blocks_for(B, kThreads / kWarp))), dim3(kThreads), 0, stream>>>(
          grad, points, affine, B, N, grad_points, grad_affine);
  return cudaGetLastError();
}

#define PFP_INSTANTIATE(scalar_t)                                                              \
  template cudaError_t launch_warp_points<scalar_t>(const scalar_t*, const scalar_t*, int64_t, \
                                                    int64_t, scalar_t*, cudaStream_t);         \
  template cudaError_t launch_warp_points_backward<scalar_t>(                                  \
      const scalar_t*, const scalar_t*, const scalar_t*, int64_t, int64_t, scalar_t*,          \
      scalar_t*, cudaStream_t);
PFP_INSTANTIATE(float)
PFP_INSTANTIATE(double)
#undef PFP_INSTANTIATE

}  // namespace gpu
}  // namespace pyfacepnp
