"""The whole inference path: frame -> detector -> crop -> two branches -> PnP -> pose + mesh."""

from __future__ import annotations

import torch

from pyfacepnp.models.coords import warp_image
from pyfacepnp.models.pose import PoseOutput, solve_pose


def crop_affine(landmarks68: torch.Tensor, crop_size: int, margin: float) -> torch.Tensor:
    """Similarity frame -> crop affine ``(B, 2, 3)`` around 68 landmarks (the data layer's rule)."""
    from pyfacepnp.data.crop import crop_affine_from_landmarks

    A = crop_affine_from_landmarks(landmarks68, crop_size, margin=margin)
    return torch.as_tensor(A, dtype=landmarks68.dtype, device=landmarks68.device)


@torch.no_grad()
def run_pipeline(detector, net, image: torch.Tensor, K: torch.Tensor, crop_size: int,
                 margin: float, pnp_iterations: int = 50, weighted: bool = True) -> dict:
    """Reconstruct faces in full frames.

    Args:
        detector: :class:`~pyfacepnp.models.detector.LandmarkDetector` (eval mode).
        net: :class:`~pyfacepnp.models.face_net.FaceNet` (eval mode).
        image: ``(B, 3, S, S)`` frames, uint8 or float in [0, 1].
        K: ``(B, 3, 3)`` frame intrinsics.
        crop_size, margin: the crop the network was trained on.
        weighted: PnP weights 1/sigma^2 (else uniform).

    Returns:
        dict with ``landmarks68 (B, 68, 2)`` detector output, ``crop_affine (B, 2, 3)``,
        ``crop (B, 3, c, c)``, ``pred`` (the network's outputs) and ``pose``
        (:class:`~pyfacepnp.models.pose.PoseOutput`).

    Example:
        >>> # out = run_pipeline(det, net, frames, K, 128, 0.25)
        >>> # out["pose"].R, out["pose"].t, out["pred"]["vertices"]
    """
    frames = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    lm68 = detector(frames)
    A = crop_affine(lm68, crop_size, margin)
    crop = warp_image(frames, A, crop_size)
    pred = net(crop)
    pose: PoseOutput = solve_pose(pred["vertices"], pred["landmarks"],
                                  pred["log_var"] if weighted else None, A, K.float(),
                                  max_iterations=pnp_iterations)
    return {"landmarks68": lm68, "crop_affine": A, "crop": crop, "pred": pred, "pose": pose}
