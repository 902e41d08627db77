// Forward-mode derivatives for the lens models: a value with its derivatives along N
// directions. Nesting gives second derivatives (Jet<Jet<double, 2>, 2> carries a 2x2
// Hessian), so each distortion model is written once, as a function template of its scalar,
// and its Jacobians and curvature follow exactly (common/distortion.h).
#pragma once
#include <type_traits>

#include "common/hd.h"

namespace pfp {
// Its functions live in their own namespace, found by argument-dependent lookup, so that
// pfp's unqualified sqrt(double) calls keep meaning the standard ones.
namespace jet {

template <typename S, int N>
struct Jet {
  S v;     // value
  S d[N];  // derivatives along the N directions

  Jet() = default;
  PFP_HD Jet(double c) : v(c) {  // NOLINT: constants enter expressions implicitly
    for (int k = 0; k < N; ++k) d[k] = S(0.0);
  }
  // A constant of a nested Jet's scalar (itself a Jet): lifts it one level, with no
  // derivative along this level's directions.
  template <typename U = S, std::enable_if_t<!std::is_same<U, double>::value, int> = 0>
  PFP_HD explicit Jet(const S& c) : v(c) {
    for (int k = 0; k < N; ++k) d[k] = S(0.0);
  }
  PFP_HD Jet& operator+=(const Jet& o) {
    v = v + o.v;
    for (int k = 0; k < N; ++k) d[k] = d[k] + o.d[k];
    return *this;
  }
  PFP_HD Jet& operator-=(const Jet& o) {
    v = v - o.v;
    for (int k = 0; k < N; ++k) d[k] = d[k] - o.d[k];
    return *this;
  }
  // The variable k of N (derivative 1 along direction k, 0 along the others).
  PFP_HD static Jet variable(const S& value, int k) {
    Jet j(0.0);
    j.v = value;
    j.d[k] = S(1.0);
    return j;
  }
};

template <typename S, int N>
PFP_HD Jet<S, N> operator+(const Jet<S, N>& a, const Jet<S, N>& b) {
  Jet<S, N> r;
  r.v = a.v + b.v;
  for (int k = 0; k < N; ++k) r.d[k] = a.d[k] + b.d[k];
  return r;
}
template <typename S, int N>
PFP_HD Jet<S, N> operator-(const Jet<S, N>& a, const Jet<S, N>& b) {
  Jet<S, N> r;
  r.v = a.v - b.v;
  for (int k = 0; k < N; ++k) r.d[k] = a.d[k] - b.d[k];
  return r;
}
template <typename S, int N>
PFP_HD Jet<S, N> operator-(const Jet<S, N>& a) {
  Jet<S, N> r;
  r.v = -a.v;
  for (int k = 0; k < N; ++k) r.d[k] = -a.d[k];
  return r;
}
template <typename S, int N>
PFP_HD Jet<S, N> operator*(const Jet<S, N>& a, const Jet<S, N>& b) {
  Jet<S, N> r;
  r.v = a.v * b.v;
  for (int k = 0; k < N; ++k) r.d[k] = a.d[k] * b.v + a.v * b.d[k];
  return r;
}
template <typename S, int N>
PFP_HD Jet<S, N> operator*(double c, const Jet<S, N>& a) {
  Jet<S, N> r;
  r.v = c * a.v;
  for (int k = 0; k < N; ++k) r.d[k] = c * a.d[k];
  return r;
}
template <typename S, int N>
PFP_HD Jet<S, N> operator*(const Jet<S, N>& a, double c) {
  return c * a;
}
template <typename S, int N>
PFP_HD Jet<S, N> operator/(const Jet<S, N>& a, const Jet<S, N>& b) {
  Jet<S, N> r;
  const S ib = S(1.0) / b.v;
  r.v = a.v * ib;
  for (int k = 0; k < N; ++k) r.d[k] = (a.d[k] - r.v * b.d[k]) * ib;
  return r;
}
template <typename S, int N>
PFP_HD Jet<S, N> operator/(double c, const Jet<S, N>& b) {
  return Jet<S, N>(c) / b;
}
template <typename S, int N>
PFP_HD Jet<S, N> operator+(const Jet<S, N>& a, double c) {
  Jet<S, N> r = a;
  r.v = a.v + c;
  return r;
}
template <typename S, int N>
PFP_HD Jet<S, N> operator+(double c, const Jet<S, N>& a) {
  return a + c;
}

// A function of one variable from its value f and derivative df at x.v (chain rule).
template <typename S, int N>
PFP_HD Jet<S, N> chain(const Jet<S, N>& x, const S& f, const S& df) {
  Jet<S, N> r;
  r.v = f;
  for (int k = 0; k < N; ++k) r.d[k] = df * x.d[k];
  return r;
}

template <typename S, int N>
PFP_HD Jet<S, N> sqrt(const Jet<S, N>& x) {
  using std::sqrt;
  const S s = sqrt(x.v);
  return chain(x, s, S(0.5) / s);
}

template <typename S, int N>
PFP_HD Jet<S, N> log1p(const Jet<S, N>& x) {
  using std::log1p;
  return chain(x, log1p(x.v), S(1.0) / (S(1.0) + x.v));
}

// Comparisons see the values (the branches of a function are taken where its value is).
template <typename S, int N>
PFP_HD bool operator<(const Jet<S, N>& a, const Jet<S, N>& b) {
  return a.v < b.v;
}
template <typename S, int N>
PFP_HD bool operator>(const Jet<S, N>& a, const Jet<S, N>& b) {
  return a.v > b.v;
}
template <typename S, int N>
PFP_HD bool operator<=(const Jet<S, N>& a, const Jet<S, N>& b) {
  return a.v <= b.v;
}

template <typename S, int N>
PFP_HD Jet<S, N> atan(const Jet<S, N>& x) {
  using std::atan;
  return chain(x, atan(x.v), S(1.0) / (S(1.0) + x.v * x.v));
}

}  // namespace jet

using jet::Jet;

// Whether a scalar is exactly zero with all its derivatives: where a shortcut may drop a
// term of value zero without changing any derivative.
PFP_HD bool exactly_zero(double x) { return x == 0.0; }
template <typename S, int N>
PFP_HD bool exactly_zero(const Jet<S, N>& x) {
  bool z = exactly_zero(x.v);
  for (int k = 0; k < N; ++k) z = z && exactly_zero(x.d[k]);
  return z;
}

// The double value of a scalar, however deeply nested.
PFP_HD double value_of(double x) { return x; }
template <typename S, int N>
PFP_HD double value_of(const Jet<S, N>& x) {
  return value_of(x.v);
}

}  // namespace pfp
