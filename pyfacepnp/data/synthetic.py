"""The embedded synthetic face dataset: random faces of the procedural model rendered under
the WCPA pose and camera statistics.

Every sample is a pure function of ``(split, seed, index)``: the random streams are
seeded from those numbers only, so a sample is the same in any worker, in any order, with
or without the full frame rendered. By default every sample is its own identity (drawn
from the split's stream, so ``train``, ``val`` and ``test`` never share one); with
``num_identities`` the identities come from a per-split pool of that size. An identity fixes the shape coefficients and the
skin, hair and eye colours, while expression, pose, lighting, background, occluders and
image degradations are drawn per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pyfacepnp.data import appearance as ap
from pyfacepnp.data import imaging
from pyfacepnp.data.face_model import EXPRESSION_NAMES, FaceModel, get_face_model
from pyfacepnp.data.head import head_mesh
from pyfacepnp.geometry.camera import WCPA_FOCAL, crop_intrinsics, project_points, resize_affine, wcpa_intrinsics
from pyfacepnp.geometry.conventions import opencv_to_wcpa, wcpa_rotation_from_euler, wcpa_to_opencv
from pyfacepnp.geometry.crop import apply_affine, compose_affines, crop_affine_from_landmarks, jitter_affine
from pyfacepnp.geometry.transforms import transform_points
from pyfacepnp.ops.render import render_mesh

__all__ = ["SyntheticFaceDataset", "FaceScene", "PoseStats", "SPLITS"]

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class PoseStats:
    """Pose distribution in the WCPA convention (radians, metres). Defaults follow the
    challenge's training set (means and standard deviations of pitch, yaw, roll and the
    translation of ``R_t``); angles are truncated at ``max_angle`` by rejection."""

    mean_pyr: tuple = (-0.018, -0.018, 0.025)
    std_pyr: tuple = (0.3, 0.3, 0.08)
    mean_t: tuple = (-0.005, 0.001, -0.532)
    std_t: tuple = (0.022, 0.049, 0.065)
    max_angle: float = 1.0
    tz_range: tuple = (-0.75, -0.36)


@dataclass
class FaceScene:
    """Everything that defines one synthetic sample (before rendering)."""

    index: int
    identity: int
    id_coeffs: np.ndarray  # (40,)
    exp_coeffs: np.ndarray  # (21,)
    R_t: np.ndarray  # (4, 4) WCPA
    focal: float
    palette: np.ndarray  # (layers, 3)
    hair: tuple  # (hair_line metres, coverage) of the head behind the face
    lights: np.ndarray
    material: np.ndarray
    background: np.ndarray  # (160, 160, 3) pattern over the full frame
    occluders: list  # in full-frame pixels at the dataset's image_size
    blur_sigma: float  # full-frame pixels at 800x800
    noise_sigma: float
    crop_jitter: Optional[np.ndarray]  # (2, 3) composed jitter, or None


# Probability that each expression is active in a sample; value ~ U(0, 1) ** 1.3.
_EXP_PROB = dict.fromkeys(EXPRESSION_NAMES, 0.15)
_EXP_PROB.update(jaw_open=0.4, smile_left=0.25, smile_right=0.25, brow_inner_up=0.2, brow_outer_up=0.2)
_EXCLUSIVE = (("jaw_left", "jaw_right"), ("mouth_left", "mouth_right"), ("mouth_pucker", "mouth_stretch"),
              ("eye_wide", "eye_squint"))


def _sample_expression(rng: np.random.Generator) -> np.ndarray:
    names = list(EXPRESSION_NAMES)
    c = np.zeros(len(names))
    for i, n in enumerate(names):
        if rng.random() < _EXP_PROB[n]:
            c[i] = rng.random() ** 1.3
    if rng.random() < 0.1:  # both eyes closed together
        v = rng.uniform(0.6, 1.0)
        c[names.index("blink_left")] = c[names.index("blink_right")] = v
    for a, b in _EXCLUSIVE:
        if c[names.index(a)] > 0 and c[names.index(b)] > 0:
            c[names.index(b if rng.random() < 0.5 else a)] = 0.0
    return c


def _sample_pose(rng: np.random.Generator, stats: PoseStats) -> np.ndarray:
    while True:
        pyr = rng.normal(stats.mean_pyr, stats.std_pyr)
        if np.all(np.abs(pyr[:2]) <= stats.max_angle):
            break
    t = rng.normal(stats.mean_t, stats.std_t)
    t[2] = np.clip(t[2], *stats.tz_range)
    R_t = np.eye(4)
    R_t[:3, :3] = wcpa_rotation_from_euler(*pyr)
    R_t[3, :3] = t
    return R_t


class SyntheticFaceDataset(Dataset):
    """Rendered faces of the procedural model with ground truth in both conventions.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint random streams and identities).
        num_samples: dataset length.
        seed: base seed; ``(split, seed, index)`` determines a sample.
        image_size: side of the full frame (the WCPA 800x800 camera scaled to it).
        crop_size: side of the face crop, rendered directly with ``K_crop``.
        render_image: also render the full frame (``image`` key); the crop never depends
            on it.
        render_crop: render the crop (``crop`` key; default True). The training cache
            cuts its crops from the full frame instead and turns this off, so nothing is
            rendered that is thrown away.
        num_identities: size of the split's identity pool; ``None`` or 0 (default): a new
            identity per sample (identity number = sample index).
        jitter: random crop jitter (default: on for ``train`` only).
        crop_margin: margin of :func:`crop_affine_from_landmarks`.
        occluder_prob, blur_prob, noise_prob: probabilities of the augmentations.
        focal_std: relative std of the focal length (0: the WCPA camera exactly).
        texture_size: side of the albedo texture.
        pose_stats: :class:`PoseStats`.
        head: render a coarse head and neck behind the face (:mod:`pyfacepnp.data.head`;
            not part of the ground truth).
        supersample: anti-aliasing factor of the crop (drawn this many times larger and
            area-averaged down; the render then costs supersample**2 as much); the full
            frame is always drawn at 1x.

    Each item is a dict of tensors: ``image (3, S, S)`` float32 in [0, 1] (only with
    ``render_image``), ``crop (3, C, C)``, ``crop_affine (2, 3)`` image-to-crop pixels,
    ``K (3, 3)`` of the full frame, ``K_crop (3, 3)``, ``landmarks68 (68, 2)`` image
    pixels, ``landmarks68_crop (68, 2)``, ``vertices (1220, 3)`` canonical metres, ``R
    (3, 3)`` and ``t (3,)`` in the OpenCV convention, ``R_t (4, 4)`` WCPA, ``id_coeffs
    (40,)``, ``exp_coeffs (21,)``, ``index`` and ``identity`` (int64).

    Example:
        >>> ds = SyntheticFaceDataset("val", num_samples=4, image_size=200, crop_size=64)
        >>> sorted(ds[0].keys())[:3], ds[0]["crop"].shape
        (['K', 'K_crop', 'R'], torch.Size([3, 64, 64]))
    """

    def __init__(self, split: str = "train", num_samples: int = 10000, seed: int = 0, image_size: int = 800,
                 crop_size: int = 256, render_image: bool = True, num_identities: Optional[int] = None,
                 render_crop: bool = True,
                 jitter: Optional[bool] = None, crop_margin: float = 0.25, occluder_prob: float = 0.3,
                 blur_prob: float = 0.3, noise_prob: float = 0.5, focal_std: float = 0.0,
                 texture_size: int = 256, pose_stats: PoseStats = PoseStats(), head: bool = True,
                 supersample: int = 1, model: Optional[FaceModel] = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        for name, val in (("num_samples", num_samples), ("image_size", image_size), ("crop_size", crop_size)):
            if int(val) != val or val < (0 if name == "num_samples" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'num_samples' else 'positive'} integer, got {val!r}")
        self.split, self.num_samples, self.seed = split, int(num_samples), int(seed)
        self.image_size, self.crop_size, self.render_image = int(image_size), int(crop_size), bool(render_image)
        if num_identities is not None and (int(num_identities) != num_identities or num_identities < 0):
            raise ValueError(f"num_identities must be a non-negative integer or None, got {num_identities!r}")
        self.num_identities = int(num_identities or 0)  # 0: one identity per sample
        self.render_crop = bool(render_crop)
        self.jitter = (split == "train") if jitter is None else bool(jitter)
        self.crop_margin = crop_margin
        self.occluder_prob, self.blur_prob, self.noise_prob = occluder_prob, blur_prob, noise_prob
        self.focal_std, self.texture_size, self.pose_stats = focal_std, texture_size, pose_stats
        self.head = bool(head)
        if int(supersample) != supersample or supersample < 1:
            raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
        self.supersample = int(supersample)
        self.model = model if model is not None else get_face_model()

    def __len__(self) -> int:
        return self.num_samples

    def _seed(self, *stream) -> np.random.SeedSequence:
        return np.random.SeedSequence([self.seed, SPLITS[self.split], *stream])

    def identity_params(self, identity: int):
        """``(id_coeffs (40,), palette, hair (hair_line, coverage))`` of an identity of
        this split's pool."""
        rng = np.random.default_rng(self._seed(1, identity))
        id_coeffs, palette = rng.standard_normal(self.model.num_id), ap.sample_palette(rng)
        hair = (float(rng.uniform(-0.02, 0.03)), 0.0 if rng.random() < 0.1 else 1.0)
        return id_coeffs, palette, hair

    def intrinsics(self, focal: float = WCPA_FOCAL) -> np.ndarray:
        return wcpa_intrinsics(self.image_size, focal)

    def scene(self, index: int) -> FaceScene:
        """The sampled (not yet rendered) content of item ``index``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for a dataset of {self.num_samples} samples")
        rng = np.random.default_rng(self._seed(0, index))
        identity = int(rng.integers(self.num_identities)) if self.num_identities else index
        id_coeffs, palette, hair = self.identity_params(identity)
        exp_coeffs = _sample_expression(rng)
        R_t = _sample_pose(rng, self.pose_stats)
        focal = WCPA_FOCAL * float(np.exp(rng.normal(0, self.focal_std))) if self.focal_std > 0 else WCPA_FOCAL
        lights, material = imaging.sample_lighting(rng)
        background = imaging.sample_background(rng)
        lm = self._landmarks(id_coeffs, exp_coeffs, R_t, focal)
        occluders = imaging.sample_occluders(rng, lm, self.occluder_prob)
        blur = float(rng.uniform(0.4, 2.0)) if rng.random() < self.blur_prob else 0.0
        noise = float(rng.uniform(0.005, 0.04)) if rng.random() < self.noise_prob else 0.0
        jitter = None
        if self.jitter:
            jitter = jitter_affine(np.eye(3)[:2], rng, self.crop_size, translate=0.04, scale=0.06, rotate=0.05)
        return FaceScene(index, identity, id_coeffs, exp_coeffs, R_t, focal, palette, hair, lights, material,
                         background, occluders, blur, noise, jitter)

    def _landmarks(self, id_coeffs, exp_coeffs, R_t, focal):
        V = self.model.vertices(id_coeffs, exp_coeffs)
        R, t = wcpa_to_opencv(R_t)
        return project_points(V[self.model.landmark_indices].astype(np.float64), R, t, self.intrinsics(focal))

    def crop_affine(self, scene: FaceScene, landmarks: np.ndarray) -> np.ndarray:
        A = crop_affine_from_landmarks(landmarks, self.crop_size, margin=self.crop_margin)
        if scene.crop_jitter is not None:
            A = compose_affines(scene.crop_jitter, A)
        return A

    def scene_mesh(self, scene: FaceScene, vertices: np.ndarray, R: np.ndarray, t: np.ndarray):
        """``(camera-frame vertices, faces, texcoords)`` to render: the face, and the head
        behind it when ``head`` is on (the face's vertices come first)."""
        verts, faces, uv = vertices, self.model.triangles, self.model.texcoords
        if self.head:
            hv, hf, huv = head_mesh(vertices, self.model, *scene.hair)
            verts = np.concatenate([vertices, hv])
            faces = np.concatenate([faces, hf])
            uv = np.concatenate([uv, huv])
        cam = transform_points(verts.astype(np.float64), R, t).astype(np.float32)
        return cam, faces, uv

    def render(self, scene: FaceScene, mesh, K: np.ndarray, frame_to_out: np.ndarray, out_size: int,
               noise_stream: int, texture: Optional[np.ndarray] = None, supersample: int = 1) -> np.ndarray:
        """Render ``(out_size, out_size, 3)`` float32 of a scene's ``mesh`` (from
        :meth:`scene_mesh`) seen through ``K`` (whose pixels relate to the full frame by
        ``frame_to_out``). With ``supersample = s > 1`` the scene is drawn at ``s`` times
        the size and area-averaged down (anti-aliasing); blur and noise come after."""
        if texture is None:
            texture = ap.texture_from_palette(scene.palette, self.texture_size)
        size, to_out = out_size, frame_to_out
        if supersample > 1:
            size = out_size * supersample
            up = np.vstack([resize_affine(out_size, size), [0.0, 0.0, 1.0]])
            K = up @ K
            to_out = compose_affines(up[:2], frame_to_out)
        background = imaging.warp_background(scene.background, to_out, self.image_size, size)
        cam, faces, uv = mesh
        out = render_mesh(cam, faces, uv, texture, K.astype(np.float32), background, scene.lights, scene.material)
        img = out.image.numpy()
        imaging.draw_occluders(img, scene.occluders, to_out)
        if supersample > 1:
            img = cv2.resize(img, (out_size, out_size), interpolation=cv2.INTER_AREA)
        scale = float(np.sqrt(abs(np.linalg.det(frame_to_out[:, :2]))))
        noise_seed = int(self._seed(2, scene.index, noise_stream).generate_state(1)[0])
        return imaging.degrade(img, noise_seed, scene.blur_sigma * self.image_size / 800.0, scene.noise_sigma, scale)

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, torch.Tensor):
            index = int(index)
        scene = self.scene(index)
        model = self.model
        V = model.vertices(scene.id_coeffs, scene.exp_coeffs)
        R, t = wcpa_to_opencv(scene.R_t)
        K = self.intrinsics(scene.focal)
        lm = project_points(V[model.landmark_indices].astype(np.float64), R, t, K)
        A = self.crop_affine(scene, lm)
        K_crop = crop_intrinsics(K, A)
        mesh = self.scene_mesh(scene, V, R, t)
        texture = ap.texture_from_palette(scene.palette, self.texture_size)
        f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
        item = {
            "crop_affine": f32(A),
            "K": f32(K),
            "K_crop": f32(K_crop),
            "landmarks68": f32(lm),
            "landmarks68_crop": f32(apply_affine(lm, A)),
            "vertices": torch.from_numpy(V.copy()),
            "R": f32(R),
            "t": f32(t),
            "R_t": f32(opencv_to_wcpa(R, t)),
            "id_coeffs": f32(scene.id_coeffs),
            "exp_coeffs": f32(scene.exp_coeffs),
            "index": torch.tensor(index, dtype=torch.int64),
            "identity": torch.tensor(scene.identity, dtype=torch.int64),
        }
        if self.render_crop:
            crop = self.render(scene, mesh, K_crop, A, self.crop_size, 1, texture, self.supersample)
            item["crop"] = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
        if self.render_image:
            image = self.render(scene, mesh, K, np.eye(3)[:2], self.image_size, 0, texture)
            item["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return item
