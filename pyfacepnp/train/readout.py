"""The mesh head's identity readout, fit in closed form after stage 1.

The identity is a faint part of each crop: stochastic gradients on its coefficients leave
them at the prior mean (on the embedded data their error stays at the coefficients'
variance, on the training split too), while the features the landmark branch learns do
carry it. A ridge regression over the whole training split, from both heads' hidden features
to what the coefficient output still misses, finds it in one solve; stage 2 then fine-tunes
the readout with everything else. The fit is deterministic (evaluation mode, no
augmentation), so a resumed run reproduces it, and refitting a fitted readout gives the same
map (the target excludes the readout's own output).
"""

from __future__ import annotations

import time

import torch

from pyfacepnp.metrics import vertex_error_mm
from pyfacepnp.train.augment import geometric_jitter

__all__ = ["fit_identity_readout"]


def _add_rows(net, head, batch, device, feats, residual, gt_vertices, coeffs):
    """One batch's rows of the regression: features, the identity residual the readout must
    explain (its own current output excluded), and, for the report, the vertices and the
    coefficients without the readout's output (the fitted map's are derived from them)."""
    out = net(batch["crop"].to(device))
    z = out["readout_features"].double()
    base = out["coeffs"].double().clone()
    base[:, : head.num_id] -= head.readout(out["readout_features"]).double()
    feats.append(z.cpu())
    residual.append(batch["id_coeffs"].double() - base[:, : head.num_id].cpu())
    gt_vertices.append(batch["vertices"])
    coeffs.append((base.cpu(), out["coeffs"].cpu()))


@torch.no_grad()
def fit_identity_readout(net, split, ridge: float, batch_size: int = 256, views: int = 4,
                         seed: int = 0) -> dict:
    """Set ``net.mesh_head.readout`` to the ridge regression of the identity coefficients'
    residual on the readout features, over every sample of ``split`` (which must hold
    ``id_coeffs``).

    Each sample is seen in ``views`` random re-crops of training's geometric jitter
    (:func:`~pyfacepnp.train.augment.geometric_jitter`, drawn from a generator seeded by
    ``seed``; ``views=0``: the cached crops as they are). Fit on the aligned crops alone, the
    map reads features that shift when a detector's crop is off: on the embedded data such a
    fit gave 6.62 mm on test crops cut around the true landmarks but 7.56 mm on the
    detector's crops, where the network without a readout had 7.19 mm (docs/face_pipeline.md).

    The features are standardised before the solve and the map folded back, so ``ridge``
    is relative: the penalty is ``ridge * n`` on standardised features (``n`` rows).

    Returns:
        ``{"samples", "views", "ridge", "seconds", "train_vertex_mm_before",
        "train_vertex_mm_after"}`` (the vertex errors over the fitted views).
    """
    head = net.mesh_head
    if head.readout is None:
        raise ValueError("the network has no identity readout (model.identity_readout)")
    if "id_coeffs" not in split.tensors:
        raise ValueError("the identity readout is fit on the face model's coefficients, which this data set lacks")
    if not ridge > 0:
        raise ValueError(f"train.readout_ridge must be > 0, got {ridge}")
    start = time.time()
    was_training = net.training
    net.eval()
    device = head.template.device
    feats, residual, gt_vertices, coeffs = [], [], [], []
    n = len(split)
    gen = torch.Generator().manual_seed(seed)
    views_of = (lambda b: [geometric_jitter(b, gen) for _ in range(views)]) if views > 0 else (lambda b: [b])
    for i in range(0, n, batch_size):
        for batch in views_of(split.batch(torch.arange(i, min(i + batch_size, n)))):
            _add_rows(net, head, batch, device, feats, residual, gt_vertices, coeffs)
    Z, Y = torch.cat(feats), torch.cat(residual)
    mu, sd = Z.mean(0), Z.std(0).clamp_min(1e-8)
    Zs = (Z - mu) / sd
    y_mean = Y.mean(0)
    gram = Zs.T @ Zs + ridge * len(Zs) * torch.eye(Zs.shape[1], dtype=Zs.dtype)
    W = torch.linalg.solve(gram, Zs.T @ (Y - y_mean))  # (F, K_id)
    weight = (W / sd[:, None]).T
    head.readout.weight.copy_(weight.to(head.readout.weight))
    head.readout.bias.copy_((y_mean - mu @ (W / sd[:, None])).to(head.readout.bias))
    gt = torch.cat(gt_vertices)
    base = torch.cat([b for b, _ in coeffs])
    base[:, : head.num_id] += Z @ weight.T + head.readout.bias.double().cpu()  # the fitted map's output
    decode = lambda c: head.decode(c.to(device)).cpu()  # noqa: E731
    net.train(was_training)
    return {"samples": n, "views": views, "ridge": ridge, "seconds": time.time() - start,
            "train_vertex_mm_before": float(vertex_error_mm(decode(torch.cat([c for _, c in coeffs])), gt).mean()),
            "train_vertex_mm_after": float(vertex_error_mm(decode(base), gt).mean())}
