"""Post-hoc, non-differentiable PnP with OpenCV (the 1st-place WCPA team's recipe): the
baseline that measures what the differentiable op adds."""

from __future__ import annotations

import numpy as np
import torch

import pyfacepnp
from pyfacepnp.geometry.transforms import transform_points
from pyfacepnp.models.pose import PoseOutput

__all__ = ["cv2_solve_pnp", "solve_pose_cv2"]


def cv2_solve_pnp(vertices: torch.Tensor, landmarks_image: torch.Tensor, K: torch.Tensor,
                  method: str = "sqpnp") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pose of each problem with ``cv2.solvePnP`` on all points, unweighted.

    ``method="sqpnp"`` uses ``SOLVEPNP_SQPNP`` (globally optimal for the algebraic cost)
    followed by ``cv2.solvePnPRefineLM`` on the reprojection error; ``"iterative"`` uses
    ``SOLVEPNP_ITERATIVE`` (DLT/homography start, then LM).

    Args:
        vertices: ``(B, N, 3)`` canonical vertices.
        landmarks_image: ``(B, N, 2)`` frame pixels.
        K: ``(B, 3, 3)`` intrinsics.

    Returns:
        ``R (B, 3, 3)``, ``t (B, 3)`` (float32) and ``ok (B,)`` bool (OpenCV's success flag
        and finite output).
    """
    if method not in ("sqpnp", "iterative"):
        raise ValueError(f"method must be 'sqpnp' or 'iterative', got {method!r}")
    import cv2

    flag = cv2.SOLVEPNP_SQPNP if method == "sqpnp" else cv2.SOLVEPNP_ITERATIVE
    X = vertices.detach().cpu().double().numpy()
    x = landmarks_image.detach().cpu().double().numpy()
    Ks = K.detach().cpu().double().numpy()
    Rs, ts, oks = [], [], []
    for i in range(X.shape[0]):
        ok, rvec, tvec = cv2.solvePnP(X[i], x[i], Ks[i], None, flags=flag)
        if ok and method == "sqpnp":
            rvec, tvec = cv2.solvePnPRefineLM(X[i], x[i], Ks[i], None, rvec, tvec)
        R = cv2.Rodrigues(rvec)[0] if ok else np.eye(3)
        t = tvec.reshape(3) if ok else np.zeros(3)
        ok = bool(ok) and np.isfinite(R).all() and np.isfinite(t).all()
        Rs.append(R)
        ts.append(t)
        oks.append(ok)
    return (torch.from_numpy(np.stack(Rs)).float(), torch.from_numpy(np.stack(ts)).float(),
            torch.tensor(oks))


def solve_pose_cv2(vertices: torch.Tensor, landmarks_crop: torch.Tensor, crop_affine: torch.Tensor,
                   K: torch.Tensor, method: str = "sqpnp") -> PoseOutput:
    """:func:`~pyfacepnp.models.pose.solve_pose`'s counterpart with :func:`cv2_solve_pnp`
    (unweighted, no gradients): the landmarks are unwarped to frame pixels in their dtype.

    Returns:
        :class:`~pyfacepnp.models.pose.PoseOutput` (on the CPU) whose ``status`` is
        ``CONVERGED`` where OpenCV succeeded and ``DEGENERATE`` elsewhere (identity pose),
        with unit ``weights``.
    """
    lm_img = pyfacepnp.warp_points(landmarks_crop, pyfacepnp.invert_affine(crop_affine))
    R, t, ok = cv2_solve_pnp(vertices, lm_img, K, method)
    status = torch.where(ok, int(pyfacepnp.PnPStatus.CONVERGED), int(pyfacepnp.PnPStatus.DEGENERATE)).to(torch.int32)
    lm_img = lm_img.cpu()
    return PoseOutput(R, t, status, lm_img, torch.ones_like(lm_img[..., 0]),
                      transform_points(vertices.detach().cpu().float(), R, t))
