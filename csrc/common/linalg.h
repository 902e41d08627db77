// Small dense linear algebra on fixed-size arrays: 3-vectors, row-major 3x3 matrices,
// SO(3) exponential, and symmetric positive-definite solves (Cholesky) of size n <= 9.
#pragma once
#include "common/hd.h"

namespace pfp {

template <typename T>
PFP_HD T dot3(const T* a, const T* b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

template <typename T>
PFP_HD void cross3(const T* a, const T* b, T* out) {
  const T x = a[1] * b[2] - a[2] * b[1];
  const T y = a[2] * b[0] - a[0] * b[2];
  const T z = a[0] * b[1] - a[1] * b[0];
  out[0] = x;
  out[1] = y;
  out[2] = z;
}

// out = M v (M row-major 3x3)
template <typename T>
PFP_HD void matvec3(const T* M, const T* v, T* out) {
  const T x = M[0] * v[0] + M[1] * v[1] + M[2] * v[2];
  const T y = M[3] * v[0] + M[4] * v[1] + M[5] * v[2];
  const T z = M[6] * v[0] + M[7] * v[1] + M[8] * v[2];
  out[0] = x;
  out[1] = y;
  out[2] = z;
}

// out = M^T v
template <typename T>
PFP_HD void matTvec3(const T* M, const T* v, T* out) {
  const T x = M[0] * v[0] + M[3] * v[1] + M[6] * v[2];
  const T y = M[1] * v[0] + M[4] * v[1] + M[7] * v[2];
  const T z = M[2] * v[0] + M[5] * v[1] + M[8] * v[2];
  out[0] = x;
  out[1] = y;
  out[2] = z;
}

// out = A B (3x3, out may not alias)
template <typename T>
PFP_HD void matmul3(const T* A, const T* B, T* out) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      out[3 * i + j] = A[3 * i] * B[j] + A[3 * i + 1] * B[3 + j] + A[3 * i + 2] * B[6 + j];
}

template <typename T>
PFP_HD T det3(const T* M) {
  return M[0] * (M[4] * M[8] - M[5] * M[7]) - M[1] * (M[3] * M[8] - M[5] * M[6]) +
         M[2] * (M[3] * M[7] - M[4] * M[6]);
}

// Inverse of a 3x3 matrix; returns false when |det| is not above tiny * scale^3.
template <typename T>
PFP_HD bool inv3(const T* M, T* out) {
  T scale = T(0);
  for (int i = 0; i < 9; ++i) scale = tmax(scale, tabs(M[i]));
  const T d = det3(M);
  if (!(tabs(d) > T(1e-12) * scale * scale * scale) || !is_finite(d)) return false;
  const T id = T(1) / d;
  out[0] = (M[4] * M[8] - M[5] * M[7]) * id;
  out[1] = (M[2] * M[7] - M[1] * M[8]) * id;
  out[2] = (M[1] * M[5] - M[2] * M[4]) * id;
  out[3] = (M[5] * M[6] - M[3] * M[8]) * id;
  out[4] = (M[0] * M[8] - M[2] * M[6]) * id;
  out[5] = (M[2] * M[3] - M[0] * M[5]) * id;
  out[6] = (M[3] * M[7] - M[4] * M[6]) * id;
  out[7] = (M[1] * M[6] - M[0] * M[7]) * id;
  out[8] = (M[0] * M[4] - M[1] * M[3]) * id;
  return true;
}

// R = exp([w]x) (Rodrigues), accurate for small |w|.
template <typename T>
PFP_HD void so3_exp(const T* w, T* R) {
  const T th2 = dot3(w, w);
  T a, b;  // R = I + a [w]x + b [w]x^2
  if (th2 < T(1e-8)) {
    a = T(1) - th2 / T(6);
    b = T(0.5) - th2 / T(24);
  } else {
    const T th = sqrt(th2);
    a = sin(th) / th;
    b = (T(1) - cos(th)) / th2;
  }
  const T xx = w[0] * w[0], yy = w[1] * w[1], zz = w[2] * w[2];
  const T xy = w[0] * w[1], xz = w[0] * w[2], yz = w[1] * w[2];
  R[0] = T(1) - b * (yy + zz);
  R[1] = -a * w[2] + b * xy;
  R[2] = a * w[1] + b * xz;
  R[3] = a * w[2] + b * xy;
  R[4] = T(1) - b * (xx + zz);
  R[5] = -a * w[0] + b * yz;
  R[6] = -a * w[1] + b * xz;
  R[7] = a * w[0] + b * yz;
  R[8] = T(1) - b * (xx + yy);
}

// R <- exp([w]x) R
template <typename T>
PFP_HD void rotate_left(const T* w, T* R) {
  T E[9], out[9];
  so3_exp(w, E);
  matmul3(E, R, out);
  for (int i = 0; i < 9; ++i) R[i] = out[i];
}

// One Newton step of the polar decomposition, R <- (R + R^{-T}) / 2, repeated: maps a
// near-rotation onto SO(3) (removes drift from repeated left-multiplications).
template <typename T>
PFP_HD bool orthonormalize3(T* R, int steps = 3) {
  for (int s = 0; s < steps; ++s) {
    T Rt[9], inv[9];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) Rt[3 * i + j] = R[3 * j + i];
    if (!inv3(Rt, inv)) return false;
    for (int i = 0; i < 9; ++i) R[i] = T(0.5) * (R[i] + inv[i]);
  }
  return true;
}

