"""``pyfacepnp predict``: the whole pipeline on arbitrary image files.

The coarse 68 landmarks that place the crop come from the learned detector (trained on the
synthetic heads only) or from a pretrained real-face detector of
:mod:`pyfacepnp.models.pretrained` (``detector="dlib"`` or ``"mediapipe"``, optional extras);
``"auto"`` takes the first one installed, dlib before mediapipe, else the learned one.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import torch

from pyfacepnp.draw import draw_mesh
from pyfacepnp.geometry.camera import crop_intrinsics, project_points, resize_affine, wcpa_intrinsics
from pyfacepnp.geometry.crop import apply_affine
from pyfacepnp.models.detector import heatmap_peak
from pyfacepnp.models.pipeline import run_pipeline
from pyfacepnp.models.pretrained import DETECTORS, default_detector, load_face68

__all__ = ["LEARNED_PEAK_MIN", "PREDICT_DETECTORS", "frame_from_image", "image_to_frame_affine",
           "resolve_detector", "predict_image", "predict_files"]

PREDICT_DETECTORS = ("auto",) + DETECTORS

# Median over the 68 landmarks of the learned detector's heatmap peak
# (:func:`~pyfacepnp.models.detector.heatmap_peak`) below which a frame is reported as unlike
# its training data: the 1st percentile of the demo detector's peaks on the 1000 synthetic test
# frames (about 1 % of them warn). Measured with the current demo detector (1500 steps): 0.088
# to 0.176 there (1st percentile 0.116), 0.054 on the astronaut photograph, where the detector
# misses the face, and 0.134 on Grace Hopper's, where it finds it roughly (17 % of the
# inter-ocular distance) and no warning is given (docs/real_photos.md). Earlier detectors:
# 0.104, 0.106 and 0.119 at that percentile. Recalibrate for another detector.
LEARNED_PEAK_MIN = 0.116


def image_to_frame_affine(height: int, width: int, frame_size: int) -> np.ndarray:
    """``(2, 3)`` affine from pixels of an ``height x width`` image to the frame that
    :func:`frame_from_image` makes of it (pad to a centred square, resize)."""
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    A = resize_affine(side, frame_size)
    A[:, 2] += A[:, :2] @ np.array([left, top], dtype=np.float64)
    return A


def _invert_affine(A: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([A, [0.0, 0.0, 1.0]]))[:2]


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


def resolve_detector(detector: str) -> tuple[str, list[str]]:
    """``(name, notes)``: ``"auto"`` resolved to an installed detector, with a note when
    only the learned one is available."""
    if detector not in PREDICT_DETECTORS:
        raise ValueError(f"detector must be one of {PREDICT_DETECTORS}, got {detector!r}")
    if detector != "auto":
        return detector, []
    name = default_detector()
    notes = []
    if name == "learned":
        notes.append("no pretrained face detector is installed, so the learned detector (trained on synthetic "
                      "heads only) places the crop; on real photographs install one: "
                      'pip install "pyfacepnp[real]" (then --detector dlib is the default)')
    return name, notes


def predict_image(rgb: np.ndarray, bundle: dict, face_model, *, detector: str = "learned", face68=None,
                  focal: float | None = None, weighted: bool = True, net: str = "stage2") -> dict:
    """Reconstruct the face in one RGB image.

    Args:
        rgb: ``(H, W, 3)`` uint8.
        bundle: a loaded model bundle (:func:`pyfacepnp.models.bundle.load_bundle`).
        face_model: the face model (triangles, landmark indices).
        detector: where the 68 crop landmarks come from: ``"learned"`` (the bundle's
            detector on the frame), ``"dlib"`` or ``"mediapipe"`` (on the full-resolution
            image), or ``"auto"``.
        face68: an already loaded pretrained detector for ``"dlib"`` / ``"mediapipe"``
            (loaded here when None).
        focal, weighted, net: as for :func:`predict_files`.

    Returns:
        dict with ``face_found`` (False when a pretrained detector finds no face: nothing
        else is then filled in but ``detector`` and ``warnings``), ``detector``,
        ``landmarks68`` (the crop's 68 landmarks, image pixels), ``R``, ``t``, ``vertices``,
        ``camera_vertices``, ``K`` (image intrinsics), ``status``, ``projected`` (every vertex,
        image pixels), ``projected68`` (the face model's 68 landmark vertices, image pixels),
        ``peak`` (learned detector only: median heatmap peak, see :data:`LEARNED_PEAK_MIN`)
        and ``warnings``.
    """
    cfg = bundle["config"]
    name, notes = resolve_detector(detector)
    out = {"detector": name, "warnings": list(notes), "face_found": True}
    frame, K_frame, K_image = frame_from_image(rgb, cfg.data.image_size, focal)
    to_frame = image_to_frame_affine(rgb.shape[0], rgb.shape[1], cfg.data.image_size)
    image = torch.from_numpy(frame).permute(2, 0, 1)[None]
    if name == "learned":
        with torch.no_grad():
            lm_frame, logits = bundle["detector"](image.float() / 255.0, return_logits=True)
        peak = float(heatmap_peak(logits)[0].median())
        out["peak"] = peak
        if peak < LEARNED_PEAK_MIN:
            out["warnings"].append(
                f"this image is unlike the learned detector's synthetic training frames (median heatmap peak "
                f"{peak:.3f}, synthetic frames stay above {LEARNED_PEAK_MIN}): it has probably not found the face, "
                f'and the mesh will be misplaced; use a pretrained detector (pip install "pyfacepnp[real]"; '
                f"--detector dlib)")
        lm_image = apply_affine(lm_frame[0].double().numpy(), _invert_affine(to_frame))
    else:
        face = (face68 or load_face68(name))(rgb)
        if face is None:
            out["face_found"] = False
            out["warnings"].append(f"the {name} detector found no face")
            return out
        lm_image = face.points
        lm_frame = torch.from_numpy(apply_affine(lm_image, to_frame)).float()[None]
    res = run_pipeline(bundle["detector"], bundle[net], image, torch.from_numpy(K_frame).float()[None],
                       cfg.data.crop_size, cfg.data.crop_margin, weighted=weighted, landmarks68=lm_frame)
    pose = res["pose"]
    R, t, verts = pose.R[0], pose.t[0], res["pred"]["vertices"][0]
    Ki = torch.from_numpy(K_image).float()
    px = project_points(verts[None], R[None], t[None], Ki[None])[0]
    out.update(landmarks68=np.asarray(lm_image, dtype=np.float64), R=R.numpy(), t=t.numpy(), vertices=verts.numpy(),
               camera_vertices=pose.camera_vertices[0].numpy(), K=K_image, status=int(pose.status[0]),
               projected=px.numpy(), projected68=px[torch.from_numpy(np.array(face_model.landmark_indices))].numpy())
    return out


def predict_files(paths: list[str], bundle: dict, face_model, out_dir: str, focal: float | None = None,
                  weighted: bool = True, net: str = "stage2", detector: str = "auto") -> list[dict]:
    """Run the pipeline on each image; write ``<stem>_overlay.png``, ``<stem>.npz``, ``<stem>.json``.

    ``detector`` is as for :func:`predict_image` (default ``"auto"``: a pretrained real-face
    detector when one is installed). Every message of the results' ``warnings`` is also
    issued as a :class:`UserWarning`. An image in which the pretrained detector finds no face
    gets no files; its result has ``face_found`` False.

    Returns one dict per image with the written paths, R, t, the detector and its warnings.
    """
    import cv2

    os.makedirs(out_dir, exist_ok=True)
    name, _ = resolve_detector(detector)
    face68 = load_face68(name) if name in ("dlib", "mediapipe") else None
    results = []
    for path in paths:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image file {path!r} (missing or not an image)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        p = predict_image(rgb, bundle, face_model, detector=detector, face68=face68, focal=focal,
                          weighted=weighted, net=net)
        for msg in p["warnings"]:
            warnings.warn(f"{path}: {msg}", UserWarning, stacklevel=2)
        info = {"image": path, "detector": p["detector"], "face_found": p["face_found"], "warnings": p["warnings"]}
        if not p["face_found"]:
            results.append(info)
            continue
        stem = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0])
        overlay = draw_mesh(rgb, p["projected"], face_model.triangles)
        cv2.imwrite(stem + "_overlay.png", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        np.savez(stem + ".npz", R=p["R"], t=p["t"], vertices=p["vertices"], camera_vertices=p["camera_vertices"],
                 K=p["K"], status=p["status"], landmarks68=p["landmarks68"], projected68=p["projected68"])
        info.update({"R": p["R"].tolist(), "t": p["t"].tolist(), "K": p["K"].tolist(), "pnp_status": p["status"],
                     "landmarks68": p["landmarks68"].tolist(), "projected68": p["projected68"].tolist(),
                     "overlay": stem + "_overlay.png", "npz": stem + ".npz"})
        if "peak" in p:
            info["detector_peak"] = p["peak"]
        with open(stem + ".json", "w") as f:
            json.dump(info, f, indent=2)
        results.append(info)
    return results
