// Minimal solver for RANSAC hypotheses: P3P by Lambda Twist (Persson & Nordberg, ECCV 2018).
//
// Three world points X_i and unit bearing rays y_i; the depths lambda_i satisfy
//   lambda_i^2 + lambda_j^2 + b_ij lambda_i lambda_j = a_ij,  b_ij = -2 y_i.y_j, a_ij = |X_i - X_j|^2.
// Two of these quadrics (in lambda) combine into a pencil D1 + gamma D2; a root gamma of its
// cubic determinant makes the member degenerate: a pair of planes through the origin, so each
// solution satisfies a linear relation lambda_1 = w0 lambda_2 + w1 lambda_3. With tau =
// lambda_2 / lambda_3, two of the equations then give a quadratic in tau. Every positive
// solution is polished by Gauss-Newton on the three equations, and the pose follows from the
// three camera-frame points by aligning two triangles. Up to 4 poses.
#pragma once
#include "common/linalg.h"
#include "common/pnp_point.h"

namespace pfp {

constexpr int kMaxP3PSolutions = 4;

// Real roots of x^3 + b x^2 + c x + d; returns their count (1 or 3), each polished by Newton.
template <typename T>
PFP_HD int cubic_roots(T b, T c, T d, T* roots) {
  const T b3 = b / T(3);
  const T p = c - b * b3;              // depressed: x = s - b/3, s^3 + p s + q = 0
  const T q = T(2) * b3 * b3 * b3 - b3 * c + d;
  const T disc = q * q / T(4) + p * p * p / T(27);
  int n;
  if (disc > T(0)) {
    const T sq = sqrt(disc);
    const T u = cbrt(-q / T(2) + sq), v = cbrt(-q / T(2) - sq);
    roots[0] = u + v - b3;
    n = 1;
  } else {
    const T r = sqrt(tmax(-p / T(3), T(0)));
    const T arg = r > T(0) ? tmax(T(-1), tmin(T(1), -q / (T(2) * r * r * r))) : T(0);
    const T phi = acos(arg) / T(3);
    const T two_pi_3 = T(2.0943951023931954923);
    for (int k = 0; k < 3; ++k) roots[k] = T(2) * r * cos(phi - two_pi_3 * T(k)) - b3;
    n = 3;
  }
  for (int k = 0; k < n; ++k)
    for (int it = 0; it < 2; ++it) {
      const T x = roots[k];
      const T f = ((x + b) * x + c) * x + d, df = (T(3) * x + T(2) * b) * x + c;
      if (df != T(0)) roots[k] = x - f / df;
    }
  return n;
}

// det(A + g B) = d0 + d1 g + d2 g^2 + d3 g^3 for symmetric 3x3 A, B (row-major).
template <typename T>
PFP_HD void pencil_det(const T* A, const T* B, T* coef) {
  // d1 = tr(adj(A) B), d2 = tr(A adj(B)); adj by cofactors of the symmetric matrices.
  auto adj = [](const T* M, T* C) {
    C[0] = M[4] * M[8] - M[5] * M[7];
    C[1] = M[2] * M[7] - M[1] * M[8];
    C[2] = M[1] * M[5] - M[2] * M[4];
    C[3] = M[5] * M[6] - M[3] * M[8];
    C[4] = M[0] * M[8] - M[2] * M[6];
    C[5] = M[2] * M[3] - M[0] * M[5];
    C[6] = M[3] * M[7] - M[4] * M[6];
    C[7] = M[1] * M[6] - M[0] * M[7];
    C[8] = M[0] * M[4] - M[1] * M[3];
  };
  T aA[9], aB[9];
  adj(A, aA);
  adj(B, aB);
  T t1 = T(0), t2 = T(0);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      t1 += aA[3 * i + j] * B[3 * j + i];
      t2 += A[3 * i + j] * aB[3 * j + i];
    }
  coef[0] = det3(A);
  coef[1] = t1;
  coef[2] = t2;
  coef[3] = det3(B);
}

