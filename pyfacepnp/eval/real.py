"""Real photographs: the ones installed packages ship, the classical pose of a 68-point
detection, and the synthetic-to-real gap of the pipeline (docs/real_photos.md).

Nothing here downloads anything. The reference on a real photograph is a pretrained 68-point
detector (:mod:`pyfacepnp.models.pretrained`); errors are in percent of its inter-ocular
distance (outer eye corners, points 36 and 45), the usual 300-W normalisation.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import torch

import pyfacepnp
from pyfacepnp.geometry.camera import project_points
from pyfacepnp.geometry.rotation import rotation_error_deg
from pyfacepnp.models.pretrained import interocular_distance

__all__ = ["PHOTOS", "REGIONS", "RealPhoto", "real_photos", "landmark_errors", "classical_pose",
           "measure_photo", "gap_figure"]

# name -> (package that ships it, how it is loaded, what it is and its licence)
PHOTOS = {
    "astronaut": ("skimage", "skimage.data.astronaut()",
                  "Eileen Collins, NASA portrait (scikit-image sample data): public domain, "
                  "no known copyright restrictions"),
    "grace_hopper": ("matplotlib", "matplotlib.cbook.get_sample_data('grace_hopper.jpg')",
                     "Grace Hopper, official U.S. Navy portrait (matplotlib sample data): public domain, "
                     "a work of the U.S. federal government"),
}

# The 68 points by part of the face (iBUG 300-W order).
REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
           "mouth": range(48, 68)}


@dataclass(frozen=True)
class RealPhoto:
    """A real photograph shipped by an installed package.

    Attributes:
        name: key of :data:`PHOTOS`; rgb: ``(H, W, 3)`` uint8; source: how it is loaded;
        licence: what it shows and its licence.
    """

    name: str
    rgb: np.ndarray
    source: str
    licence: str


def _load(name: str) -> np.ndarray:
    if name == "astronaut":
        import skimage.data

        return np.ascontiguousarray(skimage.data.astronaut())
    if name == "grace_hopper":
        import cv2
        from matplotlib import cbook

        bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    raise ValueError(f"unknown photo {name!r}; known: {sorted(PHOTOS)}")


def real_photos(names=None) -> list[RealPhoto]:
    """The photographs of :data:`PHOTOS` (or of ``names``) whose package is installed."""
    out = []
    for name in names or PHOTOS:
        package, source, licence = PHOTOS[name]
        if importlib.util.find_spec(package) is None:
            continue
        out.append(RealPhoto(name, _load(name), source, licence))
    return out


def landmark_errors(pred, ref) -> np.ndarray:
    """``(..., 68)`` point-to-point distances in percent of the reference's inter-ocular distance."""
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    return 100.0 * np.linalg.norm(pred - ref, axis=-1) / interocular_distance(ref)[..., None]


def classical_pose(points68, K, face_model) -> dict:
    """The classical head pose: ``solve_pnp`` of the face model's 68 landmark vertices (the
    mean shape, no network) onto 68 detected points.

    Args:
        points68: ``(68, 2)`` image pixels (iBUG 300-W order).
        K: ``(3, 3)`` image intrinsics.
        face_model: :class:`~pyfacepnp.data.face_model.FaceModel`.

    Returns:
        dict with ``R (3, 3)``, ``t (3,)`` (float64 numpy, OpenCV convention), ``status``,
        ``projected68 (68, 2)`` and ``errors (68,)`` (percent of the inter-ocular distance).
    """
    X = torch.as_tensor(face_model.template[face_model.landmark_indices], dtype=torch.float64)
    x = torch.as_tensor(np.asarray(points68), dtype=torch.float64)
    Kt = torch.as_tensor(np.asarray(K), dtype=torch.float64)
    res = pyfacepnp.solve_pnp(X[None], x[None], Kt[None])
    proj = project_points(X, res.R[0], res.t[0], Kt).numpy()
    return {"R": res.R[0].numpy(), "t": res.t[0].numpy(), "status": int(res.status[0]), "projected68": proj,
            "errors": landmark_errors(proj, points68)}


def _median(e) -> float:
    return float(np.median(e))


