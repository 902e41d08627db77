"""A procedural linear morphable face model: template, identity and expression bases.

Built deterministically by code (no asset, no download) from the 2D layout of
:mod:`pyfacepnp.data.face_layout` and the displacement fields of
:mod:`pyfacepnp.data.face_bases`:

* 1220 vertices in metres in the WCPA canonical frame (``+x`` the face's left, ``+y`` up,
  ``+z`` out of the face; the origin lies about 5 cm behind the face's front plane,
  level with the middle of the nose), a triangle list (counter-clockwise seen from the front) and
  68 landmark vertex indices in the usual 68-point order.
* ``id_basis (40, 1220, 3)``: each component is the displacement of a one-standard-
  deviation change, so identity coefficients are ``~ N(0, 1)``.
* ``exp_basis (21, 1220, 3)``: blendshape-like displacements at full activation, so
  expression coefficients lie in ``[0, 1]`` (0 = neutral); see :data:`EXPRESSION_NAMES`.

``vertices = template + id @ id_basis + exp @ exp_basis``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from pyfacepnp.data import face_layout as L
from pyfacepnp.data.face_bases import EXPRESSION_NAMES, IDENTITY_NAMES, expression_basis, identity_basis, neutral_template

__all__ = ["FaceModel", "get_face_model", "build_face_model", "IDENTITY_NAMES", "EXPRESSION_NAMES"]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: the arrays are not hashable
class FaceModel:
    """The procedural morphable face model (numpy float32 arrays, read-only).

    Attributes:
        template: ``(1220, 3)`` neutral mean face, metres, WCPA canonical frame.
        id_basis: ``(40, 1220, 3)`` identity displacements per standard deviation.
        exp_basis: ``(21, 1220, 3)`` expression displacements at full activation.
        triangles: ``(T, 3)`` int64, counter-clockwise seen from the front (+z).
        landmark_indices: ``(68,)`` int64 vertex indices, 68-point order.
        texcoords: ``(1220, 2)`` texture coordinates in ``[0, 1]`` (x right, y down).
        layout: ``(1220, 2)`` layout coordinates ``(u, v)`` in metres.
        regions: per-vertex region names (``"eye_upper"``, ``"lip_inner_lower"``, ``"fill"``...).
        id_names, exp_names: component names.

    Example:
        >>> m = get_face_model()
        >>> m.vertices(np.zeros(40), np.zeros(21)).shape
        (1220, 3)
    """

    template: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    triangles: np.ndarray
    landmark_indices: np.ndarray
    texcoords: np.ndarray
    layout: np.ndarray
    regions: tuple = ()
    id_names: tuple = IDENTITY_NAMES
    exp_names: tuple = EXPRESSION_NAMES
    _torch_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_vertices(self) -> int:
        return self.template.shape[0]

    @property
    def num_id(self) -> int:
        return self.id_basis.shape[0]

    @property
    def num_exp(self) -> int:
        return self.exp_basis.shape[0]

    def vertices(self, id_coeffs=None, exp_coeffs=None):
        """Vertices for identity and expression coefficients.

        Args:
            id_coeffs: ``(..., K_id')`` with ``K_id' <= 40`` (missing trailing components
                are zero), or None for the mean identity.
            exp_coeffs: ``(..., K_exp')`` with ``K_exp' <= 21``, or None for neutral.
                Numpy arrays or torch tensors; batch shapes broadcast.

        Returns:
            ``(..., 1220, 3)`` vertices in metres: numpy float32 for numpy inputs, a torch
            tensor (dtype/device of the input, differentiable) for torch inputs.
        """
        args = [a for a in (id_coeffs, exp_coeffs) if a is not None]
        use_torch = any(isinstance(a, torch.Tensor) for a in args)
        parts = []
        for name, coeffs, basis in (("id_coeffs", id_coeffs, self.id_basis), ("exp_coeffs", exp_coeffs, self.exp_basis)):
            if coeffs is None:
                continue
            if coeffs.ndim < 1 or coeffs.shape[-1] > basis.shape[0]:
                raise ValueError(f"{name} must have shape (..., K) with K <= {basis.shape[0]}, got {tuple(coeffs.shape)}")
            parts.append((name, coeffs, basis[: coeffs.shape[-1]]))
        if use_torch:
            ref = next(a for a in args if isinstance(a, torch.Tensor))
            dtype = ref.dtype if ref.is_floating_point() else torch.float32
            out = self._torch("template", self.template, dtype, ref.device)
            for name, c, basis in parts:
                b = self._torch(f"{name}{basis.shape[0]}", basis, dtype, ref.device)
                c = torch.as_tensor(c, dtype=dtype, device=ref.device)
                out = out + (c @ b.reshape(b.shape[0], -1)).reshape(*c.shape[:-1], *self.template.shape)
            return out
        out = self.template
        for name, c, basis in parts:
            c = np.asarray(c, dtype=np.float32)
            out = out + (c @ basis.reshape(basis.shape[0], -1)).reshape(*c.shape[:-1], *self.template.shape)
        return np.asarray(out, dtype=np.float32)

    def _torch(self, key, array, dtype, device):
        k = (key, dtype, str(device))
        if k not in self._torch_cache:
            self._torch_cache[k] = torch.tensor(array, dtype=dtype, device=device)  # copy: arrays are read-only
        return self._torch_cache[k]


def build_face_model() -> FaceModel:
    """Build the model from scratch (deterministic; ~0.5 s). Prefer :func:`get_face_model`."""
    layout = L.build_layout()
    uv = layout["sites"]
    tris = L.triangulate(uv)
    P = neutral_template(uv)
    texcoords = (np.stack([uv[:, 0], -uv[:, 1]], -1) + L.TEXTURE_EXTENT) / (2 * L.TEXTURE_EXTENT)
    arrays = dict(
        template=P.astype(np.float32),
        id_basis=identity_basis(uv, P).astype(np.float32),
        exp_basis=expression_basis(uv, P).astype(np.float32),
        triangles=tris.astype(np.int64),
        landmark_indices=layout["landmarks"].astype(np.int64),
        texcoords=texcoords.astype(np.float32),
        layout=uv.astype(np.float32),
    )
    for a in arrays.values():
        a.setflags(write=False)
    return FaceModel(**arrays, regions=tuple(layout["kind"]))


@functools.lru_cache(maxsize=1)
def get_face_model() -> FaceModel:
    """The shared :class:`FaceModel` instance (built once per process)."""
    return build_face_model()
