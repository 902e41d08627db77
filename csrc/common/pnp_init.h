// Closed-form-free global initialisation: the object-space formulation of SQPnP.
//
// With m_i = K^{-1} [x_i; 1] and Q_i = I - m_i m_i^T / |m_i|^2 (projector orthogonal to the
// ray), the object-space error sum_i w_i |Q_i (R X_i + t)|^2 is, after eliminating the
// optimal t = P r (r = vec R, row-major), the quadratic form r^T Omega r. Its minimum over
// SO(3) is found by trust-region Newton iterations on the unit quaternions (where it is a
// quartic form) from 24 well-spread starts (the rotation group of the cube), which also
// enumerates the planar two-fold ambiguity and the few local minima of small-N problems; the
// best front-facing minima seed the reprojection LM (see pnp_solver.h and docs/math.md).
#pragma once
#include "common/linalg.h"

namespace pfp {

// Per-problem sums over points, in coordinates centred at the weighted centroid. Q and X X^T
// are symmetric, so only their distinct entries are summed: with sym(j, l) = j (j + 1) / 2 + l
// (j >= l) indexing a 3x3 symmetric matrix's lower triangle,
//   S[sym(j, l)]                = sum w Q_jl                 (S = sum w Q, 3x3)
//   B[3 sym(j, l) + k]          = sum w Q_jl X_k             (B = sum w Q A_i, 3x9)
//   C[6 sym(j, l) + sym(k, n)]  = sum w Q_jl X_k X_n         (C = sum w A_i^T Q A_i, 9x9)
// where A_i r = R X_i, so that (Q A_i)[j, 3l+k] = Q_jl X_k and
// (A_i^T Q A_i)[3j+k, 3l+n] = Q_jl X_k X_n: 60 sums per point where the dense 3x3, 3x9 and
// lower triangle of the 9x9 take 81. omega_finish expands them.
template <typename T>
struct OmegaAccum {
  T S[6];
  T B[18];
  T C[36];
  PFP_HD void zero() {
    for (int i = 0; i < 6; ++i) S[i] = T(0);
    for (int i = 0; i < 18; ++i) B[i] = T(0);
    for (int i = 0; i < 36; ++i) C[i] = T(0);
  }
  PFP_HD void add(const OmegaAccum& o) {
    for (int i = 0; i < 6; ++i) S[i] += o.S[i];
    for (int i = 0; i < 18; ++i) B[i] += o.B[i];
    for (int i = 0; i < 36; ++i) C[i] += o.C[i];
  }
};

// Index of entry (j, l) of a symmetric 3x3 matrix in its packed lower triangle.
PFP_HD_INLINE constexpr int sym3(int j, int l) {
  return j >= l ? j * (j + 1) / 2 + l : l * (l + 1) / 2 + j;
}

// Add one point: Xr is the centred 3D point, m the normalised ray K^{-1}[x;1], w its weight.
// Acc is an OmegaAccum or any struct with `S[6]`, `B[18]` and `C[36]` that can be added to
// (the CPU's per-lane sums, pnp/pnp_cpu_simd.h).
template <typename T, typename Acc>
PFP_HD_INLINE void add_point_omega(const T* Xr, const T* m, T w, Acc& acc) {
  const T wm = w / dot3(m, m);
  T Q[6], XX[6];
  PFP_UNROLL
  for (int j = 0; j < 3; ++j)
    PFP_UNROLL
    for (int l = 0; l <= j; ++l) {
      Q[sym3(j, l)] = (j == l ? w : T(0)) - wm * m[j] * m[l];
      XX[sym3(j, l)] = Xr[j] * Xr[l];
    }
  PFP_UNROLL
  for (int a = 0; a < 6; ++a) {
    acc.S[a] += Q[a];
    PFP_UNROLL
    for (int k = 0; k < 3; ++k) acc.B[3 * a + k] += Q[a] * Xr[k];
    PFP_UNROLL
    for (int b = 0; b < 6; ++b) acc.C[6 * a + b] += Q[a] * XX[b];
  }
}

// Omega = C - B^T S^{-1} B and P = -S^{-1} B (t = P r in centred coordinates).
template <typename T>
PFP_HD bool omega_finish(const OmegaAccum<T>& acc, T* Omega, T* P) {
  T S[9], Si[9], B[27];
  for (int j = 0; j < 3; ++j)
    for (int l = 0; l < 3; ++l) {
      S[3 * j + l] = acc.S[sym3(j, l)];
      for (int k = 0; k < 3; ++k) B[9 * j + 3 * l + k] = acc.B[3 * sym3(j, l) + k];
    }
  if (!inv3(S, Si)) return false;
  for (int i = 0; i < 3; ++i)
    for (int c = 0; c < 9; ++c) {
      T s = T(0);
      for (int k = 0; k < 3; ++k) s += Si[3 * i + k] * B[9 * k + c];
      P[9 * i + c] = -s;
    }
  for (int r = 0; r < 9; ++r)
    for (int c = 0; c <= r; ++c) {
      T s = acc.C[6 * sym3(r / 3, c / 3) + sym3(r % 3, c % 3)];
      for (int k = 0; k < 3; ++k) s += B[9 * k + r] * P[9 * k + c];
      Omega[9 * r + c] = s;
      Omega[9 * c + r] = s;
    }
  return true;
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

// ---- The object-space error as a quartic form in a unit quaternion ----
//
// R(q) is quadratic in the unit quaternion q = (w, x, y, z): r = vec R(q) = A m(q), with m(q)
// the 10 monomials (ww, xx, yy, zz, wx, wy, wz, xy, xz, yz). So f(q) = r^T Omega r =
// m^T (A^T Omega A) m is a homogeneous quartic on the sphere S^3 (q and -q: the same rotation),
// and its gradient and Hessian are polynomials: a descent needs no sine or cosine and never
// leaves SO(3) (R(q) is a rotation for any unit q). See docs/math.md, "Initialisation".
constexpr int kNumMonomials = 10;

// The two quaternion components of monomial k (k < 4: a square).
PFP_HD void monomial_factors(int k, int& a, int& b) {
  const int fa[kNumMonomials] = {0, 1, 2, 3, 0, 0, 0, 1, 1, 2};
  const int fb[kNumMonomials] = {0, 1, 2, 3, 1, 2, 3, 2, 3, 3};
  a = fa[k];
  b = fb[k];
}

// m_k = q_a q_b in monomial_factors' order, written out: the descent's innermost function
// (GCC does not unroll the loop over monomial_factors).
template <typename T>
PFP_HD void quat_monomials(const T* q, T* m) {
  m[0] = q[0] * q[0];
  m[1] = q[1] * q[1];
  m[2] = q[2] * q[2];
  m[3] = q[3] * q[3];
  m[4] = q[0] * q[1];
  m[5] = q[0] * q[2];
  m[6] = q[0] * q[3];
  m[7] = q[1] * q[2];
  m[8] = q[1] * q[3];
  m[9] = q[2] * q[3];
}

// R = R(q) from the monomials of q (|q| = 1).
template <typename T>
PFP_HD void rotation_from_monomials(const T* m, T* R) {
  R[0] = m[0] + m[1] - m[2] - m[3];
  R[1] = T(2) * (m[7] - m[6]);
  R[2] = T(2) * (m[8] + m[5]);
  R[3] = T(2) * (m[7] + m[6]);
  R[4] = m[0] - m[1] + m[2] - m[3];
  R[5] = T(2) * (m[9] - m[4]);
  R[6] = T(2) * (m[8] - m[5]);
  R[7] = T(2) * (m[9] + m[4]);
  R[8] = m[0] - m[1] - m[2] + m[3];
}

// A unit quaternion of a rotation (Shepperd: from the largest of 1 + tr R and 1 + 2 R_ii - tr R).
template <typename T>
PFP_HD void quat_from_rotation(const T* R, T* q) {
  const T tr = R[0] + R[4] + R[8];
  const T d[4] = {T(1) + tr, T(1) + T(2) * R[0] - tr, T(1) + T(2) * R[4] - tr,
                  T(1) + T(2) * R[8] - tr};  // 4 q_i^2
  int i = 0;
  for (int k = 1; k < 4; ++k)
    if (d[k] > d[i]) i = k;
  const T s = sqrt(d[i]), h = T(0.5) / s;
  // 4 q_0 q_j and 4 q_j q_k from the antisymmetric and symmetric parts of R.
  const T wx = (R[7] - R[5]) * h, wy = (R[2] - R[6]) * h, wz = (R[3] - R[1]) * h;
  const T xy = (R[1] + R[3]) * h, xz = (R[2] + R[6]) * h, yz = (R[5] + R[7]) * h;
  switch (i) {
    case 0: q[0] = T(0.5) * s; q[1] = wx; q[2] = wy; q[3] = wz; break;
    case 1: q[0] = wx; q[1] = T(0.5) * s; q[2] = xy; q[3] = xz; break;
    case 2: q[0] = wy; q[1] = xy; q[2] = T(0.5) * s; q[3] = yz; break;
    default: q[0] = wz; q[1] = xz; q[2] = yz; q[3] = T(0.5) * s; break;
  }
}

// f(q) = m^T (A^T Omega A) m as the map from the monomials to the Hessian:
// H(q)_ab = d^2 f / dq_a dq_b = sum_k N[10 p + k] m_k, p the packed index of (a, b)
// (sym_index). Then, f being homogeneous of degree 4, grad f = H q / 3 and f = q^T H q / 12:
// one 10x10 product per iterate of the descent gives f, its gradient and its Hessian.
template <typename T>
struct QuarticForm {
  T N[kNumMonomials * kNumMonomials];
};

template <typename T>
PFP_HD void quartic_form(const T* Om, QuarticForm<T>& F) {
  // M = A^T Omega A, A's columns (2 or 3 non-zeros) read off rotation_from_monomials.
  T A[kNumMonomials][9], OA[kNumMonomials][9];
  for (int k = 0; k < kNumMonomials; ++k) {
    T ek[kNumMonomials];
    for (int l = 0; l < kNumMonomials; ++l) ek[l] = l == k ? T(1) : T(0);
    rotation_from_monomials(ek, A[k]);
    for (int i = 0; i < 9; ++i) OA[k][i] = T(0);
    for (int j = 0; j < 9; ++j)
      if (A[k][j] != T(0))
        for (int i = 0; i < 9; ++i) OA[k][i] += Om[9 * i + j] * A[k][j];
  }
  // c_e: the coefficient of the quartic monomial with exponents e, indexed e0 + 5 e1 + 25 e2
  // (e3 = 4 - e0 - e1 - e2): f = sum_{k,l} M_kl m_k m_l gathers M_kl into m_k m_l's slot.
  T coef[125];
  for (int i = 0; i < 125; ++i) coef[i] = T(0);
  const int pow5[4] = {1, 5, 25, 0};
  for (int k = 0; k < kNumMonomials; ++k) {
    int a, b;
    monomial_factors(k, a, b);
    for (int l = 0; l < kNumMonomials; ++l) {
      T M = T(0);
      for (int j = 0; j < 9; ++j) M += A[l][j] * OA[k][j];
      int e, d;
      monomial_factors(l, e, d);
      coef[pow5[a] + pow5[b] + pow5[e] + pow5[d]] += M;
    }
  }
  // f = sum_{abcd} S_abcd q_a q_b q_c q_d with S symmetric: S_abcd = c_e e! / 4!, so
  // H_ab = 12 sum_{cd} S_abcd q_c q_d = sum_k 12 S_ab(k) mult_k m_k (mult: 1 for a square,
  // 2 else), and 12 / 4! = 1 / 2. e! from the number of equal pairs among (a, b, c, d):
  // 0, 1, 2 (two pairs), 3 (a triple) or 6 (all four) give 1, 2, 4, 6, 24.
  const T fact_of_pairs[7] = {T(1), T(2), T(4), T(6), T(0), T(0), T(24)};
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b <= a; ++b)
      for (int k = 0; k < kNumMonomials; ++k) {
        int c, d;
        monomial_factors(k, c, d);
        const int pairs = (a == b) + (a == c) + (a == d) + (b == c) + (b == d) + (c == d);
        const T mult = c == d ? T(1) : T(2);
        F.N[kNumMonomials * sym_index(a, b) + k] = T(0.5) * mult * fact_of_pairs[pairs] *
                                                   coef[pow5[a] + pow5[b] + pow5[c] + pow5[d]];
      }
}

// The form at a unit quaternion: f, the gradient g and the packed Hessian H (sym_index).
template <typename T>
struct QuarticEval {
  T m[kNumMonomials];
  T H[10];
  T g[4];
  T f;
};

// out = H v for a symmetric 4x4 H in packed storage (sym_index).
template <typename T>
PFP_HD void sym4_matvec(const T* H, const T* v, T* out) {
  out[0] = H[0] * v[0] + H[1] * v[1] + H[3] * v[2] + H[6] * v[3];
  out[1] = H[1] * v[0] + H[2] * v[1] + H[4] * v[2] + H[7] * v[3];
  out[2] = H[3] * v[0] + H[4] * v[1] + H[5] * v[2] + H[8] * v[3];
  out[3] = H[6] * v[0] + H[7] * v[1] + H[8] * v[2] + H[9] * v[3];
}

template <typename T>
PFP_HD void quartic_eval(const QuarticForm<T>& F, const T* q, QuarticEval<T>& e) {
  quat_monomials(q, e.m);
  PFP_UNROLL
  for (int p = 0; p < 10; ++p) {
    T s = T(0);
    PFP_UNROLL
    for (int k = 0; k < kNumMonomials; ++k) s += F.N[kNumMonomials * p + k] * e.m[k];
    e.H[p] = s;
  }
  sym4_matvec(e.H, q, e.g);
  PFP_UNROLL
  for (int a = 0; a < 4; ++a) e.g[a] *= T(1) / T(3);
  e.f = T(0.25) * (q[0] * e.g[0] + q[1] * e.g[1] + q[2] * e.g[2] + q[3] * e.g[3]);
}

// Column j of an orthonormal basis of the tangent space at q: q * (0, e_j), the quaternion
// product (a rotation about the body axis j), orthogonal to q.
template <typename T>
PFP_HD void tangent_basis(const T* q, T (*E)[4]) {
  const T w = q[0], x = q[1], y = q[2], z = q[3];
  E[0][0] = -x; E[0][1] = w;  E[0][2] = z;  E[0][3] = -y;
  E[1][0] = -y; E[1][1] = -z; E[1][2] = w;  E[1][3] = x;
  E[2][0] = -z; E[2][1] = y;  E[2][2] = -x; E[2][3] = w;
}

// Riemannian gradient and Hessian of f on S^3 in that basis: E^T g and E^T H E - (q.g) I,
// with q.g = 4 f (Euler's identity).
template <typename T>
PFP_HD void sphere_newton_system(const QuarticEval<T>& e, const T* q, T* gr, T* Hr) {
  T E[3][4];
  tangent_basis(q, E);
  T HE[3][4];
  PFP_UNROLL
  for (int j = 0; j < 3; ++j) {
    gr[j] = E[j][0] * e.g[0] + E[j][1] * e.g[1] + E[j][2] * e.g[2] + E[j][3] * e.g[3];
    sym4_matvec(e.H, E[j], HE[j]);
  }
  PFP_UNROLL
  for (int i = 0; i < 3; ++i)
    PFP_UNROLL
    for (int j = 0; j <= i; ++j) {
      T s = T(0);
      PFP_UNROLL
      for (int a = 0; a < 4; ++a) s += E[i][a] * HE[j][a];
      if (i == j) s -= T(4) * e.f;
      Hr[3 * i + j] = s;
      Hr[3 * j + i] = s;
    }
}

// q <- (q + E d) / |q + E d|: the step d in the tangent basis, retracted onto the sphere.
template <typename T>
PFP_HD void sphere_step(const T* q, const T* d, T* out) {
  T E[3][4];
  tangent_basis(q, E);
  T n2 = T(0);
  PFP_UNROLL
  for (int a = 0; a < 4; ++a) {
    out[a] = q[a] + E[0][a] * d[0] + E[1][a] * d[1] + E[2][a] * d[2];
    n2 += out[a] * out[a];
  }
  const T inv = T(1) / sqrt(n2);
  PFP_UNROLL
  for (int a = 0; a < 4; ++a) out[a] *= inv;
}

// x = H^{-1} b for a symmetric 3x3 H whose Cholesky pivots (h00, m2 / h00, det / m2, m2 the
// leading 2x2 minor) all exceed rel_tol * max_i h_ii: returns 1 then, 0 otherwise (x is then
// meaningless). By the adjugate: one division, no square root, no branch.
template <typename T>
PFP_HD_INLINE T spd3_solve(const T* H, const T* b, T rel_tol, T* x) {
  const T c00 = H[4] * H[8] - H[5] * H[7], c01 = H[5] * H[6] - H[3] * H[8],
          c02 = H[3] * H[7] - H[4] * H[6];
  const T m2 = H[0] * H[4] - H[1] * H[3];
  const T det = H[0] * c00 + H[1] * c01 + H[2] * c02;
  const T floor_ = rel_tol * tmax(H[0], tmax(H[4], H[8]));
  const T c11 = H[0] * H[8] - H[2] * H[6], c12 = H[2] * H[3] - H[0] * H[5];
  const T id = T(1) / det;  // H^{-1} = C^T / det, C symmetric
  x[0] = (c00 * b[0] + c01 * b[1] + c02 * b[2]) * id;
  x[1] = (c01 * b[0] + c11 * b[1] + c12 * b[2]) * id;
  x[2] = (c02 * b[0] + c12 * b[1] + m2 * b[2]) * id;
  // Products of 0/1 masks, not &&: the CPU's lanes (pnp/pnp_cpu_starts.h) vectorise them.
  const T pos = (H[0] > floor_ ? T(1) : T(0)) * (m2 > floor_ * H[0] ? T(1) : T(0)) *
                (det > floor_ * m2 ? T(1) : T(0));
  return pos * (is_finite(x[0] + x[1] + x[2]) ? T(1) : T(0));
}

// Where the ray z + tau p (tau > 0) leaves the ball |.| <= radius (z inside).
template <typename T>
PFP_HD_INLINE T to_boundary(const T* z, const T* p, T radius) {
  const T pp = dot3(p, p), zp = dot3(z, p), zz = dot3(z, z);
  return (sqrt(tmax(zp * zp + pp * (radius * radius - zz), T(0))) - zp) / pp;
}

// The two steps of trust_region_step. The Newton step dn = -H^-1 g; 1 when H is positive
// definite and the step within the radius, else 0.
template <typename T>
PFP_HD_INLINE T region_newton_step(const T* g, const T* H, T radius, T* dn) {
  const T ok = spd3_solve(H, g, T(1e-10), dn);
  for (int k = 0; k < 3; ++k) dn[k] = -dn[k];
  return ok * (dot3(dn, dn) <= radius * radius ? T(1) : T(0));
}

// Steihaug's truncated conjugate gradients on the model, at most 3 iterations.
template <typename T>
PFP_HD_INLINE void steihaug_step(const T* g, const T* H, T radius, T* dc) {
  // `live` while the iterations go on.
  T r[3] = {g[0], g[1], g[2]}, p[3] = {-g[0], -g[1], -g[2]};
  for (int k = 0; k < 3; ++k) dc[k] = T(0);
  T rr = dot3(r, r);
  const T stop = T(1e-24) * rr;
  T live = rr > stop ? T(1) : T(0);
  PFP_UNROLL
  for (int it = 0; it < 3; ++it) {
    T Hp[3];
    matvec3(H, p, Hp);
    const T kappa = dot3(p, Hp);
    const T alpha = kappa > T(0) ? rr / kappa : T(0);
    T z[3];
    for (int k = 0; k < 3; ++k) z[k] = dc[k] + alpha * p[k];
    // Negative curvature, or the step leaves the region: to the boundary, and stop.
    const T inside = (kappa > T(0) ? T(1) : T(0)) * (dot3(z, z) < radius * radius ? T(1) : T(0));
    const T tau = to_boundary(dc, p, radius);
    T rn[3];
    for (int k = 0; k < 3; ++k) {
      const T db = dc[k] + tau * p[k];
      dc[k] = live > T(0) ? (inside > T(0) ? z[k] : db) : dc[k];
      rn[k] = r[k] + alpha * Hp[k];
    }
    const T rr_new = dot3(rn, rn);
    const T go = live * inside;
    for (int k = 0; k < 3; ++k) {
      const T pn = -rn[k] + rr_new / rr * p[k];
      p[k] = go > T(0) ? pn : p[k];
      r[k] = go > T(0) ? rn[k] : r[k];
    }
    rr = go > T(0) ? rr_new : rr;
    live = go * (rr > stop ? T(1) : T(0));
  }
}

// The step d chosen by trust_region_step from its two candidates, and the model's predicted
// decrease -(g.d + d.H.d / 2).
template <typename T>
PFP_HD_INLINE T region_select(const T* g, const T* H, T newton, const T* dn, const T* dc, T* d) {
  for (int k = 0; k < 3; ++k) d[k] = newton > T(0) ? dn[k] : dc[k];
  T Hd[3];
  matvec3(H, d, Hd);
  return -(dot3(g, d) + T(0.5) * dot3(d, Hd));
}

// An approximate minimiser of the model g.d + d.H.d / 2 over |d| <= radius, H symmetric 3x3
// of any inertia: the Newton step when H is positive definite and the step inside (one
// Cholesky factorisation, the usual case near a minimum), else Steihaug's truncated
// conjugate gradients, which follow a direction of negative curvature, or the path that
// leaves the region, to the boundary (no eigen-decomposition: a few products and one square
// root). Returns the model's predicted decrease -(g.d + d.H.d / 2); `newton` (1 or 0) says
// which step. Both steps are computed and one selected, with no branch, so that the CPU runs
// several descents in the lanes of one loop (which skips Steihaug's when no lane selects it);
// a value unused by the selection may be NaN.
template <typename T>
PFP_HD_INLINE T trust_region_step(const T* g, const T* H, T radius, T* d, T& newton) {
  T dn[3], dc[3];
  newton = region_newton_step(g, H, radius, dn);
  steihaug_step(g, H, radius, dc);
  return region_select(g, H, newton, dn, dc, d);
}

// A descent's state on S^3: the point, the form there, and the trust radius (tangent units:
// a step of length s turns the rotation by 2 atan(s)).
template <typename T>
struct SphereDescent {
  T q[4];
  QuarticEval<T> e;
  T radius;
};

constexpr int kNumStarts = 24;        // the cube group's rotations
constexpr int kStartIterations = 60;  // trust-region Newton iterations per start, at most
constexpr double kStartRadius = 0.5;  // ~0.93 rad of rotation: the cube starts' spacing
constexpr double kMaxRadius = 1.0;    // ~1.57 rad
constexpr double kNewtonStop = 1e-6;   // a Newton step this short ends the descent
// A descent within this angle (rad) of a known minimum ends there.
constexpr double kKnownBasin = 3e-2;

// Whether two rotations are within `angle` (small) of each other: 3 - tr(A B^T) =
// 2 (1 - cos) ~ angle^2, nine products and no branch.
template <typename T>
PFP_HD bool near_rotation(const T* A, const T* B, T angle) {
  T tr = T(0);
  for (int i = 0; i < 9; ++i) tr += A[i] * B[i];
  return T(3) - tr < angle * angle;
}

// Whether R is within kKnownBasin of one of the n_known rotations in `known` (stride values
// apart, rotation first).
template <typename T>
PFP_HD bool in_known_basin(const T* R, const T* known, int n_known, int stride) {
  bool in = false;
  for (int c = 0; c < n_known && !in; ++c) in = near_rotation(R, known + c * stride, T(kKnownBasin));
  return in;
}

// One trust-region Newton iteration on S^3 (up to 8 trial steps, each rejected one shrinking
// the radius). Returns false when the descent is over: a step below rounding, no decrease,
// or a gain below rounding.
template <typename T>
PFP_HD bool sphere_newton_iteration(const QuarticForm<T>& F, SphereDescent<T>& s) {
  T gr[3], Hr[9];
  sphere_newton_system(s.e, s.q, gr, Hr);
  for (int attempt = 0; attempt < 8; ++attempt) {
    T d[3], newton;
    const T pred = trust_region_step(gr, Hr, s.radius, d, newton);
    const T dn = sqrt(dot3(d, d));
    if (!(dn >= T(5e-10)) || !(pred > T(0))) return false;
    T qn[4];
    sphere_step(s.q, d, qn);
    QuarticEval<T> en;
    quartic_eval(F, qn, en);
    const T gain = s.e.f - en.f;
    if (gain >= T(0)) {
      const T rho = gain / pred;
      if (rho < T(0.25))  // the model was poor: a smaller region
        s.radius = T(0.25) * dn;
      else if (rho > T(0.75) && dn > T(0.99) * s.radius)  // good and at the boundary: larger
        s.radius = tmin(T(2) * s.radius, T(kMaxRadius));
      for (int a = 0; a < 4; ++a) s.q[a] = qn[a];
      s.e = en;
      // A Newton step of 1e-6 leaves an error of ~1e-12 (quadratic convergence): ample for
      // telling minima apart; the LM refines.
      return gain > T(1e-12) * en.f && !(newton > T(0) && dn < T(kNewtonStop));
    }
    s.radius = T(0.25) * dn;
  }
  return false;
}

// Trust-region Newton on S^3 for f(q) from the rotation R; returns the end point in R and f there.
// `known` holds n_known minima found already (stride `stride` values, rotation first): a
// descent that comes close to one of them stops early and sets `dup`.
template <typename T>
PFP_HD T quartic_descent(const QuarticForm<T>& F, T* R, int max_iter, const T* known,
                         int n_known, int stride, bool& dup) {
  dup = false;
  SphereDescent<T> s;
  quat_from_rotation(R, s.q);
  quartic_eval(F, s.q, s.e);
  s.radius = T(kStartRadius);
  for (int it = 0; it < max_iter && !dup; ++it) {
    if (!sphere_newton_iteration(F, s)) break;
    rotation_from_monomials(s.e.m, R);
    dup = in_known_basin(R, known, n_known, stride);  // then it ends there
  }
  rotation_from_monomials(s.e.m, R);
  return s.e.f;
}

// ---- The 24 descents ----
//
// They run in groups of kStartGroup consecutive starts. The descents of a group do not know
// each other, so that a group can run side by side (the CPU's vector lanes,
// pnp/pnp_cpu_starts.h); a descent stops early (`dup`) in the basin of an end point of an
// earlier group. Every CPU instruction set gives the same end points, bit for bit. (The CUDA
// kernel runs all 24 at once, one per lane of a warp, as a single group.)
constexpr int kStartGroup = 8;
static_assert(kNumStarts % kStartGroup == 0, "the groups are whole");

// The end of every start's descent: its rotation, the object-space error there, and whether
// it entered an earlier group's basin (then it is skipped).
template <typename T>
struct StartEnds {
  T R[kNumStarts][9];
  T f[kNumStarts];
  bool dup[kNumStarts];
};

// Group g's end points that were not duplicates join `known` (n_known of them so far).
template <typename T>
PFP_HD void add_known_ends(const StartEnds<T>& e, int g, T (*known)[9], int& n_known) {
  for (int k = g * kStartGroup; k < (g + 1) * kStartGroup; ++k)
    if (!e.dup[k]) {
      for (int i = 0; i < 9; ++i) known[n_known][i] = e.R[k][i];
      ++n_known;
    }
}

// The descents one at a time.
template <typename T>
PFP_HD void descend_starts_serial(const QuarticForm<T>& F, StartEnds<T>& out) {
  T known[kNumStarts][9];
  int n_known = 0;
  for (int g = 0; g * kStartGroup < kNumStarts; ++g) {
    for (int k = g * kStartGroup; k < (g + 1) * kStartGroup; ++k) {
      double Rd[9];
      cube_rotation(k, Rd);
      for (int i = 0; i < 9; ++i) out.R[k][i] = T(Rd[i]);
      out.f[k] = quartic_descent(F, out.R[k], kStartIterations, known[0], n_known, 9, out.dup[k]);
    }
    add_known_ends(out, g, known, n_known);
  }
}

}  // namespace pfp
