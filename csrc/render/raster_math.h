// Per-vertex, per-triangle and per-pixel math of the mesh rasterizer (render_mesh).
// Device independent and torch-free: plain pointers, float arithmetic.
//
// Conventions: camera frame x_cam (OpenCV: +z forward, +y down); pixel (row i, col j) has
// its centre at image coordinates (x = j, y = i); K's last row is [0, 0, 1].
#pragma once
#include "common/hd.h"

namespace pfp {
namespace raster {

// Screen position of a camera-frame point: (x, y) pixels, z depth.
PFP_HD void project(const float* K, const float* p, float* s) {
  const float iz = 1.0f / p[2];
  s[0] = (K[0] * p[0] + K[1] * p[1] + K[2] * p[2]) * iz;
  s[1] = (K[3] * p[0] + K[4] * p[1] + K[5] * p[2]) * iz;
  s[2] = p[2];
}

// Unnormalised (area-weighted) normal of triangle (a, b, c): (b - a) x (c - a).
PFP_HD void triangle_normal(const float* a, const float* b, const float* c, float* n) {
  const float e1[3] = {b[0] - a[0], b[1] - a[1], b[2] - a[2]};
  const float e2[3] = {c[0] - a[0], c[1] - a[1], c[2] - a[2]};
  n[0] = e1[1] * e2[2] - e1[2] * e2[1];
  n[1] = e1[2] * e2[0] - e1[0] * e2[2];
  n[2] = e1[0] * e2[1] - e1[1] * e2[0];
}

PFP_HD void normalize3(float* v) {
  const float len = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
  const float inv = len > 1e-20f ? 1.0f / len : 0.0f;
  v[0] *= inv;
  v[1] *= inv;
  v[2] *= inv;
}

// Twice the signed area of (a, b, p) in screen space: > 0 when p is left of a->b.
PFP_HD float edge(float ax, float ay, float bx, float by, float px, float py) {
  return (bx - ax) * (py - ay) - (by - ay) * (px - ax);
}

// Barycentric coordinates as affine functions of the pixel position: w_i(x, y) =
// A[i] x + B[i] y + C[i] for triangle (s0, s1, s2) with signed doubled area `area`
// (w_0 + w_1 + w_2 = 1; all >= 0 inside, for either winding).
PFP_HD void barycentric_planes(const float* s0, const float* s1, const float* s2, float area, float* A,
                               float* B, float* C) {
  const float inv = 1.0f / area;
  // w_0 = edge(s1, s2, p) / area, w_1 = edge(s2, s0, p) / area.
  A[0] = -(s2[1] - s1[1]) * inv;
  B[0] = (s2[0] - s1[0]) * inv;
  C[0] = ((s2[1] - s1[1]) * s1[0] - (s2[0] - s1[0]) * s1[1]) * inv;
  A[1] = -(s0[1] - s2[1]) * inv;
  B[1] = (s0[0] - s2[0]) * inv;
  C[1] = ((s0[1] - s2[1]) * s2[0] - (s0[0] - s2[0]) * s2[1]) * inv;
  A[2] = -A[0] - A[1];
  B[2] = -B[0] - B[1];
  C[2] = 1.0f - C[0] - C[1];
}

// The range [*lo, *hi] of x on row y where all three barycentric planes are >= 0, for x
// within [*lo, *hi] on entry; returns false when the row misses the triangle. The
// caller still tests each pixel: this only bounds the scan.
PFP_HD bool row_span(const float* A, const float* B, const float* C, float y, float* lo, float* hi) {
  for (int i = 0; i < 3; ++i) {
    const float k = B[i] * y + C[i];
    if (A[i] > 1e-12f) {
      *lo = tmax(*lo, -k / A[i]);
    } else if (A[i] < -1e-12f) {
      *hi = tmin(*hi, -k / A[i]);
    } else if (k < 0.0f) {
      return false;
    }
  }
  return *lo <= *hi;
}

// Bilinear lookup of an (H, W, 3) texture at normalised coordinates (tx, ty) in [0, 1]
// (texel centres at (k + 1/2) / size), clamped to the edge.
PFP_HD void sample_texture(const float* tex, int H, int W, float tx, float ty, float* rgb) {
  float x = tx * W - 0.5f, y = ty * H - 0.5f;
  x = tmin(tmax(x, 0.0f), float(W - 1));
  y = tmin(tmax(y, 0.0f), float(H - 1));
  const int x0 = int(x), y0 = int(y);
  const int x1 = x0 + 1 < W ? x0 + 1 : x0, y1 = y0 + 1 < H ? y0 + 1 : y0;
  const float fx = x - x0, fy = y - y0;
  const float w00 = (1 - fx) * (1 - fy), w01 = fx * (1 - fy), w10 = (1 - fx) * fy, w11 = fx * fy;
  const float* t00 = tex + 3 * (int64_t(y0) * W + x0);
  const float* t01 = tex + 3 * (int64_t(y0) * W + x1);
  const float* t10 = tex + 3 * (int64_t(y1) * W + x0);
  const float* t11 = tex + 3 * (int64_t(y1) * W + x1);
  for (int k = 0; k < 3; ++k) rgb[k] = w00 * t00[k] + w01 * t01[k] + w10 * t10[k] + w11 * t11[k];
}

// x^n for x in [0, 1] by Schlick's rational approximation x / (n - n x + x): the same
// highlight shape as std::pow at a fraction of its cost (pow dominated the shading pass).
PFP_HD float specular_power(float x, float n) { return x / (n - n * x + x); }

// Blinn-Phong shading of one surface point.
//   albedo (3), n unit normal, view unit vector from the point to the camera,
//   lights (n_lights x 6): direction towards the light (unit) and RGB intensity,
//   material (5): ambient RGB, specular strength, shininess (exponent, >= 1).
// The normal is turned towards the camera first, so the back of an open mesh is lit
// like its front.
PFP_HD void shade(const float* albedo, const float* n_in, const float* view, const float* lights,
                  int n_lights, const float* material, float* out) {
  float n[3] = {n_in[0], n_in[1], n_in[2]};
  if (n[0] * view[0] + n[1] * view[1] + n[2] * view[2] < 0.0f) {
    n[0] = -n[0];
    n[1] = -n[1];
    n[2] = -n[2];
  }
  float diffuse[3] = {material[0], material[1], material[2]};
  float spec[3] = {0.0f, 0.0f, 0.0f};
  for (int l = 0; l < n_lights; ++l) {
    const float* L = lights + 6 * l;
    const float ndl = n[0] * L[0] + n[1] * L[1] + n[2] * L[2];
    if (ndl <= 0.0f) continue;
    for (int k = 0; k < 3; ++k) diffuse[k] += ndl * L[3 + k];
    if (material[3] <= 0.0f) continue;
    float h[3] = {L[0] + view[0], L[1] + view[1], L[2] + view[2]};
    normalize3(h);
    const float ndh = tmax(n[0] * h[0] + n[1] * h[1] + n[2] * h[2], 0.0f);
    const float s = material[3] * specular_power(ndh, material[4]);
    for (int k = 0; k < 3; ++k) spec[k] += s * L[3 + k];
  }
  for (int k = 0; k < 3; ++k) out[k] = tmin(tmax(albedo[k] * diffuse[k] + spec[k], 0.0f), 1.0f);
}

}  // namespace raster
}  // namespace pfp
