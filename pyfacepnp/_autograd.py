"""Autograd formulas of the compiled ops, each itself a registered (traceable) op."""

from __future__ import annotations

import torch

from pyfacepnp._ext import ops


def _solve_pnp_setup(ctx, inputs, output):
    (points3d, points2d, K, weights, _init_R, _init_t, loss, huber_delta, _it, _tol, scales,
     distortion, camera_model) = inputs
    _R, _t, _cost, iterations, status, cov, state = output
    ctx.save_for_backward(points3d, points2d, K, weights, state, status, scales, distortion)
    ctx.loss = loss
    ctx.huber_delta = huber_delta
    ctx.camera_model = camera_model
    # The covariance is a by-product (third derivatives would be needed to differentiate it).
    ctx.mark_non_differentiable(iterations, status, cov, state)


def _solve_pnp_backward(ctx, grad_R, grad_t, grad_cost, _g_iter, _g_status, _g_cov, _g_state):
    points3d, points2d, K, weights, state, status, scales, distortion = ctx.saved_tensors
    B = state.shape[0]
    grad_R = points3d.new_zeros((B, 3, 3)) if grad_R is None else grad_R
    grad_t = points3d.new_zeros((B, 3)) if grad_t is None else grad_t
    grad_cost = points3d.new_zeros((B,)) if grad_cost is None else grad_cost
    gX, gx, gK, gw, gD = ops.solve_pnp_backward(
        grad_R.contiguous(), grad_t.contiguous(), grad_cost.contiguous(), points3d, points2d, K,
        weights, state, status, ctx.loss, ctx.huber_delta, scales, distortion, ctx.camera_model,
    )
    return gX, gx, gK, gw, None, None, None, None, None, None, None, \
        (gD if distortion is not None else None), None


def _ransac_setup(ctx, inputs, output):
    (points3d, points2d, K, weights, loss, loss_scale, *_options, scales, distortion,
     camera_model) = inputs
    *_pose, iterations, status, cov, state, inliers, num_inliers, trials = output
    # The implicit backward of the final solve, with the inlier set held fixed: solve_pnp's
    # backward on the weights masked by the inliers.
    masked = weights * inliers.unsqueeze(-1).to(weights.dtype)
    ctx.save_for_backward(points3d, points2d, K, masked, state, status, scales, distortion)
    ctx.loss = loss
    ctx.huber_delta = loss_scale
    ctx.camera_model = camera_model
    ctx.mark_non_differentiable(iterations, status, cov, state, inliers, num_inliers, trials)


def _ransac_backward(ctx, grad_R, grad_t, grad_cost, *_non_differentiable):
    grads = _solve_pnp_backward(ctx, grad_R, grad_t, grad_cost, None, None, None, None)
    return grads[:4] + (None,) * 9 + (grads[11], None)


def _minima_setup(ctx, inputs, output):
    (points3d, points2d, K, weights, loss, loss_scale, _k, _it, _tol, scales, distortion,
     camera_model) = inputs
    *_pose, iterations, status, cov, state, count = output
    ctx.save_for_backward(points3d, points2d, K, weights, state, status, scales, distortion)
    ctx.loss = loss
    ctx.huber_delta = loss_scale
    ctx.camera_model = camera_model
    ctx.mark_non_differentiable(iterations, status, cov, state, count)


def _minima_backward(ctx, grad_R, grad_t, grad_cost, *_non_differentiable):
    # Solution j of problem b is a solve_pnp problem of its own (its state): the backward of
    # the B * k flattened solutions on repeated inputs, summed over the solutions.
    points3d, points2d, K, weights, state, status, scales, distortion = ctx.saved_tensors
    B, k = status.shape
    rep = lambda a: None if a is None else a.repeat_interleave(k, 0)  # noqa: E731
    flat = lambda g, shape: (points3d.new_zeros((B * k,) + shape) if g is None  # noqa: E731
                             else g.reshape((B * k,) + shape).contiguous())
    grads = ops.solve_pnp_backward(
        flat(grad_R, (3, 3)), flat(grad_t, (3,)), flat(grad_cost, ()), rep(points3d),
        rep(points2d), rep(K), rep(weights), state.reshape(B * k, -1), status.reshape(B * k),
        ctx.loss, ctx.huber_delta, rep(scales), rep(distortion), ctx.camera_model,
    )
    gX, gx, gK, gw, gD = (g.reshape((B, k) + tuple(g.shape[1:])).sum(1) for g in grads)
    return gX, gx, gK, gw, None, None, None, None, None, None, \
        (gD if distortion is not None else None), None


def _warp_setup(ctx, inputs, output):
    points, affine = inputs
    ctx.save_for_backward(points, affine)


def _warp_backward(ctx, grad_out):
    points, affine = ctx.saved_tensors
    gp, ga = ops.warp_points_backward(grad_out.contiguous(), points, affine)
    return gp, ga


torch.library.register_autograd("pyfacepnp::solve_pnp", _solve_pnp_backward, setup_context=_solve_pnp_setup)
torch.library.register_autograd("pyfacepnp::warp_points", _warp_backward, setup_context=_warp_setup)
torch.library.register_autograd(
    "pyfacepnp::solve_pnp_ransac", _ransac_backward, setup_context=_ransac_setup
)
torch.library.register_autograd(
    "pyfacepnp::solve_pnp_minima", _minima_backward, setup_context=_minima_setup
)


def _no_double_backward(name):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"pyfacepnp: differentiating {name} (double backward) is not supported"
        )

    return backward


def _no_setup(ctx, inputs, output):
    pass


for _op in ("solve_pnp_backward", "warp_points_backward"):
    torch.library.register_autograd(
        f"pyfacepnp::{_op}", _no_double_backward(_op), setup_context=_no_setup
    )
