"""Autograd formulas of the compiled ops, each itself a registered (traceable) op.
solve_pnp's own (and solve_pnp_backward's double-backward guard) are in C++,
csrc/autograd.cpp: its per-call cost matters most."""

from __future__ import annotations

import torch

from pyfacepnp._ext import ops

_C = torch._C
_LIB = torch.library.Library("pyfacepnp", "FRAGMENT")


def _register_autograd(name, backward, setup_context):
    """The Autograd-key kernel ``torch.library.register_autograd`` installs (an
    autograd.Function around the op), without its per-call costs, which exceed a small
    problem's solve: it rebuilds the schema's defaults on every call (about 30 us) and
    allocates a zero gradient for every output the loss does not use. Here ``backward`` gets
    None for those, and ``setup_context`` the inputs with the trailing defaults, which the
    dispatcher strips, restored."""
    op = getattr(ops, name).default
    defaults = tuple(a.default_value for a in op._schema.arguments)

    def below_autograd(keyset, args):
        with _C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & _C._after_autograd_keyset, *args)

    def forward(ctx, keyset, *args):
        output = below_autograd(keyset, args)
        ctx.set_materialize_grads(False)
        setup_context(ctx, args + defaults[len(args):], output)
        return output

    function = type(f"{name}_autograd", (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "backward": staticmethod(lambda ctx, *grads: (None, *backward(ctx, *grads))),
    })

    def kernel(keyset, *args):
        if _C.is_grad_enabled() and _C._any_requires_grad(*args):
            return function.apply(keyset, *args)
        return below_autograd(keyset, args)

    _LIB.impl(name, kernel, "Autograd", with_keyset=True)


def _save_solve(ctx, points3d, points2d, K, weights, output, scales, distortion, loss,
                loss_scale, camera_model, *extra):
    """Save what solve_pnp_backward needs of a forward whose first 7 outputs are solve_pnp's
    (state is output 6, status 4); ``extra`` tensors are saved after them."""
    ctx.save_for_backward(points3d, points2d, K, weights, output[6], output[4], scales,
                          distortion, *extra)
    ctx.options = (loss, loss_scale, camera_model)
    # The covariance is a by-product (third derivatives would be needed to differentiate it).
    ctx.mark_non_differentiable(*output[3:])


def _pnp_backward(ctx, grads, points3d, points2d, K, weights, state, status, scales, distortion):
    """``(gX, gx, gK, gw, gD)``; gw and gD None where their input was (absent upstream
    gradients stay None: the op reads them as zeros without a tensor of zeros)."""
    loss, loss_scale, camera_model = ctx.options
    gX, gx, gK, gw, gD = ops.solve_pnp_backward(
        *grads, points3d, points2d, K, weights, state, status, loss, loss_scale, scales,
        distortion, camera_model)
    return gX, gx, gK, None if weights is None else gw, None if distortion is None else gD


def _ransac_setup(ctx, inputs, output):
    X, x, K, w, loss, loss_scale, *_options, scales, D, model = inputs
    _save_solve(ctx, X, x, K, w, output, scales, D, loss, loss_scale, model, output[7])


def _ransac_backward(ctx, grad_R, grad_t, grad_cost, *_non_differentiable):
    # The implicit backward of the final solve, with the inlier set held fixed: solve_pnp's
    # backward on the weights masked by the inliers (unit weights: the mask itself).
    X, x, K, w, state, status, scales, D, inliers = ctx.saved_tensors
    mask = inliers.unsqueeze(-1).to(X.dtype)
    masked = mask.expand(-1, -1, 2) if w is None else w * mask
    gX, gx, gK, gw, gD = _pnp_backward(ctx, (grad_R, grad_t, grad_cost), X, x, K, masked,
                                       state, status, scales, D)
    return (gX, gx, gK, None if w is None else gw) + (None,) * 9 + (gD, None)


def _minima_setup(ctx, inputs, output):
    X, x, K, w, loss, loss_scale, _k, _it, _tol, scales, D, model = inputs
    _save_solve(ctx, X, x, K, w, output, scales, D, loss, loss_scale, model)


def _minima_backward(ctx, grad_R, grad_t, grad_cost, *_non_differentiable):
    # Solution j of problem b is a solve_pnp problem of its own (its state): the backward of
    # the B * k flattened solutions on repeated inputs, summed over the solutions.
    X, x, K, w, state, status, scales, D = ctx.saved_tensors
    B, k = status.shape
    rep = lambda a: None if a is None else a.repeat_interleave(k, 0)  # noqa: E731
    flat = lambda g: None if g is None else g.reshape((B * k,) + g.shape[2:])  # noqa: E731
    grads = _pnp_backward(ctx, (flat(grad_R), flat(grad_t), flat(grad_cost)), rep(X), rep(x),
                          rep(K), rep(w), state.reshape(B * k, -1), status.reshape(B * k),
                          rep(scales), rep(D))
    gX, gx, gK, gw, gD = (None if g is None else g.reshape((B, k) + g.shape[1:]).sum(1)
                          for g in grads)
    return (gX, gx, gK, gw) + (None,) * 6 + (gD, None)


def _hessian_setup(ctx, inputs, output):
    R, t, X, x, K, w, loss, loss_scale, scales, D, model = inputs
    ctx.save_for_backward(R, t, X, x, K, w, output[1], scales, D)
    ctx.options = (loss, loss_scale, model)
    ctx.dtypes = (R.dtype, t.dtype, K.dtype)
    ctx.mark_non_differentiable(output[1])


def _hessian_backward(ctx, grad_H, _grad_valid):
    if grad_H is None:
        return (None,) * 11
    R, t, X, x, K, w, valid, scales, D = ctx.saved_tensors
    loss, loss_scale, model = ctx.options
    gR, gt, gX, gx, gK, gw, gD = ops.pnp_hessian_backward(
        grad_H, R, t, X, x, K, w, valid, loss, loss_scale, scales, D, model)
    dR, dt, dK = ctx.dtypes
    return (gR.to(dR), gt.to(dt), gX, gx, gK.to(dK), None if w is None else gw, None, None, None,
            None if D is None else gD, None)


def _warp_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _warp_backward(ctx, grad_out):
    if grad_out is None:  # no upstream gradient: none to either input
        return None, None
    points, affine = ctx.saved_tensors
    return ops.warp_points_backward(grad_out.contiguous(), points, affine)


_register_autograd("solve_pnp_ransac", _ransac_backward, _ransac_setup)
_register_autograd("solve_pnp_minima", _minima_backward, _minima_setup)
_register_autograd("warp_points", _warp_backward, _warp_setup)
_register_autograd("pnp_hessian", _hessian_backward, _hessian_setup)


def _no_double_backward(name):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"pyfacepnp: differentiating {name} (double backward) is not supported"
        )

    return backward


_register_autograd("warp_points_backward", _no_double_backward("warp_points_backward"),
                   lambda ctx, inputs, output: None)
_register_autograd("pnp_hessian_backward", _no_double_backward("pnp_hessian_backward"),
                   lambda ctx, inputs, output: None)
