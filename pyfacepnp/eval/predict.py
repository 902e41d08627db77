"""``pyfacepnp predict``: the whole pipeline on arbitrary image files."""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from pyfacepnp.draw import draw_mesh
from pyfacepnp.geometry.camera import crop_intrinsics, project_points, resize_affine, wcpa_intrinsics
from pyfacepnp.models.pipeline import run_pipeline


def frame_from_image(rgb: np.ndarray, frame_size: int, focal: float | None = None):
    """Pad an RGB image to a centred square and resize it to the network's frame size.

    Args:
        rgb: ``(H, W, 3)`` uint8.
        frame_size: side of the frame the detector was trained on.
        focal: focal length in pixels of ``rgb``; None assumes the WCPA field of view
            over the padded square.

    Returns:
        ``frame (frame_size, frame_size, 3)`` uint8, ``K_frame (3, 3)``, ``K_image (3, 3)``
        (intrinsics of the original image; R, t are shared by both).
    """
    import cv2

    h, w = rgb.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = cv2.copyMakeBorder(rgb, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=0)
    if focal is None:
        K_sq = wcpa_intrinsics(side)
    else:
        K_sq = np.array([[focal, 0, side / 2.0], [0, focal, side / 2.0], [0, 0, 1.0]])
    K_frame = crop_intrinsics(K_sq, resize_affine(side, frame_size))
    K_image = K_sq.copy()
    K_image[0, 2] -= left
    K_image[1, 2] -= top
    interp = cv2.INTER_AREA if side > frame_size else cv2.INTER_LINEAR
    frame = cv2.resize(square, (frame_size, frame_size), interpolation=interp)
    return frame, K_frame, K_image


def predict_files(paths: list[str], bundle: dict, face_model, out_dir: str, focal: float | None = None,
                  weighted: bool = True, net: str = "stage2") -> list[dict]:
    """Run the pipeline on each image; write ``<stem>_overlay.png``, ``<stem>.npz``, ``<stem>.json``.

    Returns one dict per image with the written paths and R, t.
    """
    import cv2

    cfg = bundle["config"]
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for path in paths:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image file {path!r} (missing or not an image)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        frame, K_frame, K_image = frame_from_image(rgb, cfg.data.image_size, focal)
        image = torch.from_numpy(frame).permute(2, 0, 1)[None]
        out = run_pipeline(bundle["detector"], bundle[net], image, torch.from_numpy(K_frame).float()[None],
                           cfg.data.crop_size, cfg.data.crop_margin, weighted=weighted)
        pose = out["pose"]
        R, t, verts = pose.R[0], pose.t[0], out["pred"]["vertices"][0]
        Ki = torch.from_numpy(K_image).float()
        px = project_points(verts[None], R[None], t[None], Ki[None])[0]
        stem = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0])
        overlay = draw_mesh(rgb, px, face_model.triangles)
        cv2.imwrite(stem + "_overlay.png", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        status = int(pose.status[0])
        np.savez(stem + ".npz", R=R.numpy(), t=t.numpy(), vertices=verts.numpy(),
                 camera_vertices=pose.camera_vertices[0].numpy(), K=K_image, status=status)
        info = {"image": path, "R": R.tolist(), "t": t.tolist(), "K": K_image.tolist(),
                "pnp_status": status, "overlay": stem + "_overlay.png", "npz": stem + ".npz"}
        with open(stem + ".json", "w") as f:
            json.dump(info, f, indent=2)
        results.append(info)
    return results
