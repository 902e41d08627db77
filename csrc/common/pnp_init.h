// Closed-form-free global initialisation: the object-space formulation of SQPnP.
//
// With m_i = K^{-1} [x_i; 1] and Q_i = I - m_i m_i^T / |m_i|^2 (projector orthogonal to the
// ray), the object-space error sum_i w_i |Q_i (R X_i + t)|^2 is, after eliminating the
// optimal t = P r (r = vec R, row-major), the quadratic form r^T Omega r. Its minimum over
// SO(3) is found by damped Newton iterations on the manifold from 24 well-spread starts
// (the rotation group of the cube), which also enumerates the planar two-fold ambiguity and
// the few local minima of small-N problems; the best front-facing minima seed the
// reprojection LM (see pnp_solver.h and docs/math.md).
#pragma once
#include "common/linalg.h"

namespace pfp {

// Per-problem sums over points, in coordinates centred at the weighted centroid.
template <typename T>
struct OmegaAccum {
  T S[9];   // sum w Q                     (3x3)
  T B[27];  // sum w Q A_i                 (3x9), A_i r = R X_i
  T C[81];  // sum w A_i^T Q A_i           (9x9), lower triangle accumulated
  PFP_HD void zero() {
    for (int i = 0; i < 9; ++i) S[i] = T(0);
    for (int i = 0; i < 27; ++i) B[i] = T(0);
    for (int i = 0; i < 81; ++i) C[i] = T(0);
  }
  PFP_HD void add(const OmegaAccum& o) {
    for (int i = 0; i < 9; ++i) S[i] += o.S[i];
    for (int i = 0; i < 27; ++i) B[i] += o.B[i];
    for (int i = 0; i < 81; ++i) C[i] += o.C[i];
  }
};

// Add one point: Xr is the centred 3D point, m the normalised ray K^{-1}[x;1], w its weight.
template <typename T>
PFP_HD void add_point_omega(const T* Xr, const T* m, T w, OmegaAccum<T>& acc) {
  const T im2 = T(1) / dot3(m, m);
  T Q[9];
  for (int j = 0; j < 3; ++j)
    for (int l = 0; l < 3; ++l) Q[3 * j + l] = w * ((j == l ? T(1) : T(0)) - m[j] * m[l] * im2);
  for (int i = 0; i < 9; ++i) acc.S[i] += Q[i];
  // (A_i)[j, 3j+k] = X_k, so (Q A_i)[j, 3l+k] = Q[j,l] X_k and
  // (A_i^T Q A_i)[3j+k, 3l+n] = Q[j,l] X_k X_n.
  for (int j = 0; j < 3; ++j)
    for (int l = 0; l < 3; ++l)
      for (int k = 0; k < 3; ++k) acc.B[9 * j + 3 * l + k] += Q[3 * j + l] * Xr[k];
  for (int j = 0; j < 3; ++j)
    for (int k = 0; k < 3; ++k) {
      const int row = 3 * j + k;
      for (int l = 0; l <= j; ++l)
        for (int n = 0; n < 3; ++n) {
          const int col = 3 * l + n;
          if (col <= row) acc.C[9 * row + col] += Q[3 * j + l] * Xr[k] * Xr[n];
        }
    }
}

// Omega = C - B^T S^{-1} B and P = -S^{-1} B (t = P r in centred coordinates).
template <typename T>
PFP_HD bool omega_finish(OmegaAccum<T>& acc, T* Omega, T* P) {
  T Si[9];
  if (!inv3(acc.S, Si)) return false;
  for (int i = 0; i < 3; ++i)
    for (int c = 0; c < 9; ++c) {
      T s = T(0);
      for (int k = 0; k < 3; ++k) s += Si[3 * i + k] * acc.B[9 * k + c];
      P[9 * i + c] = -s;
    }
  for (int r = 0; r < 9; ++r)
    for (int c = 0; c <= r; ++c) {
      T s = acc.C[9 * r + c];
      for (int k = 0; k < 3; ++k) s += acc.B[9 * k + r] * P[9 * k + c];
      Omega[9 * r + c] = s;
      Omega[9 * c + r] = s;
    }
  return true;
}

template <typename T>
PFP_HD T quad9(const T* Om, const T* r) {
  T f = T(0);
  for (int i = 0; i < 9; ++i) {
    T s = T(0);
    for (int j = 0; j < 9; ++j) s += Om[9 * i + j] * r[j];
    f += r[i] * s;
  }
  return f;
}

// The k-th rotation of the cube group (k in 0..23): signed permutation matrices, det +1.
PFP_HD void cube_rotation(int k, double* R) {
  const int perms[6][3] = {{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {2, 1, 0}, {1, 0, 2}};
  const int p = k / 4, s = k % 4;
  const double odd = p >= 3 ? -1.0 : 1.0;  // parity of the permutation
  const double s0 = (s & 1) ? -1.0 : 1.0, s1 = (s & 2) ? -1.0 : 1.0;
  const double sg[3] = {s0, s1, s0 * s1 * odd};  // product of signs * parity = +1
  for (int i = 0; i < 9; ++i) R[i] = 0.0;
  for (int i = 0; i < 3; ++i) R[3 * i + perms[p][i]] = sg[i];
}

// max |A - B| over the 9 entries of two rotations.
template <typename T>
PFP_HD T rot_distance(const T* A, const T* B) {
  T d = T(0);
  for (int i = 0; i < 9; ++i) d = tmax(d, tabs(A[i] - B[i]));
  return d;
}

// Damped Newton on SO(3) for f(R) = r^T Omega r, R <- exp([d]x) R. Returns f at the end.
// `known` holds n_known minima found already (stride `stride` values, rotation first): a
// descent that comes close to one of them stops early and sets `dup`.
template <typename T>
PFP_HD T so3_descent(const T* Om, T* R, int max_iter, const T* known, int n_known, int stride,
                     bool& dup) {
  dup = false;
  T f = quad9(Om, R);
  T lambda = T(1e-6) * (tabs(Om[0]) + tabs(Om[40]) + tabs(Om[80]) + T(1e-300));
  for (int it = 0; it < max_iter; ++it) {
    T G[9];  // Omega r
    for (int i = 0; i < 9; ++i) {
      T s = T(0);
      for (int j = 0; j < 9; ++j) s += Om[9 * i + j] * R[j];
      G[i] = s;
    }
    // D_k = vec([e_k]x R), rows of [e_k]x R written from the rows of R.
    T D[3][9];
    for (int k = 0; k < 3; ++k)
      for (int i = 0; i < 9; ++i) D[k][i] = T(0);
    for (int c = 0; c < 3; ++c) {
      D[0][3 + c] = -R[6 + c];
      D[0][6 + c] = R[3 + c];
      D[1][0 + c] = R[6 + c];
      D[1][6 + c] = -R[0 + c];
      D[2][0 + c] = -R[3 + c];
      D[2][3 + c] = R[0 + c];
    }
    T g[3], H[9], W[9];
    for (int k = 0; k < 3; ++k) {
      T s = T(0);
      for (int i = 0; i < 9; ++i) s += G[i] * D[k][i];
      g[k] = T(2) * s;
    }
    for (int i = 0; i < 3; ++i)  // W_ij = G_row_i . R_row_j
      for (int j = 0; j < 3; ++j) W[3 * i + j] = dot3(G + 3 * i, R + 3 * j);
    const T trW = W[0] + W[4] + W[8];
    T OD[3][9];  // Omega D_k
    for (int k = 0; k < 3; ++k)
      for (int i = 0; i < 9; ++i) {
        T s = T(0);
        for (int l = 0; l < 9; ++l) s += Om[9 * i + l] * D[k][l];
        OD[k][i] = s;
      }
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k <= j; ++k) {
        T s = T(0);
        for (int i = 0; i < 9; ++i) s += D[j][i] * OD[k][i];
        const T h = T(2) * s + W[3 * j + k] + W[3 * k + j] - (j == k ? T(2) * trW : T(0));
        H[3 * j + k] = h;
        H[3 * k + j] = h;
      }
    bool moved = false;
    for (int attempt = 0; attempt < 8 && !moved; ++attempt) {
      T A[9];
      for (int i = 0; i < 9; ++i) A[i] = H[i];
      for (int i = 0; i < 3; ++i) A[4 * i] += lambda;
      T step[3] = {-g[0], -g[1], -g[2]};
      if (!cholesky<T, 3>(A, T(1e-14))) {
        lambda = tmax(lambda * T(10), T(1e-12) * (tabs(H[0]) + tabs(H[4]) + tabs(H[8])) + T(1e-300));
        continue;
      }
      cholesky_solve<T, 3>(A, step);
      const T sn = sqrt(dot3(step, step));
      if (sn < T(1e-9)) return f;  // ample for picking a basin: the LM refines
      if (sn > T(1)) {  // keep each step inside the chart's well-behaved range
        for (int i = 0; i < 3; ++i) step[i] /= sn;
      }
      T Rn[9];
      for (int i = 0; i < 9; ++i) Rn[i] = R[i];
      rotate_left(step, Rn);
      const T fn = quad9(Om, Rn);
      if (fn <= f) {
        const T gain = f - fn;
        for (int i = 0; i < 9; ++i) R[i] = Rn[i];
        f = fn;
        lambda *= T(0.3);
        moved = true;
        if (gain <= T(1e-12) * f) return f;
        for (int c = 0; c < n_known; ++c)
          if (rot_distance(R, known + c * stride) < T(1e-3)) {
            dup = true;  // inside the basin of a known minimum: it will end there
            return f;
          }
      } else {
        lambda = tmax(lambda * T(10), T(1e-12) * (tabs(H[0]) + tabs(H[4]) + tabs(H[8])) + T(1e-300));
      }
    }
    if (!moved) return f;
  }
  return f;
}

}  // namespace pfp
