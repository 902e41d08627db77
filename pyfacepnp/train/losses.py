"""Training losses. Lengths in millimetres, pixels in crop pixels.

The loss terms (vertex and edge L1, the landmarks' Gaussian NLL, masked means), and each
stage's objective built from them: ``loss_fn(model, batch, generator) -> (loss, metrics)``
as :class:`~pyfacepnp.train.loop.Stage` runs it (augmentation of
:mod:`pyfacepnp.train.augment`, the forward pass, the loss). Stage 2's camera-space terms
are the WCPA distances of :func:`pyfacepnp.metrics.wcpa_terms` (differentiable), used
directly as losses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

import pyfacepnp
from pyfacepnp.config import RunConfig
from pyfacepnp.geometry.camera import pixels_to_normalized, project_to_crop
from pyfacepnp.metrics import wcpa_terms
from pyfacepnp.models.detector import heatmap_cross_entropy
from pyfacepnp.models.pose import pnp_weights, solve_pose
from pyfacepnp.train.augment import geometric_jitter, photometric
from pyfacepnp.train.loop import full_precision

MM = 1000.0  # metres -> millimetres


def vertex_l1(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean absolute vertex-coordinate error in mm, per sample ``(B,)``."""
    return (pred - gt).abs().mean(dim=(-1, -2)) * MM


