// The camera policy of the solver: everything the per-point math and the global start need
// to know about the camera, behind one struct shared by the CPU and CUDA kernels.
//
// u_a = k_a . (xd, yd, 1), a = 0, 1, with k_a the rows 0 and 1 of K (the bottom row is never
// read) and (xd, yd) = d(Xc_x / z, Xc_y / z) the lens model of common/distortion.h (the
// identity for the plain pinhole, whose closed forms are kept as the fast path). A camera
// provides
//   bool valid()                         finite, well-formed parameters
//   bool project(Xc, u, du, iz)          pixel u (2), its Jacobian du_a/dXc (2x3) and 1/z;
//                                        false when the point is not in front of the camera
//   add_curvature(Y, Xc, du, lam, c, H)  H += c J^T (sum_a lam_a d2u_a/dXc2) J, J = dXc/dtheta
//   backward_terms(...)                  the projection's part of a point's backward
//   bool prepare_rays(RayMap&)           per problem, what ray() needs
//   void ray(RayMap, x, m)               back-projection of pixel x to a ray m (z = 1)
#pragma once
#include "common/distortion.h"
#include "common/linalg.h"

namespace pfp {

template <typename T>
struct RayMap {
  T Kinv[9];
  const T* D;
  int32_t model;
};

// The plain pinhole's closed forms, free of branches once iz = 1/z is known: Camera's fast
// path, and the CPU's vectorised point passes (pnp/pnp_cpu_simd.h), which call them on every
// point with a safe z and mask the points behind the camera instead of returning early.
template <typename T>
struct Pinhole {
  const T* K;  // row-major 3x3; rows 0 and 1 are read

  PFP_HD void project(const T* Xc, T iz, T* u, T (*du)[3]) const {
    for (int a = 0; a < 2; ++a) {
      const T* k = K + 3 * a;
      u[a] = dot3(k, Xc) * iz;
      du[a][0] = k[0] * iz;
      du[a][1] = k[1] * iz;
      du[a][2] = (k[2] - u[a]) * iz;
    }
  }

  // Camera::ray for the pinhole: K^-1 x.
  PFP_HD static void ray(const T* Kinv, const T* x, T* m) {
    const T xh[3] = {x[0], x[1], T(1)};
    matvec3(Kinv, xh, m);
  }

  // Camera::add_curvature for the pinhole: M = -(b e_z^T + e_z b^T) / z with
  // b = sum_a lam_a du_a, so J^T M J = -(e q^T + q e^T) / z with q = J^T b and
  // e = J^T e_z = [Y x e_z; e_z].
  template <typename HM>
  PFP_HD void add_curvature(const T* Y, const T* Xc, const T (*du)[3], const T* lam, T c,
                            HM&& H) const {
    const T iz = T(1) / Xc[2];
    T b[3], q[6];
    for (int k = 0; k < 3; ++k) b[k] = lam[0] * du[0][k] + lam[1] * du[1][k];
    cross3(Y, b, q);
    for (int k = 0; k < 3; ++k) q[3 + k] = b[k];
    const T ev[6] = {Y[1], -Y[0], T(0), T(0), T(0), T(1)};
    // Entries 2-4 of e are zeros by construction: their products are left out rather than
    // added as zeros (x + 0 y is not folded), which leaves 15 of the 21 entries.
    PFP_UNROLL
    for (int i = 0; i < 6; ++i)
      PFP_UNROLL
      for (int j = 0; j <= i; ++j) {
        const bool ei = i < 2 || i == 5, ej = j < 2 || j == 5;
        if (ei && ej) H[i * 6 + j] -= c * (ev[i] * q[j] + q[i] * ev[j]) * iz;
        else if (ei) H[i * 6 + j] -= c * (ev[i] * q[j]) * iz;
        else if (ej) H[i * 6 + j] -= c * (q[i] * ev[j]) * iz;
      }
  }

