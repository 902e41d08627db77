// Portability macros: the same header-only math compiles for the host (C++) and the
// device (nvcc). Nothing here includes torch.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PFP_HD __host__ __device__ __forceinline__
#define PFP_HD_INLINE PFP_HD
#define PFP_UNROLL _Pragma("unroll")
#else
#define PFP_HD inline
// The per-point functions that the CPU's vectorised passes call in their loop over points:
// inlined always (a call in the loop keeps it from vectorising).
#define PFP_HD_INLINE inline __attribute__((always_inline))
// Unrolls a small loop completely: GCC leaves nested triangular loops rolled, and a loop in
// the body of a loop over points or descents keeps that one from vectorising
// (pnp/pnp_cpu_simd.h, pnp_cpu_starts.h). 16: the quartic form's loops run to 10.
#ifndef PFP_UNROLL
#define PFP_UNROLL _Pragma("GCC unroll 16")
#endif
#endif

#include <cmath>
#include <cstdint>

namespace pfp {

template <typename T>
PFP_HD bool is_finite(T v) {
  return v - v == T(0);  // false for NaN and +-Inf, also under fast-math-free builds
}

template <typename T>
PFP_HD T sqr(T v) {
  return v * v;
}

template <typename T>
PFP_HD T tmin(T a, T b) {
  return a < b ? a : b;
}

template <typename T>
PFP_HD T tmax(T a, T b) {
  return a > b ? a : b;
}

template <typename T>
PFP_HD T tabs(T a) {
  return a < T(0) ? -a : a;
}

}  // namespace pfp
