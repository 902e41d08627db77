"""Fake (meta) kernels: output shapes and dtypes without computation, so the ops trace
under ``torch.compile(fullgraph=True)`` and pass ``torch.library.opcheck``."""

from __future__ import annotations

import torch

from pyfacepnp._ext import ops  # noqa: F401  (the library must be loaded first)

_STATE_SIZE = 48  # float64 R (9), t (3), covariance (36) per problem: csrc/common/pnp_args.h


@torch.library.register_fake("pyfacepnp::solve_pnp")
def _solve_pnp_fake(points3d, points2d, K, weights, init_R, init_t, loss, huber_delta,
                    max_iterations, tolerance, loss_scales=None, distortion=None, camera_model=0):
    B = points3d.shape[0]
    return (
        points3d.new_empty((B, 3, 3)),
        points3d.new_empty((B, 3)),
        points3d.new_empty((B,)),
        points3d.new_empty((B,), dtype=torch.int32),
        points3d.new_empty((B,), dtype=torch.int32),
        points3d.new_empty((B, 6, 6)),
        points3d.new_empty((B, _STATE_SIZE), dtype=torch.float64),
    )


@torch.library.register_fake("pyfacepnp::solve_pnp_ransac")
def _solve_pnp_ransac_fake(points3d, points2d, K, weights, loss, loss_scale, threshold,
                           confidence, max_trials, seed, max_iterations, tolerance,
                           loss_scales=None, distortion=None, camera_model=0):
    B, N = points3d.shape[:2]
    pose = _solve_pnp_fake(points3d, points2d, K, weights, None, None, loss, loss_scale,
                           max_iterations, tolerance)
    return (*pose, points3d.new_empty((B, N), dtype=torch.bool),
            points3d.new_empty((B,), dtype=torch.int32), points3d.new_empty((B,), dtype=torch.int32))


@torch.library.register_fake("pyfacepnp::solve_pnp_minima")
def _solve_pnp_minima_fake(points3d, points2d, K, weights, loss, loss_scale, num_solutions,
                           max_iterations, tolerance, loss_scales=None, distortion=None,
                           camera_model=0):
    B, k = points3d.shape[0], num_solutions
    pose = _solve_pnp_fake(points3d.new_empty((B * k, 1, 3)), points2d, K, weights, None, None,
                           loss, loss_scale, max_iterations, tolerance)
    pose = [p.reshape((B, k) + tuple(p.shape[1:])) for p in pose]
    return (*pose, points3d.new_empty((B,), dtype=torch.int32))


@torch.library.register_fake("pyfacepnp::solve_pnp_backward")
def _solve_pnp_backward_fake(grad_R, grad_t, grad_cost, points3d, points2d, K, weights, state,
                             status, loss, huber_delta, loss_scales=None, distortion=None,
                             camera_model=0):
    n = 0 if distortion is None else distortion.shape[1]
    return (
        torch.empty_like(points3d),
        torch.empty_like(points2d),
        torch.empty_like(K),
        torch.empty_like(points2d if weights is None else weights),  # unit weights' gradient
        points3d.new_empty((points3d.shape[0], n)),
    )


@torch.library.register_fake("pyfacepnp::warp_points")
def _warp_points_fake(points, affine):
    return torch.empty_like(points)


@torch.library.register_fake("pyfacepnp::warp_points_backward")
def _warp_points_backward_fake(grad_out, points, affine):
    return torch.empty_like(points), torch.empty_like(affine)


@torch.library.register_fake("pyfacepnp::render_mesh")
def _render_mesh_fake(vertices, faces, texcoords, texture, K, background, lights, material):
    h, w = background.shape[0], background.shape[1]
    return (
        background.new_empty((h, w, 3)),
        background.new_empty((h, w)),
        background.new_empty((h, w), dtype=torch.int64),
    )


@torch.library.register_fake("pyfacepnp::pnp_hessian")
def _pnp_hessian_fake(R, t, points3d, points2d, K, weights, loss, loss_scale, loss_scales=None,
                      distortion=None, camera_model=0):
    B = points3d.shape[0]
    return (points3d.new_empty((B, 6, 6), dtype=torch.float64),
            points3d.new_empty((B,), dtype=torch.bool))


@torch.library.register_fake("pyfacepnp::pnp_hessian_backward")
def _pnp_hessian_backward_fake(grad_hessian, R, t, points3d, points2d, K, weights, valid, loss,
                               loss_scale, loss_scales=None, distortion=None, camera_model=0):
    B = points3d.shape[0]
    n = 0 if distortion is None else distortion.shape[1]
    return (points3d.new_empty((B, 3, 3)), points3d.new_empty((B, 3)), torch.empty_like(points3d),
            torch.empty_like(points2d), points3d.new_empty((B, 3, 3)), torch.empty_like(points2d),
            points3d.new_empty((B, n)))
