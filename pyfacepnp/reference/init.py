"""Closed-form-style PnP initialisation in batched torch: the object-space "Omega"
formulation of SQPnP (Terzakis & Lourakis, ECCV 2020), minimised over SO(3) from a few
rotation starts.

For normalised rays v_i = K^-1 [x_i, 1] (undistorted, with a lens) and projectors
Q_i = w_i (I - v_i v_i^T / |v_i|^2), the object-space error sum_i |Q_i (R X_i + t)|^2 is
quadratic in r = vec(R) (row-major). Minimising over t in closed form gives t = P r and the
error r^T Omega r with a 9x9 Omega. We run a damped Gauss-Newton on SO(3) from the
rotations nearest to Omega's three smallest eigenvectors (both signs, as SQPnP does), four
fixed rotations, and the mirror images of these poses that the object-space error confuses
for flat objects, then keep the candidate with the lowest image-space cost among those in
front of the camera.
Planar scenes, N = 4..6 and any rotation are handled; everything runs in float64.
"""

from __future__ import annotations

import torch

from pyfacepnp.geometry.distortion import undistort
from pyfacepnp.geometry.rotation import nearest_rotation, skew, so3_exp
from pyfacepnp.reference.objective import cost_of_residuals, project, robust_weight

_REFINE_ITERATIONS = 12
_IMAGE_CHECKED = 4  # candidates whose image-space cost is evaluated
_ROBUST_ROUNDS = 6  # reweighting rounds for the Huber loss


def omega_matrices(points3d: torch.Tensor, points2d: torch.Tensor, K: torch.Tensor, w: torch.Tensor):
    """Omega ``(B, 9, 9)`` and P ``(B, 3, 9)`` (with ``t = P r``) for centred, scaled points.

    Args:
        points3d: ``(B, N, 3)`` already centred and scaled object points.
        points2d: ``(B, N, 2)`` pixels. K: ``(B, 3, 3)``. w: ``(B, N)`` scalar weights.
    """
    B, N, _ = points3d.shape
    ones = torch.ones_like(points2d[..., :1])
    v = torch.cat([points2d, ones], -1) @ torch.linalg.inv(K).transpose(-1, -2)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    Q = w[..., None, None] * (eye - v[..., :, None] * v[..., None, :] / (v * v).sum(-1)[..., None, None])
    Qf = Q.reshape(B, N, 9).transpose(1, 2)  # (B, 9[a,b], N)
    XX = (points3d[..., :, None] * points3d[..., None, :]).reshape(B, N, 9)  # [k,l]
    T = (Qf @ XX).reshape(B, 3, 3, 3, 3).permute(0, 1, 3, 2, 4).reshape(B, 9, 9)
    M = (Qf @ points3d).reshape(B, 3, 3, 3).reshape(B, 3, 9)  # [a, (b, l)]
    S = Q.sum(1)
    P = -torch.linalg.solve(S, M)
    omega = T + M.transpose(1, 2) @ P
    return 0.5 * (omega + omega.transpose(1, 2)), P


def _refine_on_so3(starts: torch.Tensor, omega: torch.Tensor, iterations: int = _REFINE_ITERATIONS) -> torch.Tensor:
    """Damped Gauss-Newton on f(R) = vec(R)^T Omega vec(R) from rotations ``(B, S, 3, 3)``."""
    B, S = starts.shape[:2]
    R = starts.reshape(B * S, 3, 3)
    omega = omega.repeat_interleave(S, 0)
    M = R.shape[0]
    gens = skew(torch.eye(3, dtype=R.dtype, device=R.device))  # [e_k]x, (3, 3, 3)
    f = lambda R_: (R_.reshape(M, 1, 9) @ omega @ R_.reshape(M, 9, 1)).reshape(M)  # noqa: E731
    fR = f(R)
    mu = torch.full_like(fR, 1e-6)
    eye3 = torch.eye(3, dtype=R.dtype, device=R.device)
    for _ in range(iterations):
        J = (gens[None] @ R[:, None]).reshape(M, 3, 9).transpose(1, 2)  # (M, 9, 3)
        OJ = omega @ J
        g = (OJ.transpose(1, 2) @ R.reshape(M, 9, 1)).squeeze(-1)
        H = J.transpose(1, 2) @ OJ
        scale = H.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-300) / 3
        step = -torch.linalg.solve(H + (mu * scale)[:, None, None] * eye3, g)
        Rn = so3_exp(step) @ R
        fn = f(Rn)
        ok = fn < fR
        R = torch.where(ok[:, None, None], Rn, R)
        fR = torch.where(ok, fn, fR)
        mu = torch.where(ok, (mu / 10).clamp_min(1e-12), mu * 10)
    return R.reshape(B, S, 3, 3)


