"""Post-hoc, non-differentiable PnP with OpenCV (the 1st-place WCPA team's recipe)."""

from __future__ import annotations

import cv2
import numpy as np
import torch


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