// Eigen-decomposition of a symmetric 3x3 matrix of rank 2: the two non-zero eigenvalues (the
// larger in magnitude first) and their unit eigenvectors.
template <typename T>
PFP_HD bool rank2_eig(const T* M, T* s, T (*e)[3]) {
  const T tr = M[0] + M[4] + M[8];
  const T minors = M[0] * M[4] - M[1] * M[3] + M[0] * M[8] - M[2] * M[6] + M[4] * M[8] - M[5] * M[7];
  const T disc = tr * tr - T(4) * minors;
  if (!(disc >= T(0))) return false;
  const T sq = sqrt(disc);
  T l0 = T(0.5) * (tr + sq), l1 = T(0.5) * (tr - sq);
  if (tabs(l1) > tabs(l0)) {
    const T tmp = l0;
    l0 = l1;
    l1 = tmp;
  }
  s[0] = l0;
  s[1] = l1;
  for (int k = 0; k < 2; ++k) {
    T A[9];
    for (int i = 0; i < 9; ++i) A[i] = M[i] - (i % 4 == 0 ? s[k] : T(0));
    // The eigenvector is orthogonal to the rows of A: the largest cross product of two rows.
    T best = T(-1);
    for (int r = 0; r < 3; ++r) {
      T c[3];
      cross3(A + 3 * r, A + 3 * ((r + 1) % 3), c);
      const T n2 = dot3(c, c);
      if (n2 > best) {
        best = n2;
        for (int i = 0; i < 3; ++i) e[k][i] = c[i];
      }
    }
    if (!(best > T(0))) return false;
    const T inv = T(1) / sqrt(best);
    for (int i = 0; i < 3; ++i) e[k][i] *= inv;
  }
  return true;
}

// Gauss-Newton on the three depth equations from a close solution.
template <typename T>
PFP_HD void polish_depths(T* L, const T* a, const T* b) {
  for (int it = 0; it < 5; ++it) {
    const T r[3] = {L[0] * L[0] + L[1] * L[1] + b[0] * L[0] * L[1] - a[0],
                    L[0] * L[0] + L[2] * L[2] + b[1] * L[0] * L[2] - a[1],
                    L[1] * L[1] + L[2] * L[2] + b[2] * L[1] * L[2] - a[2]};
    const T J[9] = {T(2) * L[0] + b[0] * L[1], T(2) * L[1] + b[0] * L[0], T(0),
                    T(2) * L[0] + b[1] * L[2], T(0), T(2) * L[2] + b[1] * L[0],
                    T(0), T(2) * L[1] + b[2] * L[2], T(2) * L[2] + b[2] * L[1]};
    T Ji[9];
    if (!inv3(J, Ji)) return;
    T d[3];
    matvec3(Ji, r, d);
    for (int i = 0; i < 3; ++i) L[i] -= d[i];
  }
}

// The pose mapping X_i to the camera-frame points P_i = lambda_i y_i (exactly for a
// congruent triangle): R aligns the frames built on the two triangles.
template <typename T>
PFP_HD bool pose_from_triangles(const T (*X)[3], const T (*P)[3], Pose<T>& pose) {
  T dX[2][3], dP[2][3];
  for (int k = 0; k < 3; ++k) {
    dX[0][k] = X[1][k] - X[0][k];
    dX[1][k] = X[2][k] - X[0][k];
    dP[0][k] = P[1][k] - P[0][k];
    dP[1][k] = P[2][k] - P[0][k];
  }
  T A[9], B[9];  // columns: d1, d2, d1 x d2
  T cX[3], cP[3];
  cross3(dX[0], dX[1], cX);
  cross3(dP[0], dP[1], cP);
  for (int r = 0; r < 3; ++r) {
    A[3 * r + 0] = dX[0][r];
    A[3 * r + 1] = dX[1][r];
    A[3 * r + 2] = cX[r];
    B[3 * r + 0] = dP[0][r];
    B[3 * r + 1] = dP[1][r];
    B[3 * r + 2] = cP[r];
  }
  T Ai[9];
  if (!inv3(A, Ai)) return false;
  matmul3(B, Ai, pose.R);
  if (!orthonormalize3(pose.R, 3)) return false;
  T RX[3];
  matvec3(pose.R, X[0], RX);
  for (int k = 0; k < 3; ++k) pose.t[k] = P[0][k] - RX[k];
  for (int i = 0; i < 9; ++i)
    if (!is_finite(pose.R[i])) return false;
  return is_finite(pose.t[0]) && is_finite(pose.t[1]) && is_finite(pose.t[2]);
}