def _depth_flips(Rc, ref_obj, P):
    """``Ref_cam R Ref_obj``: the pose mirrored about the object's flattest axis and about
    the plane normal to the line of sight through its centre (for a flat object, both
    poses give nearly the same image). ``-R Ref_obj`` (added by the caller) instead
    mirrors the object through the camera centre: same rays, opposite side."""
    B = Rc.shape[0]
    centre = (P[:, None] @ Rc.reshape(B, -1, 9, 1)).squeeze(-1)  # camera-frame centroid
    c = centre / centre.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    ref_cam = torch.eye(3, dtype=Rc.dtype, device=Rc.device) - 2 * c[..., :, None] * c[..., None, :]
    return ref_cam @ Rc @ ref_obj[:, None]


def _fixed_starts(dtype, device) -> torch.Tensor:
    I = torch.eye(3, dtype=dtype, device=device)
    flips = [torch.diag(torch.tensor(d, dtype=dtype, device=device)) for d in ([1, -1, -1], [-1, 1, -1], [-1, -1, 1])]
    return torch.stack([I, *flips])


@torch.no_grad()
def omega_initialisation(
    points3d: torch.Tensor,
    points2d: torch.Tensor,
    K: torch.Tensor,
    weights: torch.Tensor,
    loss: str = "l2",
    huber_delta: float = 1.0,
    distortion: torch.Tensor | None = None,
    camera_model: str = "pinhole",
):
    """Initial poses for batched PnP without a starting guess.

    With a lens, Omega is built from the undistorted rays (``K^-1`` then
    :func:`~pyfacepnp.geometry.distortion.undistort`; a pixel whose ray does not converge
    is left out of it) while the candidates are still ranked by the image-space cost of
    the distorted projection.

    Args:
        points3d: ``(B, N, 3)`` object points.
        points2d: ``(B, N, 2)`` pixels.
        K: ``(B, 3, 3)`` intrinsics.
        weights: ``(B, N, 2)`` per-axis weights (their mean weights the object-space error).
        loss, huber_delta: the image-space objective used to pick among candidates.
        distortion, camera_model: ``None`` or ``(B, D)`` (or shared ``(D,)``) lens
            coefficients, and their model.

    Returns:
        ``(R (B, 3, 3), t (B, 3))`` in the input dtype; not differentiable.

    Example:
        >>> X = torch.randn(2, 8, 3, dtype=torch.float64)
        >>> K = torch.tensor([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3)
        >>> x = (X + torch.tensor([0.0, 0, 5], dtype=torch.float64)) @ K.transpose(1, 2)
        >>> R, t = omega_initialisation(X, x[..., :2] / x[..., 2:], K, torch.ones(2, 8, 2, dtype=torch.float64))
        >>> torch.allclose(t, torch.tensor([0.0, 0, 5], dtype=torch.float64).expand(2, 3), atol=1e-6)
        True
    """
    out_dtype = points3d.dtype
    X, x, K, w2 = (a.detach().to(torch.float64) for a in (points3d, points2d, K, weights))
    lens = (None if distortion is None else distortion.detach().to(torch.float64).expand(X.shape[0], -1), camera_model)
    w_obj = w2.mean(-1)
    rays = (x, K)  # what Omega's rays K^-1 [x, 1] are made of
    if distortion is not None:
        nd = (torch.cat([x, torch.ones_like(x[..., :1])], -1) @ torch.linalg.inv(K).transpose(-1, -2))[..., :2]
        n = undistort(nd, lens[0], camera_model)
        ok = torch.isfinite(n).all(-1)
        w_obj = torch.where(ok, w_obj, 0.0)
        rays = (torch.where(ok[..., None], n, 0.0), torch.eye(3, dtype=K.dtype, device=K.device).expand_as(K))
    R, t = _best_candidate(X, x, K, w2, w_obj, loss, huber_delta, lens, rays)
    if loss == "huber":
        # Iteratively reweighted: the object-space error knows nothing of Huber, so
        # weight each point by rho'(s) of its image residual under the current pose.
        for _ in range(_ROBUST_ROUNDS):
            uv, _ = project(R, t, X, K, *lens)
            res = (w2 * (uv - x) ** 2).sum(-1)
            res = torch.where(torch.isfinite(res), res, torch.inf)
            phi = robust_weight(res, loss, huber_delta)
            # ... and drop points far beyond the typical residual, which Huber only damps.
            med = res.masked_fill(w2.sum(-1) <= 0, torch.nan).nanmedian(-1, keepdim=True).values
            phi = torch.where(torch.isfinite(phi) & (res <= 9 * med), phi, 0.0)
            R, t = _best_candidate(X, x, K, w2, w_obj * phi, loss, huber_delta, lens, rays)
    return R.to(out_dtype), t.to(out_dtype)


