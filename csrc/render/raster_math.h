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

// Blinn-Phong shading of one surface point.
//   albedo (3), n unit normal, view unit vector from the point to the camera,
//   lights (n_lights x 6): direction towards the light (unit) and RGB intensity,
//   material (5): ambient RGB, specular strength, shininess.
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
    float h[3] = {L[0] + view[0], L[1] + view[1], L[2] + view[2]};
    normalize3(h);
    const float ndh = tmax(n[0] * h[0] + n[1] * h[1] + n[2] * h[2], 0.0f);
    const float s = material[3] * std::pow(ndh, material[4]);
    for (int k = 0; k < 3; ++k) {
      diffuse[k] += ndl * L[3 + k];
      spec[k] += s * L[3 + k];
    }
  }
  for (int k = 0; k < 3; ++k) out[k] = tmin(tmax(albedo[k] * diffuse[k] + spec[k], 0.0f), 1.0f);
}

}  // namespace raster
}  // namespace pfp
