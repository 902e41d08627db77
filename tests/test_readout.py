"""The mesh head's identity readout: its closed-form fit recovers a map the features hold,
refitting is idempotent, and misuse is refused."""

import pytest
import torch

from pyfacepnp.models import FaceNet
from pyfacepnp.train.data import TensorSplit
from pyfacepnp.train.readout import fit_identity_readout
from tests.test_model import tiny_face_model


def _net(readout=True):
    torch.manual_seed(0)
    net = FaceNet(tiny_face_model(), crop_size=32, widths=(8, 16), depths=(1, 1), stem_width=8,
                  head_hidden=16, identity_readout=readout)
    with torch.no_grad():  # a mesh MLP that already says something, so the target is a residual
        net.mesh_head.mlp[-1].weight.normal_(0, 0.1)
    return net.eval()


def _split(net, n=200):
    """Crops whose identity coefficients are a linear function of the network's readout
    features (plus what its coefficient output already says), vertices decoded from them."""
    g = torch.Generator().manual_seed(1)
    crops = torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        out = net(crops)
        z = out["readout_features"]
        A = torch.randn(z.shape[1], net.mesh_head.num_id, generator=g) * 0.3
        ids = out["coeffs"][:, :4] + z @ A + 0.2
        coeffs = torch.cat([ids, out["coeffs"][:, 4:]], -1)
        vertices = net.mesh_head.decode(coeffs)
    A = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(n, 2, 3).contiguous()
    return TensorSplit({"crop": crops, "id_coeffs": ids, "vertices": vertices, "crop_affine": A}), ids


def test_fit_recovers_the_linear_identity_and_refits_to_the_same_map():
    net = _net()
    split, ids = _split(net)
    stats = fit_identity_readout(net, split, ridge=1e-9, batch_size=64, views=0)
    assert not net.training  # the mode it was called in is kept
    with torch.no_grad():
        got = net(split.tensors["crop"])["coeffs"][:, :4]
    torch.testing.assert_close(got, ids, atol=2e-3, rtol=0)
    assert stats["samples"] == 200 and stats["train_vertex_mm_after"] < 0.01 < stats["train_vertex_mm_before"]
    w, b = net.mesh_head.readout.weight.clone(), net.mesh_head.readout.bias.clone()
    fit_identity_readout(net, split, ridge=1e-9, batch_size=50, views=0)
    torch.testing.assert_close(net.mesh_head.readout.weight, w, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(net.mesh_head.readout.bias, b, atol=1e-5, rtol=1e-4)


def test_a_strong_ridge_shrinks_the_readout_towards_the_mean_residual():
    net = _net()
    split, ids = _split(net)
    fit_identity_readout(net, split, ridge=1e6, views=0)
    assert net.mesh_head.readout.weight.abs().max() < 1e-4
    with torch.no_grad():
        resid = ids - net.mesh_head.mlp(net.pool_mesh(net.backbone(
            (split.tensors["crop"].float() / 255 - 0.5) * 4)))[:, :4]
    torch.testing.assert_close(net.mesh_head.readout.bias, resid.mean(0), atol=1e-4, rtol=0)


def test_misuse_is_refused():
    net = _net()
    split, _ = _split(net, n=8)
    with pytest.raises(ValueError, match="readout_ridge"):
        fit_identity_readout(net, split, ridge=0.0)
    with pytest.raises(ValueError, match="lacks"):
        fit_identity_readout(net, TensorSplit({"crop": split.tensors["crop"]}), ridge=1e-2)
    with pytest.raises(ValueError, match="no identity readout"):
        fit_identity_readout(_net(readout=False), split, ridge=1e-2)


def test_jittered_views_are_deterministic_and_fit_more_rows():
    """With views > 0 the rows are training's re-crops (their targets unchanged: the identity
    does not move with the crop), drawn from the given seed: the same seed, the same map."""
    net = _net()
    split, _ = _split(net, n=40)
    a = fit_identity_readout(net, split, ridge=1e-2, views=3, seed=5)
    w = net.mesh_head.readout.weight.clone()
    b = fit_identity_readout(net, split, ridge=1e-2, views=3, seed=5)
    torch.testing.assert_close(net.mesh_head.readout.weight, w, atol=1e-6, rtol=1e-5)
    assert a["views"] == b["views"] == 3 and a["samples"] == 40
    fit_identity_readout(net, split, ridge=1e-2, views=3, seed=6)
    assert not torch.allclose(net.mesh_head.readout.weight, w, atol=1e-6, rtol=1e-5)
