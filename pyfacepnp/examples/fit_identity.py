"""Training through ``solve_pnp`` from scratch: a network learns 2D-3D correspondences whose
PnP solution is a given pose.

An MLP maps a pose (its rotation matrix and translation) to N = 64 correspondences: object
points, normalised image points (K = I) and per-axis weights. ``solve_pnp`` (Huber, no init)
solves them, and the loss compares the solved pose with the target (the input pose perturbed
by noise of 0.01). Nothing is pre-trained and no init is given: the first outputs are random
correspondences, which the solver must still answer with a front-facing pose and a gradient.

    python -m pyfacepnp.examples.fit_identity [--epochs 10] [--samples 65536] [--out runs/fit_identity]

With ``--nll-weight w`` the loss adds ``w`` times the pose-distribution loss
(:func:`pyfacepnp.pose_nll`: the Laplace negative log-likelihood of the target pose), divided
by a running mean of the weights' sum per point, as EPro-PnP normalises its KL loss: the NLL
grows with the weights' scale, and the normalisation keeps its share of the gradient steady.

``--pose-weight 0`` drops the pose loss: the NLL alone, in nats (not normalised). It trains
only with ``--weight-range r``: bounded weights ``exp(s + log(r)/2 tanh(z))``, at most ``r``
apart within a problem, with ``s`` a learned global log-scale starting at
``log(--weight-scale)`` (1e8: a sharp first distribution). With ``softplus²`` weights, with a
first scale of 1e4 or less, or with a range of 1e8, the NLL alone collapses (docs/training.md).

    python -m pyfacepnp.examples.fit_identity --weight-range 100 --pose-weight 0 --nll-weight 1

Writes ``metrics_seed<seed>.json`` to ``--out``, the name tagged with the options that differ
from the defaults (``metrics_nll<w>_seed<seed>.json`` with the NLL,
``metrics_range<r>_pose0_nll<w>_seed<seed>.json`` for the NLL alone with bounded weights): per
epoch the loss, the test rotation and translation errors, the statuses of the test solves, and
with the NLL the training problems where it was ``valid``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

import pyfacepnp
from pyfacepnp.files import atomic_write
from pyfacepnp.geometry.rotation import quaternion_to_matrix, rotation_angle, so3_exp

N_POINTS = 64
TARGET_NOISE = 0.01
TRANSLATION_WEIGHT = 2.0  # the rotation term is ~|angle| * 1.4, the translation's in scene units
# The bounded weights' first scale. The NLL's gradient is led by its log-determinant where the
# fitted distribution is broad (softplus(0)² = 0.48: the network then sharpens it through the
# geometry and the solves stop converging) and by E(target) - E(y*) where it is sharp.
WEIGHT_SCALE = 1e8


def random_poses(n, generator):
    """Uniform rotations and translations in front of the camera (x, y in [-1, 1], z in [4, 8])."""
    R = quaternion_to_matrix(torch.randn(n, 4, generator=generator, dtype=torch.float64))
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    t = torch.stack([2 * u[:, 0] - 1, 2 * u[:, 1] - 1, 4 + 4 * u[:, 2]], -1)
    return R, t


class CorrespondenceNet(nn.Module):
    """Pose (R flattened, t) -> N object points, image points and per-axis weights.

    ``weight_range=None``: the weights are ``softplus(z)²``, unbounded. ``weight_range=r``:
    ``w = exp(s + a tanh(z))`` with ``a = log(r) / 2`` and ``s`` one learned global
    log-scale starting at ``log(weight_scale)``, so within a problem no weight exceeds another
    by more than ``r`` while the overall scale (which sets the width of the pose distribution)
    stays free."""

    def __init__(self, n=N_POINTS, hidden=512, weight_range=None, weight_scale=WEIGHT_SCALE):
        super().__init__()
        self.n = n
        self.mlp = nn.Sequential(nn.Linear(12, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden), nn.LeakyReLU(),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, n * 7))
        self.weight_range = weight_range
        if weight_range is not None:
            self.log_weight_scale = nn.Parameter(torch.tensor(math.log(weight_scale)))

    def forward(self, R, t):
        t_std = (t - t.new_tensor([0.0, 0.0, 6.0])) / t.new_tensor([0.6, 0.6, 1.2])  # ~unit variance
        out = self.mlp(torch.cat([R.flatten(1), t_std], 1)).view(-1, self.n, 7)
        X, x, w = out[..., :3], out[..., 3:5], out[..., 5:]
        if self.weight_range is None:
            return X, x, nn.functional.softplus(w) ** 2  # weights squared, positive
        a = 0.5 * math.log(self.weight_range)
        return X, x, torch.exp(self.log_weight_scale.to(w.dtype) + a * torch.tanh(w))


def pose_loss(R, t, R_tgt, t_tgt):
    """The chordal rotation distance plus the translation error (norms, not squares: the
    gradient does not fade as the errors shrink to the target noise)."""
    return (((R - R_tgt) ** 2).sum((-1, -2)).clamp_min(1e-12).sqrt()
            + TRANSLATION_WEIGHT * (t - t_tgt).norm(dim=-1))


SOLVER = dict(loss="huber", loss_scale=0.1)
NLL_MOMENTUM = 0.1  # of the running mean of the weights' sum that normalises the NLL


def solve(net, R, t, dtype):
    X, x, w = net(R.to(dtype), t.to(dtype))
    return pyfacepnp.solve_pnp(X, x, torch.eye(3, dtype=dtype), w, **SOLVER)


def training_loss(net, R, t, R_tgt, t_tgt, nll_weight, norm, pose_weight=1.0):
    """The batch's loss and its solves: ``pose_weight`` times the pose loss masked by
    ``converged``, plus, with ``nll_weight``, the NLL masked by its ``valid``, in units of
    ``norm`` (the running mean of the weights' sum per point; updated and returned), and the
    NLL's ``valid`` (None without the NLL). With ``pose_weight=0`` (the NLL alone) the NLL is
    in nats: ``norm`` stays 1."""
    dtype = torch.float32
    X, x, w = net(R.to(dtype), t.to(dtype))
    K = torch.eye(3, dtype=dtype)
    R_tgt, t_tgt = R_tgt.to(dtype), t_tgt.to(dtype)
    if nll_weight > 0:
        out = pyfacepnp.pose_nll(X, x, K, w, R_target=R_tgt, t_target=t_tgt, **SOLVER)
        res = out.result
        mean_w = float(w.detach().sum(-1).mean())
        if pose_weight <= 0:
            norm = 1.0
        else:
            norm = mean_w if norm is None else (1 - NLL_MOMENTUM) * norm + NLL_MOMENTUM * mean_w
        extra = nll_weight * (out.nll * out.valid) / norm
        nll_valid = out.valid
    else:
        res = pyfacepnp.solve_pnp(X, x, K, w, **SOLVER)
        extra, nll_valid = 0.0, None
    per = extra
    if pose_weight > 0:
        per = pose_weight * pose_loss(res.R, res.t, R_tgt, t_tgt) * res.converged + extra
    return per.sum() / R.shape[0], res, norm, nll_valid


def evaluate(net, n, seed):
    g = torch.Generator().manual_seed(seed)
    R, t = random_poses(n, g)
    with torch.no_grad():
        res = solve(net, R, t, torch.float32)
    rot = rotation_angle(res.R.double(), R)
    err = res.t.double() - t
    trans = err.norm(dim=-1)
    status = torch.bincount(res.status.long(), minlength=4).tolist()
    # The translation error split into its part across the line of sight and along it (the
    # depth, which a PnP fit determines least well).
    ray = t / t.norm(dim=-1, keepdim=True)
    along = (err * ray).sum(-1, keepdim=True)
    depth, lateral = along.squeeze(-1).abs(), (err - along * ray).norm(dim=-1)
    return dict(rotation_median=float(rot.median()), translation_median=float(trans.median()),
                translation_lateral_median=float(lateral.median()),
                translation_depth_median=float(depth.median()),
                statuses=dict(zip(("converged", "max_iterations", "degenerate", "invalid"), status)))


def weight_spread(net, n, seed):
    """The global weight scale and the median over test problems of max / median weight."""
    g = torch.Generator().manual_seed(seed)
    R, t = random_poses(n, g)
    with torch.no_grad():
        _, _, w = net(R.float(), t.float())
    w = w.flatten(1)
    return dict(weight_scale=float(torch.exp(net.log_weight_scale)),
                weight_max_over_median=float((w.max(1).values / w.median(1).values).median()))


def train(epochs=10, samples=65536, batch=256, lr=3e-3, seed=0, test_size=1024, log=print,
          nll_weight=0.0, pose_weight=1.0, weight_range=None, weight_scale=WEIGHT_SCALE):
    if not (pose_weight > 0 or nll_weight > 0):
        raise ValueError(f"no loss: pose_weight={pose_weight} and nll_weight={nll_weight}; give one a positive value")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    net = CorrespondenceNet(weight_range=weight_range, weight_scale=weight_scale)
    steps = epochs * (samples // batch)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    history = []
    norm = None
    t0 = time.perf_counter()
    for epoch in range(epochs):
        total, dead, valid = 0.0, 0, 0
        for _ in range(samples // batch):
            R, t = random_poses(batch, g)
            noise = TARGET_NOISE * torch.randn(batch, 6, generator=g, dtype=torch.float64)
            R_tgt, t_tgt = so3_exp(noise[:, :3]) @ R, t + noise[:, 3:]
            objective, res, norm, nll_valid = training_loss(net, R, t, R_tgt, t_tgt, nll_weight, norm,
                                                            pose_weight)
            ok = res.converged
            opt.zero_grad()
            objective.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            sched.step()
            total += float(objective.detach())
            dead += int((~ok).sum())
            valid += 0 if nll_valid is None else int(nll_valid.sum())
        ev = evaluate(net, test_size, seed + 1000)
        rec = dict(epoch=epoch + 1, loss=total / (samples // batch), not_converged_in_training=dead,
                   seconds=time.perf_counter() - t0, **ev)
        if nll_weight > 0:
            rec["nll_valid_in_training"] = valid
        if weight_range is not None:
            ev_w = weight_spread(net, test_size, seed + 1000)
            rec.update(ev_w)
        history.append(rec)
        log(json.dumps(rec))
    return net, history


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--samples", type=int, default=65536, help="samples per epoch")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nll-weight", type=float, default=0.0,
                    help="weight of the pose-distribution loss (pose_nll) beside the pose loss")
    ap.add_argument("--pose-weight", type=float, default=1.0,
                    help="weight of the pose loss (0: the NLL alone)")
    ap.add_argument("--weight-range", type=float, default=None,
                    help="bounded weights: exp(learned scale + log(r)/2 tanh(z)), at most r apart "
                         "within a problem (default: softplus², unbounded)")
    ap.add_argument("--weight-scale", type=float, default=WEIGHT_SCALE,
                    help="first value of the bounded weights' learned global scale")
    ap.add_argument("--out", type=Path, default=Path("runs/fit_identity"))
    args = ap.parse_args(argv)
    if args.pose_weight <= 0 and args.nll_weight <= 0:
        ap.error("no loss: give --pose-weight or --nll-weight a positive value")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    _, history = train(args.epochs, args.samples, args.batch, seed=args.seed,
                       nll_weight=args.nll_weight, pose_weight=args.pose_weight,
                       weight_range=args.weight_range, weight_scale=args.weight_scale)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "" if args.weight_range is None else f"range{args.weight_range:g}_"
    tag += f"scale{args.weight_scale:g}_" if args.weight_range is not None and args.weight_scale != WEIGHT_SCALE else ""
    tag += f"pose{args.pose_weight:g}_" if args.pose_weight != 1.0 else ""
    tag += f"nll{args.nll_weight:g}_" if args.nll_weight > 0 else ""
    atomic_write(args.out / f"metrics_{tag}seed{args.seed}.json",
                 lambda f: f.write(json.dumps(history, indent=1).encode()))


if __name__ == "__main__":
    main()
