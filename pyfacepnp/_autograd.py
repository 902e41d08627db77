"""Autograd formulas of the compiled ops, each itself a registered (traceable) op."""

from __future__ import annotations

import torch

from pyfacepnp._ext import ops


def _solve_pnp_setup(ctx, inputs, output):
    points3d, points2d, K, weights, _init_R, _init_t, loss, huber_delta, _it, _tol, scales = inputs
    _R, _t, _cost, iterations, status, cov, state = output
    ctx.save_for_backward(points3d, points2d, K, weights, state, status, scales)
    ctx.loss = loss
    ctx.huber_delta = huber_delta
    # The covariance is a by-product (third derivatives would be needed to differentiate it).
    ctx.mark_non_differentiable(iterations, status, cov, state)


def _solve_pnp_backward(ctx, grad_R, grad_t, grad_cost, _g_iter, _g_status, _g_cov, _g_state):
    points3d, points2d, K, weights, state, status, scales = ctx.saved_tensors
    B = state.shape[0]
    grad_R = points3d.new_zeros((B, 3, 3)) if grad_R is None else grad_R
    grad_t = points3d.new_zeros((B, 3)) if grad_t is None else grad_t
    grad_cost = points3d.new_zeros((B,)) if grad_cost is None else grad_cost
    gX, gx, gK, gw = ops.solve_pnp_backward(
        grad_R.contiguous(), grad_t.contiguous(), grad_cost.contiguous(), points3d, points2d, K,
        weights, state, status, ctx.loss, ctx.huber_delta, scales,
    )
    return gX, gx, gK, gw, None, None, None, None, None, None, None


def _ransac_setup(ctx, inputs, output):
    points3d, points2d, K, weights, loss, loss_scale, *_options, scales = inputs
    *_pose, iterations, status, cov, state, inliers, num_inliers, trials = output
    # The implicit backward of the final solve, with the inlier set held fixed: solve_pnp's
    # backward on the weights masked by the inliers.
    masked = weights * inliers.unsqueeze(-1).to(weights.dtype)
    ctx.save_for_backward(points3d, points2d, K, masked, state, status, scales)
    ctx.loss = loss
    ctx.huber_delta = loss_scale
    ctx.mark_non_differentiable(iterations, status, cov, state, inliers, num_inliers, trials)


def _ransac_backward(ctx, grad_R, grad_t, grad_cost, *_non_differentiable):
    grads = _solve_pnp_backward(ctx, grad_R, grad_t, grad_cost, None, None, None, None)
    return grads[:4] + (None,) * 9


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
