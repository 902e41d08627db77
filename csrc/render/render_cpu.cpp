// CPU kernel of render_mesh: z-buffered rasterisation of a textured triangle mesh with
// perspective-correct interpolation and per-pixel Blinn-Phong shading. No autograd: it
// renders training images.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <limits>
#include <vector>

#include "render/raster_math.h"

namespace {

constexpr float kNear = 1e-3f;  // triangles with a vertex closer than this are skipped

void check_inputs(const at::Tensor& vertices, const at::Tensor& faces, const at::Tensor& texcoords,
                  const at::Tensor& texture, const at::Tensor& K, const at::Tensor& background,
                  const at::Tensor& lights, const at::Tensor& material) {
  TORCH_CHECK(vertices.dim() == 2 && vertices.size(1) == 3,
              "render_mesh: vertices must have shape (V, 3), got ", vertices.sizes());
  TORCH_CHECK(faces.dim() == 2 && faces.size(1) == 3, "render_mesh: faces must have shape (F, 3), got ",
              faces.sizes());
  TORCH_CHECK(faces.scalar_type() == at::kLong, "render_mesh: faces must be int64, got ",
              faces.scalar_type());
  TORCH_CHECK(texcoords.dim() == 2 && texcoords.size(0) == vertices.size(0) && texcoords.size(1) == 2,
              "render_mesh: texcoords must have shape (V, 2) with V = ", vertices.size(0), ", got ",
              texcoords.sizes());
  TORCH_CHECK(texture.dim() == 3 && texture.size(2) == 3 && texture.size(0) > 0 && texture.size(1) > 0,
              "render_mesh: texture must have shape (Ht, Wt, 3), got ", texture.sizes());
  TORCH_CHECK(K.dim() == 2 && K.size(0) == 3 && K.size(1) == 3, "render_mesh: K must have shape (3, 3), got ",
              K.sizes());
  TORCH_CHECK(background.dim() == 3 && background.size(2) == 3,
              "render_mesh: background must have shape (H, W, 3), got ", background.sizes());
  TORCH_CHECK(lights.dim() == 2 && lights.size(1) == 6, "render_mesh: lights must have shape (L, 6), got ",
              lights.sizes());
  TORCH_CHECK(material.dim() == 1 && material.size(0) == 5, "render_mesh: material must have shape (5,), got ",
              material.sizes());
  for (const auto* t : {&vertices, &texcoords, &texture, &K, &background, &lights, &material})
    TORCH_CHECK(t->scalar_type() == at::kFloat, "render_mesh: floating inputs must be float32, got ",
                t->scalar_type());
  if (faces.numel() > 0) {
    TORCH_CHECK(faces.min().item<int64_t>() >= 0 && faces.max().item<int64_t>() < vertices.size(0),
                "render_mesh: faces index vertices out of range [0, ", vertices.size(0), ")");
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> render_mesh_cpu(
    const at::Tensor& vertices_in, const at::Tensor& faces_in, const at::Tensor& texcoords_in,
    const at::Tensor& texture_in, const at::Tensor& K_in, const at::Tensor& background_in,
    const at::Tensor& lights_in, const at::Tensor& material_in) {
  check_inputs(vertices_in, faces_in, texcoords_in, texture_in, K_in, background_in, lights_in,
               material_in);
  const auto vertices = vertices_in.contiguous();
  const auto faces = faces_in.contiguous();
  const auto texcoords = texcoords_in.contiguous();
  const auto texture = texture_in.contiguous();
  const auto K = K_in.contiguous();
  const auto lights = lights_in.contiguous().clone();
  const auto material = material_in.contiguous();
  const int64_t V = vertices.size(0), F = faces.size(0);
  const int64_t H = background_in.size(0), W = background_in.size(1);

  auto image = background_in.contiguous().clone();
  auto depth = at::full({H, W}, std::numeric_limits<float>::infinity(), image.options());
  auto triangle = at::full({H, W}, -1, image.options().dtype(at::kLong));
  if (H == 0 || W == 0 || F == 0) return {image, depth, triangle};

  const float* P = vertices.data_ptr<float>();
  const int64_t* tri = faces.data_ptr<int64_t>();
  const float* Kp = K.data_ptr<float>();
  float* Lp = lights.data_ptr<float>();
  const int n_lights = int(lights.size(0));
  for (int l = 0; l < n_lights; ++l) pfp::raster::normalize3(Lp + 6 * l);

  // Screen positions and area-weighted vertex normals.
  std::vector<float> screen(3 * V), normals(3 * V, 0.0f);
  for (int64_t v = 0; v < V; ++v) pfp::raster::project(Kp, P + 3 * v, &screen[3 * v]);
  for (int64_t f = 0; f < F; ++f) {
    const int64_t* t = tri + 3 * f;
    float n[3];
    pfp::raster::triangle_normal(P + 3 * t[0], P + 3 * t[1], P + 3 * t[2], n);
    for (int c = 0; c < 3; ++c)
      for (int k = 0; k < 3; ++k) normals[3 * t[c] + k] += n[k];
  }
  for (int64_t v = 0; v < V; ++v) pfp::raster::normalize3(&normals[3 * v]);

  // Pass 1 (visibility): per row band, z-buffer the triangles and keep the triangle id and
  // the perspective-correct barycentrics of the nearest surface at each pixel centre.
  float* zbuf = depth.data_ptr<float>();
  int64_t* tbuf = triangle.data_ptr<int64_t>();
  std::vector<float> bary(2 * H * W, 0.0f);
  const int64_t band = 16;
  at::parallel_for(0, (H + band - 1) / band, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t row0 = b * band, row1 = std::min(H, row0 + band);
      for (int64_t f = 0; f < F; ++f) {
        const int64_t* t = tri + 3 * f;
        const float* s0 = &screen[3 * t[0]];
        const float* s1 = &screen[3 * t[1]];
        const float* s2 = &screen[3 * t[2]];
        if (s0[2] <= kNear || s1[2] <= kNear || s2[2] <= kNear) continue;
        const float area = pfp::raster::edge(s0[0], s0[1], s1[0], s1[1], s2[0], s2[1]);
        if (!(std::abs(area) > 1e-12f)) continue;  // also drops NaN
        const float ymin = std::min({s0[1], s1[1], s2[1]}), ymax = std::max({s0[1], s1[1], s2[1]});
        const int64_t ya = std::max<int64_t>(row0, int64_t(std::ceil(ymin)));
        const int64_t yb = std::min<int64_t>(row1 - 1, int64_t(std::floor(ymax)));
        if (ya > yb) continue;
        const float xmin = std::min({s0[0], s1[0], s2[0]}), xmax = std::max({s0[0], s1[0], s2[0]});
        const int64_t xa = std::max<int64_t>(0, int64_t(std::ceil(xmin)));
        const int64_t xb = std::min<int64_t>(W - 1, int64_t(std::floor(xmax)));
        if (xa > xb) continue;
        float A[3], B[3], C[3];
        pfp::raster::barycentric_planes(s0, s1, s2, area, A, B, C);
        const float iz0 = 1.0f / s0[2], iz1 = 1.0f / s1[2], iz2 = 1.0f / s2[2];
        for (int64_t y = ya; y <= yb; ++y) {
          const float py = float(y);
          // Scan only the row's span (widened by a pixel against rounding); each pixel is
          // still tested, so coverage is decided by the barycentric signs alone.
          float lo = float(xa), hi = float(xb);
          if (!pfp::raster::row_span(A, B, C, py, &lo, &hi)) continue;
          const int64_t x0 = std::max<int64_t>(xa, int64_t(std::floor(lo)) - 1);
          const int64_t x1 = std::min<int64_t>(xb, int64_t(std::ceil(hi)) + 1);
          const float k0 = B[0] * py + C[0], k1 = B[1] * py + C[1];
          for (int64_t x = x0; x <= x1; ++x) {
            const float px = float(x);
            const float w0 = A[0] * px + k0;
            const float w1 = A[1] * px + k1;
            const float w2 = 1.0f - w0 - w1;
            if (w0 < 0.0f || w1 < 0.0f || w2 < 0.0f) continue;
            const float iz = w0 * iz0 + w1 * iz1 + w2 * iz2;
            const float z = 1.0f / iz;
            const int64_t pix = y * W + x;
            if (z < zbuf[pix]) {
              zbuf[pix] = z;
              tbuf[pix] = f;
              bary[2 * pix] = w0 * iz0 * z;
              bary[2 * pix + 1] = w1 * iz1 * z;
            }
          }
        }
      }
    }
  });

  // Pass 2 (shading) of the visible surface only.
  const float* uvp = texcoords.data_ptr<float>();
  const float* tex = texture.data_ptr<float>();
  const int Ht = int(texture.size(0)), Wt = int(texture.size(1));
  const float* mat = material.data_ptr<float>();
  float* img = image.data_ptr<float>();
  at::parallel_for(0, H * W, 4096, [&](int64_t p0, int64_t p1) {
    for (int64_t pix = p0; pix < p1; ++pix) {
      const int64_t f = tbuf[pix];
      if (f < 0) continue;
      const int64_t* t = tri + 3 * f;
      const float b[3] = {bary[2 * pix], bary[2 * pix + 1], 1.0f - bary[2 * pix] - bary[2 * pix + 1]};
      float n[3] = {0, 0, 0}, pos[3] = {0, 0, 0}, uv[2] = {0, 0};
      for (int c = 0; c < 3; ++c) {
        for (int k = 0; k < 3; ++k) {
          n[k] += b[c] * normals[3 * t[c] + k];
          pos[k] += b[c] * P[3 * t[c] + k];
        }
        uv[0] += b[c] * uvp[2 * t[c]];
        uv[1] += b[c] * uvp[2 * t[c] + 1];
      }
      pfp::raster::normalize3(n);
      float view[3] = {-pos[0], -pos[1], -pos[2]};
      pfp::raster::normalize3(view);
      float albedo[3];
      pfp::raster::sample_texture(tex, Ht, Wt, uv[0], uv[1], albedo);
      pfp::raster::shade(albedo, n, view, Lp, n_lights, mat, img + 3 * pix);
    }
  });
  return {image, depth, triangle};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfacepnp, CPU, m) { m.impl("render_mesh", &render_mesh_cpu); }
