// The CUDA launchers of solve_pnp, defined in pnp_kernels.cu and called by pnp_cuda.cpp:
// they enqueue on `stream` and return the launch status; B == 0 launches nothing.
#pragma once
#include <cuda_runtime.h>

#include "common/pnp_args.h"
#include "common/pnp_hessian.h"

namespace pyfacepnp {
namespace gpu {

// `min_warps_per_sm` picks the forward kernel's register budget: 1 (up to 255 registers per
// thread) or 16 (capped at 128, with spills); anything else is cudaErrorInvalidValue.
template <typename scalar_t>
cudaError_t launch_solve_pnp(const pfp::PnPForwardArgs<scalar_t>& args, int32_t min_warps_per_sm,
                             cudaStream_t stream);

template <typename scalar_t>
cudaError_t launch_solve_pnp_backward(const pfp::PnPBackwardArgs<scalar_t>& args,
                                      cudaStream_t stream);

template <typename scalar_t>
cudaError_t launch_solve_pnp_minima(const pfp::PnPMinimaArgs<scalar_t>& args, cudaStream_t stream);

template <typename scalar_t>
cudaError_t launch_solve_pnp_ransac(const pfp::PnPRansacArgs<scalar_t>& args, cudaStream_t stream);

// pnp_hessian (backward = false) or pnp_hessian_backward on the same arguments.
template <typename scalar_t>
cudaError_t launch_pnp_hessian(const pfp::PnPHessianArgs<scalar_t>& args, bool backward,
                               cudaStream_t stream);

}  // namespace gpu
}  // namespace pyfacepnp
