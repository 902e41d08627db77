// Lens distortion of normalised camera coordinates n = (x, y) = (Xc_x / z, Xc_y / z), in
// OpenCV's conventions. Each model's radial factor is one function template of its scalar
// (double, or a Jet for its derivatives: common/jet.h); the decentering polynomials' few
// derivatives are written out (lens_eval), and the coefficients' Jacobian too.
//
//   kModelRadTan   coefficients k1 k2 p1 p2 k3 k4 k5 k6 s1 s2 s3 s4 (OpenCV's order; shorter
//                  vectors are padded with zeros, which is the same model):
//                  radial = (1 + k1 r2 + k2 r2^2 + k3 r2^3) / (1 + k4 r2 + k5 r2^2 + k6 r2^3)
//                  xd = x radial + 2 p1 x y + p2 (r2 + 2 x^2) + s1 r2 + s2 r2^2
//                  yd = y radial + p1 (r2 + 2 y^2) + 2 p2 x y + s3 r2 + s4 r2^2
//   kModelFisheye  k1..k4 (cv2.fisheye): theta = atan r, (xd, yd) = f(theta) n / r with
//                  f = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)
#pragma once
#include "common/jet.h"

namespace pfp {

enum CameraModel : int32_t { kModelPinhole = 0, kModelRadTan = 1, kModelFisheye = 2 };
constexpr int kMaxDistortion = 12;  // coefficients per camera, zero-padded

// atan(r) / r as a function of r2 = r^2, smooth through r = 0: below r2 = 0.01 its series
// (converged to double precision: the terms fall by 100x each), above it the closed form,
// whose derivatives no longer cancel badly there.
template <typename S>
PFP_HD S atan_ratio(const S& r2) {
  if (value_of(r2) < 0.01) {
    S f = S(1.0 / 21);  // sum_k (-1)^k r2^k / (2k + 1), k <= 10, by Horner
    for (int k = 9; k >= 0; --k) f = ((k % 2) ? -1.0 : 1.0) / (2 * k + 1) + r2 * f;
    return f;
  }
  using std::atan;
  using std::sqrt;
  const S r = sqrt(r2);
  return atan(r) / r;
}

// theta^2 and the fisheye scale f(theta) / r of a point with squared radius r2.
template <typename S, typename C>
PFP_HD void fisheye_scale(const C* D, const S& r2, S& t2, S& ratio, S& scale) {
  ratio = atan_ratio(r2);  // theta / r
  t2 = ratio * ratio * r2;
  scale = ratio * (1.0 + t2 * (D[0] + t2 * (D[1] + t2 * (D[2] + t2 * D[3]))));
}

// d(n) = rho(r2) n + tau(n): the radial factor rho of each model (a function of r2 alone, so
// a one-direction Jet gives its derivatives cheaply) and the decentering terms tau, OpenCV's
// tangential and thin-prism polynomials (zero for the fisheye).
template <typename S, typename C>
PFP_HD S radial_factor(int32_t model, const C* D, const S& r2) {
  if (model == kModelFisheye) {
    S t2, ratio, scale;
    fisheye_scale(D, r2, t2, ratio, scale);
    return scale;
  }
  const S num = 1.0 + r2 * (D[0] + r2 * (D[1] + r2 * D[4]));
  if (exactly_zero(D[5]) && exactly_zero(D[6]) && exactly_zero(D[7]))
    return num;  // 4 or 5 terms: no division
  return num / (1.0 + r2 * (D[5] + r2 * (D[6] + r2 * D[7])));
}

template <typename S, typename C>
PFP_HD void distort(int32_t model, const C* D, const S& x, const S& y, S& xd, S& yd) {
  const S r2 = x * x + y * y;
  const S rho = radial_factor(model, D, r2);
  xd = x * rho;
  yd = y * rho;
  if (model == kModelFisheye) return;
  const S r4 = r2 * r2, xy = x * y;
  xd = xd + (2.0 * D[2]) * xy + D[3] * (r2 + 2.0 * x * x) + D[8] * r2 + D[9] * r4;
  yd = yd + D[2] * (r2 + 2.0 * y * y) + (2.0 * D[3]) * xy + D[10] * r2 + D[11] * r4;
}

// The lens at n up to second order: d (2), Dd[m][i] = dd_m/dn_i and, when asked,
// D2d[m][i][j] = d2 d_m / dn_i dn_j, from rho's r2-derivatives (dr2/dn_i = 2 n_i) and the
// decentering polynomials' closed forms.
template <typename T>
struct LensEval {
  T d[2], Dd[2][2], D2d[2][2][2];
};

// A constant c (a double, or a Jet of S's innermost levels) as a value of the scalar S.
template <typename S>
struct Lift {
  template <typename C>
  PFP_HD static S from(const C& c) {
    return S(c);
  }
};
template <typename S, int N>
struct Lift<Jet<S, N>> {
  template <typename C>
  PFP_HD static Jet<S, N> from(const C& c) {
    if constexpr (std::is_same<C, double>::value || std::is_same<C, Jet<S, N>>::value)
      return Jet<S, N>(c);
    else
      return Jet<S, N>(Lift<S>::from(c));
  }
};

// radial_factor of the r2 of scalar S. Coefficients that are themselves Jets (the Hessian's
// derivatives in them, common/pnp_hessian.h) are lifted to S first, so that its arithmetic
// meets one scalar type; plain coefficients are used as they are.
template <typename S, typename C>
PFP_HD S radial_factor_of(int32_t model, const C* D, const S& r2) {
  if constexpr (std::is_same<C, double>::value) {
    return radial_factor(model, D, r2);
  } else {
    S Dl[kMaxDistortion];
    for (int k = 0; k < kMaxDistortion; ++k) Dl[k] = Lift<S>::from(D[k]);
    return radial_factor(model, Dl, r2);
  }
}

template <typename T, typename C>
PFP_HD void lens_eval(int32_t model, const C* D, T x, T y, bool second, LensEval<T>& s) {
  const T n[2] = {x, y}, r2 = x * x + y * y;
  T rho, rho1, rho2 = T(0);
  if (second) {
    using J1 = Jet<T, 1>;
    using J2 = Jet<J1, 1>;
    const J2 f = radial_factor_of(model, D, J2::variable(J1::variable(r2, 0), 0));
    rho = f.v.v;
    rho1 = f.v.d[0];
    rho2 = f.d[0].d[0];
  } else {
    using J1 = Jet<T, 1>;
    const J1 f = radial_factor_of(model, D, J1::variable(r2, 0));
    rho = f.v;
    rho1 = f.d[0];
  }
  for (int m = 0; m < 2; ++m) {
    s.d[m] = n[m] * rho;
    for (int i = 0; i < 2; ++i) {
      s.Dd[m][i] = (m == i ? rho : T(0)) + T(2) * n[m] * n[i] * rho1;
      if (second)
        for (int j = 0; j < 2; ++j)
          s.D2d[m][i][j] = T(2) * rho1 * ((m == i ? n[j] : T(0)) + (m == j ? n[i] : T(0)) +
                                          (i == j ? n[m] : T(0))) +
                           T(4) * n[m] * n[i] * n[j] * rho2;
    }
  }
  if (model == kModelFisheye) return;
  // tau_x = 2 p1 x y + p2 (r2 + 2 x^2) + qx(r2), tau_y = p1 (r2 + 2 y^2) + 2 p2 x y + qy(r2)
  // with the thin-prism qx = s1 r2 + s2 r2^2, qy = s3 r2 + s4 r2^2.
  const T p1 = D[2], p2 = D[3];
  const T q1[2] = {D[8] + T(2) * D[9] * r2, D[10] + T(2) * D[11] * r2};  // q'
  const T q2[2] = {T(2) * D[9], T(2) * D[11]};                            // q''
  const T r4 = r2 * r2;
  s.d[0] += T(2) * p1 * x * y + p2 * (r2 + T(2) * x * x) + D[8] * r2 + D[9] * r4;
  s.d[1] += p1 * (r2 + T(2) * y * y) + T(2) * p2 * x * y + D[10] * r2 + D[11] * r4;
  s.Dd[0][0] += T(2) * p1 * y + T(6) * p2 * x + T(2) * x * q1[0];
  s.Dd[0][1] += T(2) * p1 * x + T(2) * p2 * y + T(2) * y * q1[0];
  s.Dd[1][0] += T(2) * p1 * x + T(2) * p2 * y + T(2) * x * q1[1];
  s.Dd[1][1] += T(6) * p1 * y + T(2) * p2 * x + T(2) * y * q1[1];
  if (!second) return;
  const T c[2][3] = {{T(6) * p2, T(2) * p1, T(2) * p2}, {T(2) * p1, T(2) * p2, T(6) * p1}};
  for (int m = 0; m < 2; ++m) {  // (xx, xy, yy) of the tangential part, then the prism's
    s.D2d[m][0][0] += c[m][0] + T(2) * q1[m] + T(4) * x * x * q2[m];
    s.D2d[m][0][1] += c[m][1] + T(4) * x * y * q2[m];
    s.D2d[m][1][0] += c[m][1] + T(4) * x * y * q2[m];
    s.D2d[m][1][1] += c[m][2] + T(2) * q1[m] + T(4) * y * y * q2[m];
  }
}

// d(xd, yd) / d(coefficient k), k = 0..kMaxDistortion-1 (zero beyond the model's own).
template <typename S, typename C>
PFP_HD void distort_coeff_jacobian(int32_t model, const C* D, const S& x, const S& y, S* jx,
                                   S* jy) {
  for (int k = 0; k < kMaxDistortion; ++k) jx[k] = jy[k] = S(0.0);
  const S r2 = x * x + y * y;
  if (model == kModelFisheye) {
    S t2, ratio, scale;
    fisheye_scale(D, r2, t2, ratio, scale);
    S p = ratio * t2;  // d scale / d k_(i+1) = ratio theta^(2i+2)
    for (int k = 0; k < 4; ++k) {
      jx[k] = p * x;
      jy[k] = p * y;
      p = p * t2;
    }
    return;
  }
  const S r4 = r2 * r2, r6 = r4 * r2, xy = x * y;
  const S num = 1.0 + r2 * (D[0] + r2 * (D[1] + r2 * D[4]));
  const S iden = 1.0 / (1.0 + r2 * (D[5] + r2 * (D[6] + r2 * D[7])));
  const S radial = num * iden;
  const S pw[3] = {r2, r4, r6};
  const int knum[3] = {0, 1, 4}, kden[3] = {5, 6, 7};
  for (int i = 0; i < 3; ++i) {
    const S a = pw[i] * iden, b = -(radial * a);
    jx[knum[i]] = x * a;
    jy[knum[i]] = y * a;
    jx[kden[i]] = x * b;
    jy[kden[i]] = y * b;
  }
  jx[2] = 2.0 * xy;
  jy[2] = r2 + 2.0 * y * y;
  jx[3] = r2 + 2.0 * x * x;
  jy[3] = 2.0 * xy;
  jx[8] = r2;
  jx[9] = r4;
  jy[10] = r2;
  jy[11] = r4;
}

// The undistorted point n of distorted normalised coordinates nd: Newton on d(n) = nd from
// n = nd; a step that does not reduce the residual is halved (from the point it left). False
// when it does not converge (a point outside the region where the model is invertible).
// The rays only seed the start, so 1e-12 (relative) is converged.
template <typename C>
PFP_HD bool undistort(int32_t model, const C* D, const double* nd, double* n) {
  const double tol = 1e-24 * (1.0 + nd[0] * nd[0] + nd[1] * nd[1]);
  double from[2] = {nd[0], nd[1]}, step[2] = {0.0, 0.0}, r_from = 0.0, lam = 1.0;
  n[0] = nd[0];
  n[1] = nd[1];
  for (int it = 0; it < 40; ++it) {
    LensEval<double> s;
    lens_eval(model, D, n[0], n[1], false, s);
    const double e0 = s.d[0] - nd[0], e1 = s.d[1] - nd[1], r = e0 * e0 + e1 * e1;
    if (r <= tol) return true;
    if (it > 0 && !(r < r_from)) {  // no progress (or not finite): half the step
      lam *= 0.5;
      if (lam < 1e-4) return r_from <= 1e4 * tol;  // at the floor of the arithmetic
      n[0] = from[0] - lam * step[0];
      n[1] = from[1] - lam * step[1];
      continue;
    }
    const double det = s.Dd[0][0] * s.Dd[1][1] - s.Dd[0][1] * s.Dd[1][0];
    if (!(tabs(det) > 1e-300) || !is_finite(det)) return false;
    step[0] = (s.Dd[1][1] * e0 - s.Dd[0][1] * e1) / det;
    step[1] = (s.Dd[0][0] * e1 - s.Dd[1][0] * e0) / det;
    from[0] = n[0];
    from[1] = n[1];
    r_from = r;
    lam = 1.0;
    n[0] -= step[0];
    n[1] -= step[1];
  }
  return false;
}

}  // namespace pfp
