// CPU kernels of warp_points and its backward.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include "common/warp_math.h"
#include "warp/warp_checks.h"

namespace {

at::Tensor warp_points_cpu(const at::Tensor& points_in, const at::Tensor& affine_in) {
  pyfacepnp::check_warp_inputs("warp_points", points_in, affine_in);
  const auto points = points_in.contiguous();
  const auto affine = affine_in.contiguous();
  auto out = at::empty_like(points);
  const int64_t B = points.size(0), N = points.size(1);
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "warp_points_cpu", [&] {
    const scalar_t* p = points.data_ptr<scalar_t>();
    const scalar_t* A = affine.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * N, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        pfp::warp_point(A + (i / N) * 6, p + 2 * i, y + 2 * i);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> warp_points_backward_cpu(const at::Tensor& grad_in,
                                                            const at::Tensor& points_in,
                                                            const at::Tensor& affine_in) {
  pyfacepnp::check_warp_inputs("warp_points_backward", points_in, affine_in);
  const auto points = points_in.contiguous();
  const auto affine = affine_in.contiguous();
  const auto grad = grad_in.to(points.scalar_type()).contiguous();
  TORCH_CHECK(grad.sizes() == points.sizes(), "warp_points_backward: grad_out must have shape ",
              points.sizes(), ", got ", grad.sizes());
  auto grad_points = at::empty_like(points);
  auto grad_affine = at::zeros_like(affine);
  const int64_t B = points.size(0), N = points.size(1);
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "warp_points_backward_cpu", [&] {
    const scalar_t* p = points.data_ptr<scalar_t>();
    const scalar_t* A = affine.data_ptr<scalar_t>();
    const scalar_t* g = grad.data_ptr<scalar_t>();
    scalar_t* gp = grad_points.data_ptr<scalar_t>();
    scalar_t* gA = grad_affine.data_ptr<scalar_t>();
    at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        double acc[6] = {0, 0, 0, 0, 0, 0};
        for (int64_t n = 0; n < N; ++n) {
          const int64_t i = b * N + n;
          scalar_t ga[6];
          pfp::warp_point_backward(A + b * 6, p + 2 * i, g + 2 * i, gp + 2 * i, ga);
          for (int k = 0; k < 6; ++k) acc[k] += ga[k];
        }
        for (int k = 0; k < 6; ++k) gA[b * 6 + k] = static_cast<scalar_t>(acc[k]);
      }
    });
  });
  return {grad_points, grad_affine};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyfacepnp, CPU, m) {
  m.impl("warp_points", &warp_points_cpu);
  m.impl("warp_points_backward", &warp_points_backward_cpu);
}
