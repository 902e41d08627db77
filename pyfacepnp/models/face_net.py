"""The two-branch face network: shared backbone, mesh head and dense landmark head."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyfacepnp.models.backbone import ResNetBackbone, SpatialPool
from pyfacepnp.geometry.camera import normalized_to_pixels, pixels_to_normalized

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

    With ``readout_features > 0`` an identity readout adds a linear map of the head's hidden
    features and ``readout_features`` more (the landmark head's hidden features) to the
    identity coefficients. It starts at zero; :func:`pyfacepnp.train.readout.fit_identity_readout`
    sets it in closed form after stage 1: the identity is a faint, mostly unexplained part of
    each image, and stochastic gradients on its coefficients learn next to nothing of it,
    while a least-squares fit over the whole training split finds what the features hold.

    Args:
        c_in: input feature size.
        hidden: hidden layer width.
        template: ``(N, 3)`` mean shape in metres.
        id_basis: ``(K_id, N, 3)``; exp_basis: ``(K_exp, N, 3)``.
        readout_features: size of the extra readout input (0: no identity readout).
    """

    def __init__(self, c_in: int, hidden: int, template, id_basis, exp_basis,
                 readout_features: int = 0) -> None:
        super().__init__()
        template = torch.tensor(np.array(template), dtype=torch.float32)
        basis = torch.cat([torch.tensor(np.array(id_basis), dtype=torch.float32),
                           torch.tensor(np.array(exp_basis), dtype=torch.float32)], 0)
        self.num_id = int(np.asarray(id_basis).shape[0])
        self.register_buffer("template", template)
        self.register_buffer("basis", basis.reshape(basis.shape[0], -1))
        self.mlp = _mlp(c_in, hidden, basis.shape[0])
        self.readout = None
        if readout_features > 0:
            self.readout = nn.Linear(hidden + readout_features, self.num_id)
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)

    def decode(self, coeffs: torch.Tensor) -> torch.Tensor:
        """``(B, K_id + K_exp)`` coefficients -> ``(B, N, 3)`` canonical vertices (metres)."""
        flat = coeffs.float() @ self.basis
        return self.template + flat.reshape(coeffs.shape[0], -1, 3)

    def forward(self, feat: torch.Tensor, readout_input: torch.Tensor | None = None) -> dict:
        """``{"coeffs": (B, K)}`` and, with a readout, its input ``readout_features``
        (decode the coefficients with :meth:`decode`)."""
        hidden = self.mlp[1](self.mlp[0](feat))
        coeffs = self.mlp[2](hidden).float()
        out = {}
        if self.readout is not None:
            z = torch.cat([hidden, readout_input], -1)
            coeffs = coeffs + F.pad(self.readout(z).float(), (0, coeffs.shape[-1] - self.num_id))
            out["readout_features"] = z
        return {"coeffs": coeffs, **out}


def soft_clamp_log_var(raw: torch.Tensor) -> torch.Tensor:
    """Log-variances soft-clamped to ``LOGVAR_CENTER +- LOGVAR_RANGE``."""
    return LOGVAR_CENTER + LOGVAR_RANGE * torch.tanh(raw / LOGVAR_RANGE)


class LandmarkHead(nn.Module):
    """Regresses the crop pixel of every vertex and its (raw, unclamped) log-variance.

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

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crop pixels ``(B, N, 2)``, raw (unclamped) log-variances and the hidden features."""
        hidden = self.mlp[1](self.mlp[0](feat))
        out = self.mlp[2](hidden).float()
        n = self.num_points
        lm = normalized_to_pixels(out[:, : 2 * n].reshape(-1, n, 2), self.crop_size)
        raw = out[:, 2 * n:]
        raw = raw.reshape(-1, n, 2) if self.sigma == "per_axis" else raw.reshape(-1, n)
        return lm, raw, hidden


