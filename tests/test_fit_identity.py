"""Training through solve_pnp from scratch (pyfacepnp.examples.fit_identity): the first,
random outputs of a network are answered with front-facing poses and gradients, and a short
run learns."""

import pytest
import torch

from pyfacepnp.examples.fit_identity import CorrespondenceNet, pose_loss, random_poses, solve, train


def test_random_initial_network_gets_gradients_for_every_problem():
    """At initialisation no problem is DEGENERATE and the loss's gradient reaches the weights
    (the failure this example was written for: every problem discarded, a zero gradient)."""
    torch.manual_seed(0)
    net = CorrespondenceNet()
    R, t = random_poses(256, torch.Generator().manual_seed(1))
    res = solve(net, R, t, torch.float32)
    assert not (res.status == 2).any() and res.converged.float().mean() > 0.8
    loss = (pose_loss(res.R, res.t, R.float(), t.float()) * res.converged).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0


def test_a_short_run_learns_with_no_init():
    """256 steps (4 epochs of 16,384 samples). 3 epochs of 4,096 left the test rotation error at
    chance (a uniform rotation's median, 2.2 rad) and up to all of the test solves at
    MAX_ITERATIONS, where the loss is masked: whether the loss halved and the rotation median
    fell then flipped with the rounding of the solver's sums (a reordered sum flipped it for
    seeds 1 and 4 of 0-5). Over seeds 0-4, with the global start's Omega sums in either order
    (vectorised or scalar pass), this run's last epoch had 0.08-0.21 of the first's loss and
    a rotation median of 0.09-0.25 rad."""
    _, history = train(epochs=4, samples=16384, test_size=256, log=lambda s: None)
    first, last = history[0], history[-1]
    assert last["loss"] < 0.5 * first["loss"]
    assert last["statuses"]["degenerate"] == 0 and last["statuses"]["invalid"] == 0
    assert last["rotation_median"] < first["rotation_median"]
    assert last["rotation_median"] < 0.5  # learned: chance is 2.2 rad


def test_the_pose_distribution_loss_reaches_a_random_network():
    """With the NLL term (pose_nll beside the pose loss), the first random outputs give a
    finite loss, valid NLL terms and a gradient to the weights."""
    from pyfacepnp.examples.fit_identity import TARGET_NOISE, training_loss
    from pyfacepnp.geometry.rotation import so3_exp

    torch.manual_seed(0)
    net = CorrespondenceNet()
    g = torch.Generator().manual_seed(2)
    R, t = random_poses(128, g)
    noise = TARGET_NOISE * torch.randn(128, 6, generator=g, dtype=torch.float64)
    R_tgt, t_tgt = so3_exp(noise[:, :3]) @ R, t + noise[:, 3:]
    loss_pose, _, _, _ = training_loss(net, R, t, R_tgt, t_tgt, 0.0, None)
    loss, res, norm, _ = training_loss(net, R, t, R_tgt, t_tgt, 0.01, None)
    assert norm > 0 and torch.isfinite(loss) and float(loss) != float(loss_pose)
    assert res.converged.float().mean() > 0.8
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0


def test_the_pose_distribution_loss_alone_reaches_bounded_weights():
    """With the bounded weights (``weight_range``, first scale 1e8) and the NLL alone
    (``pose_weight=0``), the first random outputs give valid NLL terms and a finite, nonzero
    gradient, the global log-scale's included; the loss is the combined loss's NLL term in
    nats, and saturated outputs span the range and no more."""
    from pyfacepnp.examples.fit_identity import TARGET_NOISE, training_loss
    from pyfacepnp.geometry.rotation import so3_exp

    torch.manual_seed(0)
    net = CorrespondenceNet(weight_range=10.0)
    g = torch.Generator().manual_seed(2)
    R, t = random_poses(128, g)
    noise = TARGET_NOISE * torch.randn(128, 6, generator=g, dtype=torch.float64)
    R_tgt, t_tgt = so3_exp(noise[:, :3]) @ R, t + noise[:, 3:]
    loss, res, norm, valid = training_loss(net, R, t, R_tgt, t_tgt, 1.0, None, pose_weight=0.0)
    with torch.no_grad():
        loss_pose, _, _, _ = training_loss(net, R, t, R_tgt, t_tgt, 0.0, None)
        both, _, norm_both, _ = training_loss(net, R, t, R_tgt, t_tgt, 1e6, None)
    assert norm == 1.0 and norm_both > 1e7  # the NLL alone in nats; beside the pose loss, normalised
    assert torch.isfinite(loss) and float(loss.detach()) != 0.0
    nll_part = (float(both) - float(loss_pose)) / 1e6
    assert abs(nll_part - float(loss.detach()) / norm_both) < 1e-3 * abs(nll_part)
    assert valid.float().mean() > 0.8 and res.converged.float().mean() > 0.8
    net.zero_grad()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert sum(float(p.grad.abs().sum()) for p in net.mlp.parameters()) > 0
    assert float(net.log_weight_scale.grad) != 0.0
    with torch.no_grad():  # saturated outputs: the weights span the range and no more
        net.mlp[-1].bias.copy_(100.0 * torch.randn(net.mlp[-1].bias.shape, generator=g))
        _, _, w = net(R.float(), t.float())
    spread = w.flatten(1).max(1).values / w.flatten(1).min(1).values
    assert float(spread.min()) > 9.9 and float(spread.max()) < 10.0 * (1 + 1e-5)


def test_training_with_no_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="no loss"):
        train(epochs=1, samples=256, pose_weight=0.0, nll_weight=0.0)