def measure_photo(photo: RealPhoto, bundle: dict, face_model, reference, net: str = "stage2") -> dict:
    """The synthetic-to-real gap on one photograph.

    ``reference`` is a loaded pretrained detector (:func:`pyfacepnp.models.pretrained.load_face68`);
    its 68 points are the reference. Measured (medians over the 68 points, percent of the
    inter-ocular distance): the learned detector's landmarks, the pipeline's projected 68
    landmark vertices with the learned detector's crop and with the reference's crop, and the
    classical pose's projection; the rotation between the pipeline's pose (reference crop)
    and the classical pose; per-region medians of the pipeline with the reference crop.

    Returns:
        dict of plain numbers and lists (JSON-ready) plus the arrays under ``"arrays"``.
    """
    from pyfacepnp.eval.predict import predict_image

    face = reference(photo.rgb)
    if face is None:
        return {"photo": photo.name, "face_found": False}
    ref = face.points
    learned = predict_image(photo.rgb, bundle, face_model, detector="learned", net=net)
    real = predict_image(photo.rgb, bundle, face_model, detector=face.detector, face68=reference, net=net)
    classical = classical_pose(ref, real["K"], face_model)
    e_pipe = landmark_errors(real["projected68"], ref)
    out = {
        "photo": photo.name, "face_found": True, "reference": face.detector,
        "image_size": list(photo.rgb.shape[:2]), "interocular_px": float(interocular_distance(ref)),
        "learned_detector": _median(landmark_errors(learned["landmarks68"], ref)),
        "pipeline_learned_crop": _median(landmark_errors(learned["projected68"], ref)),
        "pipeline_reference_crop": _median(e_pipe),
        "classical_fit": _median(classical["errors"]),
        "pipeline_regions": {k: _median(e_pipe[list(v)]) for k, v in REGIONS.items()},
        "classical_regions": {k: _median(classical["errors"][list(v)]) for k, v in REGIONS.items()},
        "rotation_vs_classical_deg": float(rotation_error_deg(torch.from_numpy(real["R"]).double(),
                                                              torch.from_numpy(classical["R"]))),
        "learned_rotation_vs_classical_deg": float(rotation_error_deg(torch.from_numpy(learned["R"]).double(),
                                                                      torch.from_numpy(classical["R"]))),
        "t_pipeline": real["t"].tolist(), "t_classical": classical["t"].tolist(), "t_learned": learned["t"].tolist(),
        "learned_peak": learned["peak"], "learned_warned": bool(learned["warnings"]),
        "pnp_status": real["status"], "classical_status": classical["status"],
    }
    out["arrays"] = {"reference": ref, "learned": learned, "real": real, "classical": classical}
    return out


def gap_figure(photo: RealPhoto, result: dict, face_model, width: int = 480) -> np.ndarray:
    """Two square panels, ``width`` pixels wide in all: left, the learned detector's 68
    points (red) and the mesh it leads to (around both and the reference's points); right,
    around the face, the reference detector's 68 points (green), the pipeline's mesh from the
    reference crop (blue) and its projected 68 landmark vertices (yellow). RGB uint8."""
    import cv2

    from pyfacepnp.draw import draw_mesh

    a = result["arrays"]
    ref, learned, real = a["reference"], a["learned"], a["real"]
    h, w = photo.rgb.shape[:2]
    panel_w = width // 2

    def panel(points, mesh_px, mesh_color, point_sets):
        # a square around ``points`` (half as wide again), inside the photograph
        lo, hi = np.nanmin(points, 0), np.nanmax(points, 0)
        half = min(0.75 * float((hi - lo).max()), 0.5 * min(h, w))
        c = np.clip(0.5 * (lo + hi), half, [w - half, h - half])
        x0, y0, side = int(c[0] - half), int(c[1] - half), int(2 * half)
        scale = panel_w / side
        img = draw_mesh(photo.rgb, mesh_px, face_model.triangles, color=mesh_color, alpha=0.35)
        img = cv2.resize(img[y0:y0 + side, x0:x0 + side], (panel_w, panel_w), interpolation=cv2.INTER_AREA)
        for p, color in point_sets:
            for q in (np.asarray(p) - [x0, y0]) * scale:
                if np.isfinite(q).all():
                    cv2.circle(img, (int(round(q[0])), int(round(q[1]))), 2, color, -1, cv2.LINE_AA)
        return img

    left = panel(np.concatenate([ref, learned["landmarks68"], learned["projected68"]]), learned["projected"],
                 (255, 80, 80), [(learned["landmarks68"], (255, 0, 0))])
    right = panel(np.concatenate([ref, real["projected68"]]), real["projected"], (80, 140, 255),
                  [(ref, (0, 230, 0)), (real["projected68"], (255, 230, 0))])
    return np.concatenate([left, right], axis=1)