// Poses putting X_i on the rays y_i (unit vectors); returns their number (0..4).
template <typename T>
PFP_HD int p3p_lambda_twist(const T (*X)[3], const T (*y)[3], Pose<T>* poses) {
  const T b[3] = {T(-2) * dot3(y[0], y[1]), T(-2) * dot3(y[0], y[2]), T(-2) * dot3(y[1], y[2])};
  T a[3];  // |X0-X1|^2, |X0-X2|^2, |X1-X2|^2
  const int pi[3][2] = {{0, 1}, {0, 2}, {1, 2}};
  for (int k = 0; k < 3; ++k) {
    T d[3];
    for (int c = 0; c < 3; ++c) d[c] = X[pi[k][0]][c] - X[pi[k][1]][c];
    a[k] = dot3(d, d);
  }
  if (!(a[0] > T(0) && a[1] > T(0) && a[2] > T(0))) return 0;
  // D1 = a23 M12 - a12 M23, D2 = a23 M13 - a13 M23 (the quadrics with the a_ij eliminated).
  const T D1[9] = {a[2], a[2] * b[0] / T(2), T(0),
                   a[2] * b[0] / T(2), a[2] - a[0], -a[0] * b[2] / T(2),
                   T(0), -a[0] * b[2] / T(2), -a[0]};
  const T D2[9] = {a[2], T(0), a[2] * b[1] / T(2),
                   T(0), -a[1], -a[1] * b[2] / T(2),
                   a[2] * b[1] / T(2), -a[1] * b[2] / T(2), a[2] - a[1]};
  T coef[4];
  pencil_det(D1, D2, coef);
  if (!(tabs(coef[3]) > T(0))) return 0;
  T roots[3];
  const int nr = cubic_roots(coef[2] / coef[3], coef[1] / coef[3], coef[0] / coef[3], roots);
  int n = 0;
  for (int ri = 0; ri < nr && n == 0; ++ri) {
    T D0[9];
    for (int i = 0; i < 9; ++i) D0[i] = D1[i] + roots[ri] * D2[i];
    T s[2], e[2][3];
    if (!rank2_eig(D0, s, e) || !(s[0] * s[1] < T(0))) continue;  // no real pair of planes
    const T sr = sqrt(-s[1] / s[0]);
    for (int sign = -1; sign <= 1; sign += 2) {
      // s0 (e0.l)^2 + s1 (e1.l)^2 = 0: the planes p . l = 0 with p = e0 -+ sr e1.
      T p[3];
      for (int i = 0; i < 3; ++i) p[i] = e[0][i] + T(sign) * sr * e[1][i];
      if (!(tabs(p[0]) > T(1e-12) * (tabs(p[1]) + tabs(p[2])))) continue;
      const T w0 = -p[1] / p[0], w1 = -p[2] / p[0];
      // a13 (tau^2 + b23 tau + 1) = a23 ((w0 tau + w1)^2 + b13 (w0 tau + w1) + 1)
      const T qa = a[1] - a[2] * w0 * w0;
      const T qb = a[1] * b[2] - a[2] * (T(2) * w0 * w1 + b[1] * w0);
      const T qc = a[1] - a[2] * (w1 * w1 + b[1] * w1 + T(1));
      T taus[2];
      int nt = 0;
      if (tabs(qa) > T(1e-14) * (tabs(qb) + tabs(qc))) {
        const T disc = qb * qb - T(4) * qa * qc;
        if (disc < T(0)) continue;
        const T sq = sqrt(disc);
        const T qq = T(-0.5) * (qb + (qb >= T(0) ? sq : -sq));  // stable roots
        taus[nt++] = qq / qa;
        if (qq != T(0)) taus[nt++] = qc / qq;
      } else if (qb != T(0)) {
        taus[nt++] = -qc / qb;
      }
      for (int k = 0; k < nt && n < kMaxP3PSolutions; ++k) {
        const T tau = taus[k];
        if (!(tau > T(0))) continue;
        const T den = tau * tau + b[2] * tau + T(1);
        if (!(den > T(0))) continue;
        T L[3];
        L[2] = sqrt(a[2] / den);
        L[1] = tau * L[2];
        L[0] = (w0 * tau + w1) * L[2];
        if (!(L[0] > T(0))) continue;
        polish_depths(L, a, b);
        if (!(L[0] > T(0) && L[1] > T(0) && L[2] > T(0))) continue;
        T P[3][3];
        for (int i = 0; i < 3; ++i)
          for (int c = 0; c < 3; ++c) P[i][c] = L[i] * y[i][c];
        if (pose_from_triangles(X, P, poses[n])) ++n;
      }
    }
  }
  return n;
}

}  // namespace pfp