def gaussian_nll(pred: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor,
                 beta: float = 0.0) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under N(pred, exp(log_var)), per sample ``(B,)``.

    ``log_var`` is per axis ``(B, N, 2)`` or per point ``(B, N)`` (isotropic 2D Gaussian);
    constants are dropped. Per point and axis, the minimiser is ``exp(log_var) = r^2``.
    ``beta > 0`` is the beta-NLL of Seitzer et al. (ICLR 2022): each term is weighted by
    ``sigma^(2 beta)`` (not differentiated), which keeps points with a large sigma from
    learning their position ever more slowly; the minimiser is unchanged.
    """
    r2 = (pred - target) ** 2
    if log_var.dim() == pred.dim():
        nll = 0.5 * (r2 * torch.exp(-log_var) + log_var)
        if beta > 0:
            nll = nll * torch.exp(beta * log_var.detach())
        return nll.mean(dim=(-1, -2))
    nll = 0.5 * r2.sum(-1) * torch.exp(-log_var) + log_var
    if beta > 0:
        nll = nll * torch.exp(beta * log_var.detach())
    return nll.mean(dim=-1) / 2.0


def edge_length_l1(pred: torch.Tensor, gt: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of mesh edge lengths in mm, per sample ``(B,)`` (``edges``
    from :func:`pyfacepnp.geometry.mesh.edges_from_triangles`)."""
    def lengths(v):
        return (v[..., edges[:, 0], :] - v[..., edges[:, 1], :]).norm(dim=-1)

    return (lengths(pred) - lengths(gt)).abs().mean(dim=-1) * MM


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (0 with a zero gradient path when the mask is empty).

    Masked-out entries are replaced (not multiplied) so a NaN in them cannot leak.
    """
    m = mask.to(values.dtype)
    safe = torch.where(mask, values, torch.zeros_like(values))
    return safe.sum() / m.sum().clamp_min(1.0)


def gt_crop_landmarks(batch: dict) -> torch.Tensor:
    """Crop pixels ``(B, N, 2)`` of every GT vertex (the landmark branch's target)."""
    return project_to_crop(batch["vertices"], batch["R"], batch["t"], batch["K"], batch["crop_affine"])


# ---------------------------------------------------------------- the stages' objectives
def detector_loss(model: nn.Module, batch: dict, gen: torch.Generator, heatmap_weight: float = 0.1):
    """L1 of the detector's normalised landmarks + heatmap cross-entropy; metric: mean
    error in frame pixels."""
    small = photometric(batch["small"], gen)
    pixels, logits = model(small, return_logits=True)
    with full_precision(small.device):
        pred = pixels_to_normalized(pixels.float(), small.shape[-1])  # it answers in input pixels
        size = batch["frame_size"].reshape(-1, 1, 1)
        target = pixels_to_normalized(batch["landmarks68"], size)
        loss = (pred - target).abs().mean() + heatmap_weight * heatmap_cross_entropy(logits.float(), target)
    with torch.no_grad():
        px = ((pred - target).norm(dim=-1) * size[..., 0] / 2.0).mean()
    return loss, {"lm68_px": float(px)}


def make_detector_loss(cfg: RunConfig, edges: torch.Tensor, scale_basis=None):
    """The detector stage's objective (:func:`detector_loss`; the arguments are unused)."""
    return detector_loss


def scale_free_shape(batch: dict, scale_basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground-truth shape and identity coefficients without the identity's scale
    component (coefficient 0, displacement ``scale_basis (N, 3)``): ``(vertices (B, N, 3),
    id_coeffs (B, K))``, the shape at the mean scale."""
    c0 = batch["id_coeffs"][:, :1]
    vertices = batch["vertices"] - c0[..., None] * scale_basis.to(batch["vertices"])
    id_coeffs = torch.cat([torch.zeros_like(c0), batch["id_coeffs"][:, 1:]], -1)
    return vertices, id_coeffs


def branch_losses(cfg: RunConfig, pred: dict, batch: dict, edges: torch.Tensor,
                  scale_basis: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Per-sample stage-1 loss ``(B,)`` and its metrics.

    With ``scale_basis`` (``train.scale_free``) the shape targets are
    :func:`scale_free_shape`'s; the landmark target stays the projection of the true shape.
    """
    tc = cfg.train
    target = gt_crop_landmarks(batch)
    gt_vertices, gt_id = batch["vertices"], batch.get("id_coeffs")
    if scale_basis is not None and gt_id is not None:
        gt_vertices, gt_id = scale_free_shape(batch, scale_basis)
    l_vert = vertex_l1(pred["vertices"], gt_vertices)
    l_nll = gaussian_nll(pred["landmarks"], pred["log_var"], target, beta=tc.nll_beta)
    l_edge = edge_length_l1(pred["vertices"], gt_vertices, edges)
    per_sample = tc.vertex_weight * l_vert + tc.nll_weight * l_nll + tc.edge_weight * l_edge
    if tc.coeff_weight > 0 and gt_id is not None:
        # Coefficients are ~unit scale, so each component gets a well-conditioned gradient;
        # the vertex L1 alone favours the few components with large displacements.
        gt_coeffs = torch.cat([gt_id, batch["exp_coeffs"]], -1)
        per_sample = per_sample + tc.coeff_weight * ((pred["coeffs"] - gt_coeffs) ** 2).mean(-1)
    with torch.no_grad():
        lm_px = (pred["landmarks"] - target).norm(dim=-1).mean()
        sigma = torch.exp(0.5 * pred["log_var"]).median()
    return per_sample, {"vertex_l1_mm": float(l_vert.detach().mean()), "nll": float(l_nll.detach().mean()),
                        "edge_mm": float(l_edge.detach().mean()), "lm_px": float(lm_px),
                        "sigma_px": float(sigma)}


def _face_net_objective(terms):
    """``loss_fn`` of a face-network stage: jitter, photometric augmentation, forward, then
    ``terms(pred, batch)`` in full precision."""
    def loss_fn(model, batch, gen):
        batch = geometric_jitter(batch, gen)
        pred = model(photometric(batch["crop"], gen))
        with full_precision(batch["crop"].device):
            return terms(pred, batch)

    return loss_fn


def make_stage1_loss(cfg: RunConfig, edges: torch.Tensor, scale_basis: torch.Tensor | None = None):
    """Stage 1's objective: the mean of :func:`branch_losses` (``scale_basis``: see there)."""
    def terms(pred, batch):
        per_sample, metrics = branch_losses(cfg, pred, batch, edges.to(batch["crop"].device), scale_basis)
        return per_sample.mean(), metrics

    return _face_net_objective(terms)


# The stage-2 loss terms whose value depends on the PnP's pose (so whose gradient flows
# through solve_pnp's backward): d(X1, X2) and d(X1, X3). d(X1, X4) (predicted shape under
# the GT pose) and the branch terms never touch the PnP.
PNP_TERMS = ("d12", "d13")


STAGE2_PNP_LOSSES = ("wcpa", "pose_nll")


def _pose_and_nll(pred: dict, batch: dict, max_iterations: int):
    """The solved pose (its R, t as a :class:`PoseOutput`-like pair), the Laplace NLL of the
    GT pose (:func:`pyfacepnp.pose_nll`, weights 1/sigma^2 in frame pixels) and its validity."""
    A = batch["crop_affine"].double()
    lm = pyfacepnp.warp_points(pred["landmarks"].double(), pyfacepnp.invert_affine(A))
    r = pyfacepnp.pose_nll(pred["vertices"].double(), lm, batch["K"].double(),
                           pnp_weights(pred["log_var"].double(), A),
                           R_target=batch["R"].double(), t_target=batch["t"].double(),
                           max_iterations=max_iterations)
    pose = _SolvedPose(r.result.R.float(), r.result.t.float())
    return pose, r.nll.float(), r.valid


class _SolvedPose(NamedTuple):
    R: torch.Tensor
    t: torch.Tensor


def stage2_weights(cfg: RunConfig, pnp_terms: bool = True) -> dict:
    """The weights of stage 2's camera-space terms ``{"d12", "d13", "d14"}``; with
    ``pnp_terms=False`` (the control arm c0) those of :data:`PNP_TERMS` are 0 and the rest
    unchanged."""
    tc = cfg.train
    w = {"d12": tc.camera_weight, "d13": tc.gt_shape_pose_weight, "d14": tc.shape_weight}
    if not pnp_terms:
        w.update(dict.fromkeys(PNP_TERMS, 0.0))
    return w


def make_stage2_loss(cfg: RunConfig, edges: torch.Tensor, pnp_terms: bool = True,
                     scale_basis: torch.Tensor | None = None):
    """Stage 2's objective: the WCPA camera-space distances through ``solve_pnp`` (weights
    1/sigma^2), averaged over the samples whose PnP converged, plus the stage-1 terms at
    ``train.stage2_branch_weight``.

    ``pnp_terms=False`` is the control arm (c0) of the end-to-end experiment: the terms
    that flow through the PnP (:data:`PNP_TERMS`) get weight 0 and nothing else changes
    (the PnP still runs: its convergence mask and the logged metrics are the same
    functions of the predictions; augmentation draws are made before the loss).
    """
    tc = cfg.train
    if tc.stage2_pnp_loss not in STAGE2_PNP_LOSSES:
        raise ValueError(f"train.stage2_pnp_loss must be one of {STAGE2_PNP_LOSSES}, got {tc.stage2_pnp_loss!r}")
    w = stage2_weights(cfg, pnp_terms)
    use_nll = pnp_terms and tc.stage2_pnp_loss == "pose_nll"

    def terms(pred, batch):
        if use_nll:
            pose, nll, ok = _pose_and_nll(pred, batch, tc.pnp_max_iterations)
        else:
            pose = solve_pose(pred["vertices"], pred["landmarks"], pred["log_var"], batch["crop_affine"],
                              batch["K"], max_iterations=tc.pnp_max_iterations)
            ok = pose.status == int(pyfacepnp.PnPStatus.CONVERGED)
        # Failed problems get the GT pose (detached) in place of theirs: their terms are masked
        # out anyway, and this keeps a bad pose from putting NaN/inf into any backward pass.
        R = torch.where(ok[:, None, None], pose.R, batch["R"].detach())
        t = torch.where(ok[:, None], pose.t, batch["t"].detach())
        wcpa = wcpa_terms(pred["vertices"], R, t, batch["vertices"], batch["R"], batch["t"])
        cam = w["d14"] * wcpa.d14
        if use_nll:
            cam = cam + tc.pose_nll_weight * nll
        else:
            for name in PNP_TERMS:  # a zero weight drops the term (and its gradient) entirely
                if w[name] != 0:
                    cam = cam + w[name] * getattr(wcpa, name)
        branch, metrics = branch_losses(cfg, pred, batch, edges.to(batch["crop"].device), scale_basis)
        loss = masked_mean(cam, ok) + tc.stage2_branch_weight * branch.mean()
        with torch.no_grad():
            metrics.update(wcpa=float(masked_mean(wcpa.score, ok)),
                           camera_mm=float(masked_mean(wcpa.d12, ok)),
                           pnp_failed=float((~ok).float().mean()))
        return loss, metrics

    return _face_net_objective(terms)