def _best_candidate(X, x, K, w2, w, loss, huber_delta, lens=(None, "pinhole"), rays=None):
    """The candidate pose with the lowest image-space cost, for object-space weights w.

    ``lens`` is ``(distortion, camera_model)`` of the image-space cost; ``rays`` the
    ``(points2d, K)`` Omega is built from (default ``(x, K)``)."""
    B, N, _ = X.shape
    wsum = w.sum(-1, keepdim=True).clamp_min(1e-300)
    c = (w[..., None] * X).sum(1) / wsum
    Xc = X - c[:, None]
    s = ((w * (Xc * Xc).sum(-1)).sum(-1, keepdim=True) / wsum).sqrt().clamp_min(1e-300)
    Xn = Xc / s[..., None]
    # Normalise w so that Omega is O(1) whatever the weights' scale.
    omega, P = omega_matrices(Xn, *(rays or (x, K)), w / wsum)

    evecs = torch.linalg.eigh(omega)[1][..., :3].transpose(1, 2).reshape(B, 3, 3, 3)
    from_eig = nearest_rotation(torch.cat([evecs, -evecs], 1) * 3**0.5)  # (B, 6, 3, 3)
    starts = torch.cat([from_eig, _fixed_starts(X.dtype, X.device).expand(B, 4, 3, 3)], 1)
    # The object-space error cannot tell a pose from its mirror images, and for flat
    # objects its minimum can sit in the wrong one: start from those too.
    m = torch.linalg.eigh(Xn.transpose(1, 2) @ Xn)[1][..., 0]  # flattest object axis
    ref_obj = torch.eye(3, dtype=X.dtype, device=X.device) - 2 * m[:, :, None] * m[:, None, :]
    Rc = _refine_on_so3(torch.cat([starts, -starts @ ref_obj[:, None]], 1), omega)
    Rc = torch.cat([Rc, _refine_on_so3(_depth_flips(Rc, ref_obj, P), omega)], 1)
    S = Rc.shape[1]
    tn = (P[:, None] @ Rc.reshape(B, S, 9, 1)).squeeze(-1)  # (B, S, 3), for normalised points
    tc = s[:, None] * tn - (Rc @ c[:, None, :, None]).squeeze(-1)

    # Prefer candidates with fewer weighted points behind the camera (none, when any
    # candidate manages it), rank them by the object-space error, and let the
    # image-space cost pick among the best few.
    z = (X @ Rc[:, :, 2, :].transpose(1, 2)).transpose(1, 2) + tc[:, :, 2, None]  # (B, S, N)
    behind = ((z <= 0) & (w > 0)[:, None]).sum(-1).to(X.dtype)  # (B, S)
    f = (Rc.reshape(B, S, 1, 9) @ omega[:, None] @ Rc.reshape(B, S, 9, 1)).reshape(B, S)
    top = (behind * (f.abs().amax(1, keepdim=True) + 1) + f).topk(_IMAGE_CHECKED, dim=1, largest=False).indices
    idx = torch.arange(B, device=X.device)[:, None]
    Rt, tt = Rc[idx, top], tc[idx, top]
    dist = lens[0] if lens[0] is None else lens[0][:, None]
    uv, _ = project(Rt, tt, X[:, None], K[:, None], dist, lens[1])
    cost = cost_of_residuals(uv - x[:, None], w2[:, None], loss, huber_delta)
    cost = torch.where(torch.isfinite(cost), cost, torch.finfo(cost.dtype).max / 4)
    best = (behind[idx, top] * (cost.amax(1, keepdim=True) + 1) + cost).argmin(1)
    idx = idx[:, 0]
    return Rt[idx, best], tt[idx, best]