// Packed symmetric storage: element (i, j), i >= j, at i*(i+1)/2 + j.
PFP_HD int sym_index(int i, int j) {
  return i >= j ? i * (i + 1) / 2 + j : j * (j + 1) / 2 + i;
}

// In-place Cholesky factorisation of a dense n x n SPD matrix A (row-major, lower part
// used). Fails when a pivot is not above rel_tol times the largest diagonal entry, i.e. the
// matrix is not (numerically) positive definite.
template <typename T, int n>
PFP_HD bool cholesky(T* A, T rel_tol) {
  T dmax = T(0);
  for (int i = 0; i < n; ++i) dmax = tmax(dmax, A[i * n + i]);
  if (!(dmax > T(0)) || !is_finite(dmax)) return false;
  const T floor_ = rel_tol * dmax;
  for (int j = 0; j < n; ++j) {
    T d = A[j * n + j];
    for (int k = 0; k < j; ++k) d -= A[j * n + k] * A[j * n + k];
    if (!(d > floor_)) return false;
    const T l = sqrt(d);
    A[j * n + j] = l;
    const T il = T(1) / l;
    for (int i = j + 1; i < n; ++i) {
      T s = A[i * n + j];
      for (int k = 0; k < j; ++k) s -= A[i * n + k] * A[j * n + k];
      A[i * n + j] = s * il;
    }
  }
  return true;
}

// Solve L L^T x = b given the factor from cholesky() and the reciprocals of its diagonal
// (id, n); b is overwritten with x. Multiplications by the reciprocals: a division's latency
// is several multiplications', and an inverse takes n solves.
template <typename T, int n>
PFP_HD void cholesky_solve(const T* L, const T* id, T* b) {
  for (int i = 0; i < n; ++i) {
    T s = b[i];
    for (int k = 0; k < i; ++k) s -= L[i * n + k] * b[k];
    b[i] = s * id[i];
  }
  for (int i = n - 1; i >= 0; --i) {
    T s = b[i];
    for (int k = i + 1; k < n; ++k) s -= L[k * n + i] * b[k];
    b[i] = s * id[i];
  }
}

template <typename T, int n>
PFP_HD void cholesky_solve(const T* L, T* b) {
  T id[n];
  for (int i = 0; i < n; ++i) id[i] = T(1) / L[i * n + i];
  cholesky_solve<T, n>(L, id, b);
}

// Inverse of an SPD matrix from its Cholesky factor, written densely to out (n x n).
template <typename T, int n>
PFP_HD void cholesky_inverse(const T* L, T* out) {
  T id[n];
  for (int i = 0; i < n; ++i) id[i] = T(1) / L[i * n + i];
  for (int c = 0; c < n; ++c) {
    T col[n];
    for (int i = 0; i < n; ++i) col[i] = i == c ? T(1) : T(0);
    cholesky_solve<T, n>(L, id, col);
    for (int i = 0; i < n; ++i) out[i * n + c] = col[i];
  }
  for (int i = 0; i < n; ++i)  // exact symmetry
    for (int j = 0; j < i; ++j) {
      const T m = T(0.5) * (out[i * n + j] + out[j * n + i]);
      out[i * n + j] = m;
      out[j * n + i] = m;
    }
}

}  // namespace pfp
