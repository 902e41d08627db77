"""The two-branch face network: shared backbone, mesh head and dense landmark head."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from pyfacepnp.models.backbone import ResNetBackbone, SpatialPool
from pyfacepnp.geometry.camera import normalized_to_pixels

# Log-variances are soft-clamped to LOGVAR_CENTER +- LOGVAR_RANGE (px^2): sigma from ~0.03 px
# to ~33 px, so 1/sigma^2 PnP weights stay finite and the NLL cannot run away.
LOGVAR_CENTER = 0.0
LOGVAR_RANGE = 7.0


def _mlp(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    head = nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c_out))
    nn.init.zeros_(head[-1].weight)  # start from the bias: the mean shape / mean landmarks
    nn.init.zeros_(head[-1].bias)
    return head


class MeshHead(nn.Module):
    """Regresses identity and expression coefficients and decodes canonical vertices.

    ``vertices = template + id_coeffs . id_basis + exp_coeffs . exp_basis`` with the face
    model's bases held as buffers (they move with the module and are saved with it).

    Args:
        c_in: input feature size.
        hidden: hidden layer width.
        template: ``(N, 3)`` mean shape in metres.
        id_basis: ``(K_id, N, 3)``; exp_basis: ``(K_exp, N, 3)``.
    """

    def __init__(self, c_in: int, hidden: int, template, id_basis, exp_basis) -> None:
        super().__init__()
        template = torch.tensor(np.array(template), dtype=torch.float32)
        basis = torch.cat([torch.tensor(np.array(id_basis), dtype=torch.float32),
                           torch.tensor(np.array(exp_basis), dtype=torch.float32)], 0)
        self.num_id = int(np.asarray(id_basis).shape[0])
        self.register_buffer("template", template)
        self.register_buffer("basis", basis.reshape(basis.shape[0], -1))
        self.mlp = _mlp(c_in, hidden, basis.shape[0])

    def decode(self, coeffs: torch.Tensor) -> torch.Tensor:
        """``(B, K_id + K_exp)`` coefficients -> ``(B, N, 3)`` canonical vertices (metres)."""
        flat = coeffs.float() @ self.basis
        return self.template + flat.reshape(coeffs.shape[0], -1, 3)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coeffs = self.mlp(feat).float()
        return coeffs, self.decode(coeffs)


class LandmarkHead(nn.Module):
    """Regresses the crop pixel of every vertex and its log-variance.

    Args:
        c_in: input feature size; hidden: hidden width; num_points: N (1220).
        crop_size: side of the input crop in pixels (outputs are crop pixels).
        sigma: ``"per_axis"`` -> log-variance ``(B, N, 2)``; ``"per_point"`` -> ``(B, N)``.
    """

    def __init__(self, c_in: int, hidden: int, num_points: int, crop_size: int,
                 sigma: str = "per_axis") -> None:
        super().__init__()
        if sigma not in ("per_axis", "per_point"):
            raise ValueError(f"sigma must be 'per_axis' or 'per_point', got {sigma!r}")
        self.num_points, self.crop_size, self.sigma = num_points, crop_size, sigma
        n_var = num_points * (2 if sigma == "per_axis" else 1)
        self.mlp = _mlp(c_in, hidden, num_points * 2 + n_var)

    def set_mean_landmarks(self, mean_px: torch.Tensor) -> None:
        """Start the position outputs at ``mean_px`` ``(N, 2)`` crop pixels (e.g. the train mean)."""
        n = self.num_points
        norm = (mean_px.float() + 0.5) * (2.0 / self.crop_size) - 1.0
        with torch.no_grad():
            self.mlp[-1].bias[: 2 * n] = norm.reshape(-1).to(self.mlp[-1].bias)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(feat).float()
        n = self.num_points
        lm = normalized_to_pixels(out[:, : 2 * n].reshape(-1, n, 2), self.crop_size)
        raw = out[:, 2 * n:]
        log_var = LOGVAR_CENTER + LOGVAR_RANGE * torch.tanh(raw / LOGVAR_RANGE)
        log_var = log_var.reshape(-1, n, 2) if self.sigma == "per_axis" else log_var.reshape(-1, n)
        return lm, log_var


class FaceNet(nn.Module):
    """Two-branch face network on a face crop (the paper's model).

    A shared ResNet backbone feeds (1) a mesh head: PCA coefficients of the face model
    decoded to canonical vertices, and (2) a landmark head: the crop pixel of every vertex
    plus a log-variance. Pose is not regressed: it comes from PnP between the two outputs
    (see :func:`pyfacepnp.models.pose.solve_pose`).

    Args:
        face_model: object with ``template (N,3)``, ``id_basis (K_id,N,3)``,
            ``exp_basis (K_exp,N,3)`` arrays (``pyfacepnp.data.face_model.FaceModel``).
        crop_size: input crop side in pixels.
        widths, depths, stem_width, strides: backbone stages (see :class:`ResNetBackbone`).
        head_hidden: hidden width of both heads.
        pool_grid: side of the pooled feature grid the heads read.
        sigma: ``"per_axis"`` or ``"per_point"`` log-variances.

    Returns (forward):
        dict with ``coeffs (B, K)``, ``vertices (B, N, 3)`` metres, ``landmarks (B, N, 2)``
        crop pixels, ``log_var (B, N, 2)`` or ``(B, N)`` in crop px^2.

    Example:
        >>> from types import SimpleNamespace
        >>> fm = SimpleNamespace(template=np.zeros((10, 3)), id_basis=np.ones((2, 10, 3)),
        ...                      exp_basis=np.ones((1, 10, 3)))
        >>> net = FaceNet(fm, crop_size=32, widths=(8, 8), depths=(1, 1), stem_width=8,
        ...               head_hidden=16)
        >>> out = net(torch.rand(2, 3, 32, 32))
        >>> out["vertices"].shape, out["landmarks"].shape, out["log_var"].shape
        (torch.Size([2, 10, 3]), torch.Size([2, 10, 2]), torch.Size([2, 10, 2]))
    """

    def __init__(self, face_model, crop_size: int, widths: Sequence[int] = (16, 32, 64, 128),
                 depths: Sequence[int] = (1, 1, 1, 1), stem_width: int = 16,
                 head_hidden: int = 256, sigma: str = "per_axis", strides: Sequence[int] | None = None,
                 pool_grid: int = 4) -> None:
        super().__init__()
        self.crop_size = crop_size
        self.backbone = ResNetBackbone(widths, depths, stem_width, strides=strides)
        self.pool_mesh = SpatialPool(self.backbone.out_channels, grid=pool_grid)
        self.pool_lm = SpatialPool(self.backbone.out_channels, grid=pool_grid)
        n = int(np.asarray(face_model.template).shape[0])
        self.mesh_head = MeshHead(self.pool_mesh.out_features, head_hidden, face_model.template,
                                  face_model.id_basis, face_model.exp_basis)
        self.landmark_head = LandmarkHead(self.pool_lm.out_features, head_hidden, n, crop_size, sigma)

    def forward(self, crop: torch.Tensor) -> dict:
        if crop.dim() != 4 or crop.shape[1] != 3 or crop.shape[-1] != self.crop_size:
            raise ValueError(f"crop must have shape (B, 3, {self.crop_size}, {self.crop_size}), "
                             f"got {tuple(crop.shape)}")
        feat = self.backbone(normalize_image(crop))
        coeffs, vertices = self.mesh_head(self.pool_mesh(feat))
        landmarks, log_var = self.landmark_head(self.pool_lm(feat))
        # the decoding is geometry: keep it in float32 under autocast
        with torch.autocast(device_type=crop.device.type, enabled=False):
            vertices = self.mesh_head.decode(coeffs)
        return {"coeffs": coeffs, "vertices": vertices, "landmarks": landmarks, "log_var": log_var}


def normalize_image(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (float) or [0, 255] (uint8) -> roughly zero-mean, unit-scale input."""
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return (x - 0.5) * 4.0


__all__ = ["FaceNet", "MeshHead", "LandmarkHead", "normalize_image",
           "LOGVAR_CENTER", "LOGVAR_RANGE"]