  // Camera::backward_terms for the pinhole (gD is not written). du_a/dk_a = Xc / z; its
  // derivative along d is d / z - (d_z / z) Xc / z. Xc/z and d/z are formed first: d ~ |t|^2
  // and Xc ~ |t|, so d_z Xc would overflow for scenes scaled by ~1e105 although the gradient
  // is finite.
  PFP_HD void backward_terms(const T* Xc, T iz, const T (*du)[3], const T* d, const T* Jv,
                             const T* alpha, const T* beta, T* gXc, T* gK, T*) const {
    const T dz = d[2] * iz;
    const T n[3] = {Xc[0] * iz, Xc[1] * iz, T(1)};
    for (int a = 0; a < 2; ++a) {
      for (int k = 0; k < 3; ++k) {
        gK[3 * a + k] = alpha[a] * n[k] + beta[a] * (d[k] * iz - dz * n[k]);
        gXc[k] += alpha[a] * du[a][k] - beta[a] * dz * du[a][k];
      }
      gXc[2] -= beta[a] * Jv[a] * iz;
    }
  }
};

template <typename T>
struct Camera {
  const T* K;                      // row-major 3x3; rows 0 and 1 are read
  const T* D = nullptr;            // kMaxDistortion coefficients; null for the plain pinhole
  int32_t model = kModelPinhole;

  PFP_HD bool distorted() const { return model != kModelPinhole; }

  // Finite rows 0-1 with a non-singular 2x2 focal block, finite coefficients.
  PFP_HD bool valid() const {
    for (int i = 0; i < 6; ++i)
      if (!is_finite(K[i])) return false;
    if (distorted())
      for (int i = 0; i < kMaxDistortion; ++i)
        if (!is_finite(D[i])) return false;
    const T d = K[0] * K[4] - K[1] * K[3];
    const T sc = tmax(tabs(K[0]), tmax(tabs(K[1]), tmax(tabs(K[3]), tabs(K[4]))));
    return tabs(d) > T(1e-12) * sc * sc;
  }

  PFP_HD bool project(const T* Xc, T* u, T (*du)[3], T& iz) const {
    const T z = Xc[2];
    if (!(z > T(0))) return false;
    iz = T(1) / z;
    if (!distorted()) {
      Pinhole<T>{K}.project(Xc, iz, u, du);
      return true;
    }
    const T n0 = Xc[0] * iz, n1 = Xc[1] * iz;
    LensEval<T> s;
    lens_eval(model, D, n0, n1, false, s);
    for (int a = 0; a < 2; ++a) {
      const T* k = K + 3 * a;
      u[a] = k[0] * s.d[0] + k[1] * s.d[1] + k[2];
      const T g0 = k[0] * s.Dd[0][0] + k[1] * s.Dd[1][0], g1 = k[0] * s.Dd[0][1] + k[1] * s.Dd[1][1];
      du[a][0] = g0 * iz;
      du[a][1] = g1 * iz;
      du[a][2] = -(g0 * n0 + g1 * n1) * iz;
    }
    return true;
  }