class LandmarkRefiner(nn.Module):
    """Per-vertex corrections read from the backbone's feature maps at each landmark.

    The fully connected head sees the face only through a coarse pooled grid and its errors
    are smooth fields that shrink towards the mean pose; this head samples the feature maps
    (bilinearly) where each vertex is thought to be, adds a learned per-vertex code, and
    maps that, with one small MLP shared by all vertices, to a pixel offset and a
    log-variance correction. The sampling location carries no gradient (the offset does).

    Args:
        map_channels: channels of the sampled maps; num_points: N; crop_size: crop side.
        sigma: as :class:`LandmarkHead`; hidden: MLP width; code: per-vertex code size.
        step_px: pixels per unit of the offset output.
    """

    def __init__(self, map_channels: Sequence[int], num_points: int, crop_size: int,
                 sigma: str = "per_axis", hidden: int = 64, code: int = 16, step_px: float = 4.0) -> None:
        super().__init__()
        self.crop_size, self.step_px = crop_size, step_px
        self.n_var = 2 if sigma == "per_axis" else 1
        self.code = nn.Parameter(0.1 * torch.randn(num_points, code))
        self.mlp = nn.Sequential(nn.Linear(sum(map_channels) + code, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2 + self.n_var))
        nn.init.zeros_(self.mlp[-1].weight)  # start as the identity: the coarse answer
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, maps: Sequence[torch.Tensor], landmarks: torch.Tensor,
                raw_log_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = pixels_to_normalized(landmarks.detach(), self.crop_size).to(maps[0].dtype)[:, :, None, :]
        feats = [F.grid_sample(m, grid, align_corners=False, padding_mode="border")[..., 0].transpose(1, 2)
                 for m in maps]
        code = self.code.to(feats[0].dtype).expand(landmarks.shape[0], -1, -1)
        out = self.mlp(torch.cat(feats + [code], -1)).float()
        d_var = out[..., 2:] if self.n_var == 2 else out[..., 2]
        return landmarks + self.step_px * out[..., :2], raw_log_var + d_var


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
        refine_maps: backbone stages a :class:`LandmarkRefiner` samples (``()``: none).
        identity_readout: give the mesh head an identity readout of both heads' hidden
            features (:class:`MeshHead`).

    Returns (forward):
        dict with ``coeffs (B, K)``, ``vertices (B, N, 3)`` metres, ``landmarks (B, N, 2)``
        crop pixels, ``log_var (B, N, 2)`` or ``(B, N)`` in crop px^2 (and, with an
        identity readout, ``readout_features (B, 2 * head_hidden)``).

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
                 pool_grid: int = 4, refine_maps: Sequence[int] = (), identity_readout: bool = False) -> None:
        super().__init__()
        self.crop_size = crop_size
        self.backbone = ResNetBackbone(widths, depths, stem_width, strides=strides)
        self.pool_mesh = SpatialPool(self.backbone.out_channels, grid=pool_grid)
        self.pool_lm = SpatialPool(self.backbone.out_channels, grid=pool_grid)
        n = int(np.asarray(face_model.template).shape[0])
        self.mesh_head = MeshHead(self.pool_mesh.out_features, head_hidden, face_model.template,
                                  face_model.id_basis, face_model.exp_basis,
                                  readout_features=head_hidden if identity_readout else 0)
        self.landmark_head = LandmarkHead(self.pool_lm.out_features, head_hidden, n, crop_size, sigma)
        self.refine_maps = tuple(int(i) for i in refine_maps)
        self.refiner = None
        if self.refine_maps:
            channels = [self.backbone.stage_channels[i] for i in self.refine_maps]
            self.refiner = LandmarkRefiner(channels, n, crop_size, sigma)

    def forward(self, crop: torch.Tensor) -> dict:
        if crop.dim() != 4 or crop.shape[1] != 3 or crop.shape[-1] != self.crop_size:
            raise ValueError(f"crop must have shape (B, 3, {self.crop_size}, {self.crop_size}), "
                             f"got {tuple(crop.shape)}")
        maps = self.backbone.stage_outputs(normalize_image(crop))
        feat = maps[-1]
        landmarks, raw_log_var, lm_hidden = self.landmark_head(self.pool_lm(feat))
        mesh = self.mesh_head(self.pool_mesh(feat), lm_hidden)
        coeffs = mesh["coeffs"]
        if self.refiner is not None:
            landmarks, raw_log_var = self.refiner([maps[i] for i in self.refine_maps], landmarks, raw_log_var)
        log_var = soft_clamp_log_var(raw_log_var)
        # the decoding is geometry: keep it in float32 under autocast
        with torch.autocast(device_type=crop.device.type, enabled=False):
            vertices = self.mesh_head.decode(coeffs)
        out = {"coeffs": coeffs, "vertices": vertices, "landmarks": landmarks, "log_var": log_var}
        if "readout_features" in mesh:
            out["readout_features"] = mesh["readout_features"]
        return out


def normalize_image(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (float) or [0, 255] (uint8) -> roughly zero-mean, unit-scale input."""
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return (x - 0.5) * 4.0


__all__ = ["FaceNet", "MeshHead", "LandmarkHead", "LandmarkRefiner", "normalize_image", "soft_clamp_log_var",
           "LOGVAR_CENTER", "LOGVAR_RANGE"]
