"""The whole inference path: frame -> detector -> crop -> two branches -> PnP -> pose + mesh.

Prediction and evaluation both call :func:`run_pipeline`; evaluation's oracle and baseline
variants are options of it (crops around given landmarks, OpenCV's post-hoc PnP).
"""

from __future__ import annotations

import torch

from pyfacepnp.geometry.crop import crop_affine_from_landmarks, warp_image
from pyfacepnp.models.pose import PoseOutput, solve_pose

__all__ = ["SOLVERS", "run_pipeline"]

SOLVERS = ("pyfacepnp", "opencv")


@torch.no_grad()
def run_pipeline(detector, net, image: torch.Tensor, K: torch.Tensor, crop_size: int,
                 margin: float, pnp_iterations: int = 50, weighted: bool = True, *,
                 landmarks68: torch.Tensor | None = None, solver: str = "pyfacepnp",
                 cv2_method: str = "sqpnp") -> dict:
    """Reconstruct faces in full frames.

    Args:
        detector: :class:`~pyfacepnp.models.detector.LandmarkDetector` (eval mode).
        net: :class:`~pyfacepnp.models.face_net.FaceNet` (eval mode).
        image: ``(B, 3, S, S)`` frames, uint8 or float in [0, 1].
        K: ``(B, 3, 3)`` frame intrinsics.
        crop_size, margin: the crop the network was trained on.
        pnp_iterations: iteration cap of ``solve_pnp``.
        weighted: PnP weights 1/sigma^2 (else uniform; ``solver="opencv"`` is always uniform).
        landmarks68: ``(B, 68, 2)`` frame pixels to crop around instead of the detector's
            (e.g. the ground truth: the oracle of a perfect detector; or a detector output
            already computed); the detector is then not run.
        solver: ``"pyfacepnp"`` (:func:`~pyfacepnp.models.pose.solve_pose`, differentiable
            PnP) or ``"opencv"`` (:func:`~pyfacepnp.models.posthoc.solve_pose_cv2`, the
            post-hoc baseline, ``cv2_method`` ``"sqpnp"`` or ``"iterative"``).

    Returns:
        dict with ``landmarks68 (B, 68, 2)`` (detector output or the given landmarks),
        ``crop_affine (B, 2, 3)``, ``crop (B, 3, c, c)``, ``pred`` (the network's outputs)
        and ``pose`` (:class:`~pyfacepnp.models.pose.PoseOutput`).

    Example:
        >>> # out = run_pipeline(det, net, frames, K, 128, 0.25)
        >>> # out["pose"].R, out["pose"].t, out["pred"]["vertices"]
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    frames = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    lm68 = detector(frames) if landmarks68 is None else landmarks68.to(frames)
    A = crop_affine_from_landmarks(lm68, crop_size, margin=margin)
    crop = warp_image(frames, A, crop_size)
    pred = net(crop)
    if solver == "opencv":
        from pyfacepnp.models.posthoc import solve_pose_cv2

        pose: PoseOutput = solve_pose_cv2(pred["vertices"], pred["landmarks"], A, K.float(), cv2_method)
    else:
        pose = solve_pose(pred["vertices"], pred["landmarks"], pred["log_var"] if weighted else None, A,
                          K.float(), max_iterations=pnp_iterations)
    return {"landmarks68": lm68, "crop_affine": A, "crop": crop, "pred": pred, "pose": pose}