  // H (6x6, lower triangle) += c J^T M J with M = sum_a lam_a d2u_a/dXc2 and J = dXc/dtheta
  // = [-[Y]x, I]; du is the point's du_a/dXc from project().
  template <typename HM>
  PFP_HD void add_curvature(const T* Y, const T* Xc, const T (*du)[3], const T* lam, T c,
                            HM&& H) const {
    if (!distorted()) {
      Pinhole<T>{K}.add_curvature(Y, Xc, du, lam, c, H);
      return;
    }
    const T iz = T(1) / Xc[2];
    T M[9];
    curvature(Xc, iz, lam, M);
    // J = [Jw, I] with Jw's columns e_k x Y: J^T M J = [Jw^T P, P^T; P, M] with P = M Jw.
    const T Jw[3][3] = {{T(0), -Y[2], Y[1]}, {Y[2], T(0), -Y[0]}, {-Y[1], Y[0], T(0)}};  // columns
    T P[3][3];  // P[k] = M Jw[k]
    for (int k = 0; k < 3; ++k) matvec3(M, Jw[k], P[k]);
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j <= i; ++j) {
        H[i * 6 + j] += c * dot3(Jw[i], P[j]);
        H[(3 + i) * 6 + 3 + j] += c * M[3 * i + j];
      }
      for (int j = 0; j < 3; ++j) H[(3 + i) * 6 + j] += c * P[j][i];
    }
  }

  // The projection's terms of a point's backward (common/pnp_point.h): with d the motion of
  // Xc along the adjoint direction, Jv_a = du_a . d, and alpha_a, beta_a the loss's sensitivity
  // to u_a and Jv_a,
  //   gXc += sum_a alpha_a du_a + beta_a (d2u_a/dXc2) d
  //   gK[3a + k] = alpha_a du_a/dK_ak + beta_a dJv_a/dK_ak            (rows 0-1)
  //   gD[k] = sum_a alpha_a du_a/dD_k + beta_a dJv_a/dD_k               (distorted only)
  PFP_HD void backward_terms(const T* Xc, T iz, const T (*du)[3], const T* d, const T* Jv,
                             const T* alpha, const T* beta, T* gXc, T* gK, T* gD) const {
    if (!distorted()) {
      Pinhole<T>{K}.backward_terms(Xc, iz, du, d, Jv, alpha, beta, gXc, gK, gD);
      return;
    }
    const T dz = d[2] * iz;
    const T n[2] = {Xc[0] * iz, Xc[1] * iz};
    const T dn[2] = {d[0] * iz - n[0] * dz, d[1] * iz - n[1] * dz};  // dn along d
    LensEval<T> s;
    lens_eval(model, D, n[0], n[1], true, s);
    T Dd_dn[2], D2d_dn[2][2];  // Dd dn and (D2d_m dn)_i
    for (int m = 0; m < 2; ++m) {
      Dd_dn[m] = s.Dd[m][0] * dn[0] + s.Dd[m][1] * dn[1];
      for (int i = 0; i < 2; ++i) D2d_dn[m][i] = s.D2d[m][i][0] * dn[0] + s.D2d[m][i][1] * dn[1];
    }
    T mu_a[2] = {T(0), T(0)}, mu_b[2] = {T(0), T(0)};  // sum_a alpha_a k_am, sum_a beta_a k_am
    for (int a = 0; a < 2; ++a) {
      const T* k = K + 3 * a;
      for (int m = 0; m < 2; ++m) {
        gK[3 * a + m] = alpha[a] * s.d[m] + beta[a] * Dd_dn[m];
        mu_a[m] += alpha[a] * k[m];
        mu_b[m] += beta[a] * k[m];
      }
      gK[3 * a + 2] = alpha[a];
      for (int k3 = 0; k3 < 3; ++k3) gXc[k3] += alpha[a] * du[a][k3];
    }
    // sum_a beta_a d2u_a/dXc2 d = Nx^T (sum_m mu_b,m D2d_m dn) + sum_j g_j d2n_j/dXc2 d, with
    // g_j = sum_m mu_b,m Dd_mj and d2n_j d = (-(e_j d_z + e_z d_j) + 2 n_j d_z e_z) / z^2.
    T h[2], g[2];
    for (int i = 0; i < 2; ++i) {
      h[i] = mu_b[0] * D2d_dn[0][i] + mu_b[1] * D2d_dn[1][i];
      g[i] = mu_b[0] * s.Dd[0][i] + mu_b[1] * s.Dd[1][i];
    }
    gXc[0] += (h[0] - g[0] * dz) * iz;
    gXc[1] += (h[1] - g[1] * dz) * iz;
    gXc[2] += (-(h[0] * n[0] + h[1] * n[1]) - g[0] * (d[0] * iz - T(2) * n[0] * dz) -
               g[1] * (d[1] * iz - T(2) * n[1] * dz)) * iz;
    // Coefficients: du_a/dD_k = k_a0 dxd/dD_k + k_a1 dyd/dD_k, and dJv_a/dD_k its derivative
    // along dn (a Jet in that one direction).
    using J = Jet<T, 1>;
    J jx[kMaxDistortion], jy[kMaxDistortion];
    J x = J::variable(n[0], 0), y = J::variable(n[1], 0);
    x.d[0] = dn[0];
    y.d[0] = dn[1];
    distort_coeff_jacobian(model, D, x, y, jx, jy);
    for (int k = 0; k < kMaxDistortion; ++k)
      gD[k] = mu_a[0] * jx[k].v + mu_a[1] * jy[k].v + mu_b[0] * jx[k].d[0] + mu_b[1] * jy[k].d[0];
  }

  PFP_HD bool prepare_rays(RayMap<T>& map) const {
    const T K3[9] = {K[0], K[1], K[2], K[3], K[4], K[5], T(0), T(0), T(1)};
    map.D = D;
    map.model = model;
    return inv3(K3, map.Kinv);
  }

  // The ray through pixel x: K^-1 x, undistorted (the distorted coordinates themselves where
  // the lens model cannot be inverted there; the ray only seeds the start).
  PFP_HD static void ray(const RayMap<T>& map, const T* x, T* m) {
    Pinhole<T>::ray(map.Kinv, x, m);
    if (map.model == kModelPinhole) return;
    const T nd[2] = {m[0] / m[2], m[1] / m[2]};
    T n[2];
    if (undistort(map.model, map.D, nd, n)) {
      m[0] = n[0];
      m[1] = n[1];
      m[2] = T(1);
    }
  }

 private:
  // M = sum_a lam_a d2u_a/dXc2 for a distorted camera: u_a = k_a . (d(n), 1) with n = Xc_xy/z,
  // so M = Nx^T (sum_m mu_m D2d_m) Nx + sum_j g_j d2n_j/dXc2 (mu = K2^T lam, g = Dd^T mu).
  PFP_HD void curvature(const T* Xc, T iz, const T* lam, T* M) const {
    const T n0 = Xc[0] * iz, n1 = Xc[1] * iz;
    LensEval<T> s;
    lens_eval(model, D, n0, n1, true, s);
    const T mu[2] = {lam[0] * K[0] + lam[1] * K[3], lam[0] * K[1] + lam[1] * K[4]};
    T Hn[2][2], g[2];
    for (int i = 0; i < 2; ++i) {
      g[i] = mu[0] * s.Dd[0][i] + mu[1] * s.Dd[1][i];
      for (int j = 0; j < 2; ++j) Hn[i][j] = mu[0] * s.D2d[0][i][j] + mu[1] * s.D2d[1][i][j];
    }
    // Nx^T Hn Nx with Nx = [I, -n] / z.
    const T iz2 = iz * iz;
    const T h0 = Hn[0][0] * n0 + Hn[0][1] * n1, h1 = Hn[1][0] * n0 + Hn[1][1] * n1;
    M[0] = Hn[0][0] * iz2;
    M[1] = M[3] = Hn[0][1] * iz2;
    M[4] = Hn[1][1] * iz2;
    M[2] = M[6] = -h0 * iz2;
    M[5] = M[7] = -h1 * iz2;
    M[8] = (h0 * n0 + h1 * n1) * iz2;
    // sum_j g_j (-(e_j e_z^T + e_z e_j^T) + 2 n_j e_z e_z^T) / z^2
    for (int j = 0; j < 2; ++j) {
      M[3 * j + 2] -= g[j] * iz2;
      M[6 + j] -= g[j] * iz2;
    }
    M[8] += T(2) * (g[0] * n0 + g[1] * n1) * iz2;
  }
};

}  // namespace pfp
