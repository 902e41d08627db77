"""Textured mesh rendering: the public wrapper of the compiled rasteriser
(``torch.ops.pyfacepnp.render_mesh``, CPU, float32, no autograd)."""

from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import numpy as np
import torch

from pyfacepnp._ext import ops
from pyfacepnp.ops._checks import check_same, check_tensor

__all__ = ["RenderOutput", "render_mesh", "DEFAULT_LIGHTS", "DEFAULT_MATERIAL"]

#: One white light from the camera's upper left (OpenCV frame: -y is up), towards the scene.
DEFAULT_LIGHTS = np.array([[-0.3, -0.5, -1.0, 0.75, 0.75, 0.75]], dtype=np.float32)
#: Ambient RGB, specular strength, shininess.
DEFAULT_MATERIAL = np.array([0.35, 0.35, 0.35, 0.06, 24.0], dtype=np.float32)


class RenderOutput(NamedTuple):
    image: torch.Tensor  #: ``(H, W, 3)`` float32 in ``[0, 1]``, the mesh over the background
    depth: torch.Tensor  #: ``(H, W)`` camera-frame z of the visible surface, ``inf`` elsewhere
    triangle: torch.Tensor  #: ``(H, W)`` int64 index of the visible triangle, ``-1`` elsewhere


# Argument shapes as the kernel names them. Here the kind, the rank, the dtype and the device
# are checked; the fixed sizes and the cross-argument ones (V, the face indices) are the
# kernel's own checks (csrc/render/render_cpu.cpp), RuntimeErrors naming the argument.
_SHAPES = {"vertices": ("V", 3), "faces": ("F", 3), "texcoords": ("V", 2), "texture": ("Ht", "Wt", 3),
           "K": (3, 3), "background": ("H", "W", 3), "lights": ("L", 6), "material": (5,)}


def _as_tensor(name, x):
    """``x`` (numpy array or tensor) as a contiguous tensor of the rank of ``_SHAPES[name]``:
    int64 for ``faces``, else float32 (from float32 or float64)."""
    dims = _SHAPES[name]
    want = "(" + ", ".join(str(d) for d in dims) + (",)" if len(dims) == 1 else ")")
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.int64 if name == "faces" else np.float32)
        x = torch.from_numpy(x if x.flags.writeable else x.copy())  # torch wants writable memory
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor of shape {want}, got {type(x).__name__}")
    if x.dim() != len(dims):
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if name == "faces":
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"faces must hold integer vertex indices, got {x.dtype}")
        return x.to(torch.int64).contiguous()
    check_tensor(name, x, [str(d) for d in dims])
    return x.to(torch.float32).contiguous()


def render_mesh(
    vertices,
    faces,
    texcoords,
    texture,
    K,
    background: Union[torch.Tensor, np.ndarray, Sequence[int]],
    lights=DEFAULT_LIGHTS,
    material=DEFAULT_MATERIAL,
) -> RenderOutput:
    """Render a textured triangle mesh with a z-buffer and per-pixel Blinn-Phong shading.

    Pixel centres are at integer image coordinates (origin at the centre of the top-left
    pixel), so rendering with ``K_crop = [A; 0 0 1] @ K`` gives the crop that
    ``cv2.warpAffine(image, A, ...)`` would cut from the full render. Attributes
    (normals, texture coordinates) are interpolated perspective-correctly; vertex
    normals are area-weighted averages of the face normals and are turned towards the
    camera, so an open mesh seen from behind is lit like its front. Triangles with a
    vertex closer than 1 mm to the camera plane are skipped (no clipping). No anti-aliasing.

    Args:
        vertices: ``(V, 3)`` camera-frame points (OpenCV: ``+z`` forward, ``+y`` down).
        faces: ``(F, 3)`` vertex indices.
        texcoords: ``(V, 2)`` texture coordinates in ``[0, 1]`` (``x`` right, ``y`` down).
        texture: ``(Ht, Wt, 3)`` albedo in ``[0, 1]``, sampled bilinearly.
        K: ``(3, 3)`` intrinsics with last row ``[0, 0, 1]``.
        background: ``(H, W, 3)`` image to draw over, or ``(H, W)`` for a black one.
        lights: ``(L, 6)`` directions towards each light (camera frame) and RGB intensity.
        material: ``(5,)`` ambient RGB, specular strength, shininess.

    Returns:
        :class:`RenderOutput` with ``image (H, W, 3)``, ``depth (H, W)``, ``triangle (H, W)``.

    Example:
        >>> v = torch.tensor([[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [0.0, 0.1, 1.0]])
        >>> K = torch.tensor([[100.0, 0, 16], [0, 100.0, 16], [0, 0, 1]])
        >>> out = render_mesh(v, torch.tensor([[0, 1, 2]]), torch.zeros(3, 2), torch.ones(1, 1, 3), K, (32, 32))
        >>> int((out.triangle == 0).sum()) > 0
        True
    """
    if isinstance(background, (tuple, list)):
        if len(background) != 2:
            raise ValueError(f"background must be an (H, W, 3) image or an (H, W) size, got {background!r}")
        background = torch.zeros(int(background[0]), int(background[1]), 3)
    names = ("vertices", "faces", "texcoords", "texture", "K", "background", "lights", "material")
    inputs = [_as_tensor(n, x) for n, x in
              zip(names, (vertices, faces, texcoords, texture, K, background, lights, material))]
    check_same(["vertices", "texcoords", "texture", "K", "background", "lights", "material"],
               [x for n, x in zip(names, inputs) if n != "faces"])
    for name, x in zip(names[:2], inputs[:2]):
        if x.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU (render_mesh has a CPU kernel only), got {x.device}")
    return RenderOutput(*ops.render_mesh(*inputs))
