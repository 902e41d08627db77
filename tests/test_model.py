"""Networks of the face pipeline: shapes, initial state, crop resampling, pose from PnP."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import pyfacepnp
from pyfacepnp.geometry.camera import normalized_to_pixels, pixels_to_normalized, project_points
from pyfacepnp.geometry.crop import warp_image
from pyfacepnp.models import FaceNet, LandmarkDetector, ResNetBackbone, solve_pose
from pyfacepnp.models.pose import pnp_weights


def tiny_face_model(n=50, k_id=4, k_exp=3, seed=0):
    g = np.random.default_rng(seed)
    return SimpleNamespace(template=(g.normal(size=(n, 3)) * 0.05).astype(np.float32),
                           id_basis=(g.normal(size=(k_id, n, 3)) * 0.003).astype(np.float32),
                           exp_basis=(g.normal(size=(k_exp, n, 3)) * 0.002).astype(np.float32),
                           triangles=g.integers(0, n, size=(80, 3)))


def random_rotation(g: torch.Generator, scale=0.4):
    w = (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * scale
    W = torch.zeros(3, 3, dtype=torch.float64)
    W[0, 1], W[0, 2], W[1, 2] = -w[2], w[1], -w[0]
    return torch.linalg.matrix_exp(W - W.T)


@pytest.mark.parametrize("widths,depths,size", [((8, 16), (1, 2), 32), ((8, 8, 16, 16), (1, 1, 1, 1), 64)])
def test_backbone_shapes(widths, depths, size):
    net = ResNetBackbone(widths, depths, stem_width=8)
    out = net(torch.rand(2, 3, size, size))
    stride = 2 ** (1 + len(widths))
    assert out.shape == (2, widths[-1], size // stride, size // stride)
    assert sum(len(s) for s in net.stages) == sum(depths)


def test_backbone_rejects_bad_stages():
    with pytest.raises(ValueError, match="equal length"):
        ResNetBackbone((8, 16), (1,))
    with pytest.raises(ValueError, match="at least one block"):
        ResNetBackbone((8, 16), (1, 0))


@pytest.mark.parametrize("widths", [(8, 8), (4, 16), (6, 8, 12, 16), (16, 32)])
def test_backbone_channels_last_matches_nchw_and_its_backward_runs(widths):
    """The backbone runs in channels-last layout. Its values and gradients are those of the
    same weights in NCHW layout, and its backward runs for the small channel counts whose
    strided 1x1 projection crashed the CPU's oneDNN backward in channels-last layout (8 -> 8,
    4 -> 16, 6 -> 8, 12 -> 16)."""
    torch.manual_seed(0)
    net = ResNetBackbone(widths, (1,) * len(widths), stem_width=widths[0])
    assert net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    ref = ResNetBackbone(widths, (1,) * len(widths), stem_width=widths[0]).to(memory_format=torch.contiguous_format)
    ref.load_state_dict(net.state_dict())
    ref.forward = lambda x: ref.stages(ref.stem(x))  # NCHW throughout
    x = torch.rand(3, 3, 33, 33, requires_grad=True)
    outs = []
    for m in (net, ref):
        y = m(x)
        gx, = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), x)
        outs.append((y, gx))
    (y, gx), (y_ref, gx_ref) = outs
    assert torch.allclose(y, y_ref, atol=1e-5, rtol=1e-4)
    assert torch.allclose(gx, gx_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sigma,var_shape", [("per_axis", (3, 50, 2)), ("per_point", (3, 50))])
def test_face_net_outputs_and_initial_state(sigma, var_shape):
    fm = tiny_face_model()
    net = FaceNet(fm, crop_size=32, widths=(8, 16), depths=(1, 1), stem_width=8, head_hidden=16,
                  sigma=sigma).eval()
    mean_px = torch.rand(50, 2) * 31
    net.landmark_head.set_mean_landmarks(mean_px)
    out = net(torch.rand(3, 3, 32, 32))
    assert out["vertices"].shape == (3, 50, 3) and out["coeffs"].shape == (3, 7)
    assert out["log_var"].shape == var_shape
    # zero-initialised output layers: the mean shape, the given mean landmarks, sigma = 1 px
    torch.testing.assert_close(out["vertices"], torch.from_numpy(fm.template).expand(3, -1, -1))
    torch.testing.assert_close(out["landmarks"], mean_px.expand(3, -1, -1), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["log_var"], torch.zeros(var_shape))
    # the mesh head decodes exactly the face model's linear model
    c = torch.randn(2, 7)
    want = fm.template + np.einsum("bk,knd->bnd", c[:, :4].numpy(), fm.id_basis) \
        + np.einsum("bk,knd->bnd", c[:, 4:].numpy(), fm.exp_basis)
    torch.testing.assert_close(net.mesh_head.decode(c), torch.from_numpy(want).float(), atol=1e-6, rtol=1e-5)


def test_face_net_log_var_is_bounded_and_input_checked():
    net = FaceNet(tiny_face_model(), crop_size=32, widths=(8,), depths=(1,), stem_width=8, head_hidden=8)
    with torch.no_grad():
        net.landmark_head.mlp[-1].bias.fill_(1e6)
    lv = net(torch.rand(1, 3, 32, 32))["log_var"]
    assert torch.isfinite(lv).all() and lv.max() <= 7.0 + 1e-5
    with pytest.raises(ValueError, match=r"crop must have shape \(B, 3, 32, 32\)"):
        net(torch.rand(1, 3, 40, 40))


def test_detector_answers_in_frame_pixels():
    det = LandmarkDetector(input_size=32, widths=(8, 8), depths=(1, 1), stem_width=8).eval()
    # heatmaps peaked on one cell put every landmark at that cell's centre, in frame pixels
    with torch.no_grad():
        det.heatmaps.weight.zero_()
        det.heatmaps.bias.zero_()
    cell = torch.zeros(1, 68, 4, 4)
    cell[..., 1, 2] = 50.0  # row 1, column 2 of a 4x4 map (stride 8 on 32 px)
    det.heatmap_logits = lambda small: cell.expand(small.shape[0], -1, -1, -1)
    for size in (32, 100):
        out = det(torch.rand(2, 3, size, size))
        centre = torch.tensor([(2 + 0.5) / 4 * 2 - 1, (1 + 0.5) / 4 * 2 - 1])
        torch.testing.assert_close(out, normalized_to_pixels(centre, size).expand(2, 68, 2), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="image must have shape"):
        det(torch.rand(2, 3, 50, 40))


def test_detector_heatmap_loss_is_lowest_at_the_target():
    from pyfacepnp.models.detector import _cell_centres, heatmap_cross_entropy, soft_argmax

    target = torch.tensor([[[0.1, -0.2]]])  # away from the border (no truncation bias)

    def log_gaussian(centre):  # log-heatmap of a 1-cell Gaussian on an 8x8 map
        c = _cell_centres(8, centre)
        d2 = ((c.view(1, 8) - centre[0]) ** 2 + (c.view(8, 1) - centre[1]) ** 2) * 16.0
        return (-0.5 * d2).view(1, 1, 8, 8)

    best = log_gaussian(target[0, 0]).requires_grad_()
    heatmap_cross_entropy(best, target).backward()
    assert best.grad.abs().max() < 1e-6  # the target Gaussian is the minimiser
    torch.testing.assert_close(soft_argmax(best.detach()), target, atol=1e-3, rtol=0)
    off = log_gaussian(target[0, 0] + torch.tensor([0.1, 0.0]))
    assert heatmap_cross_entropy(off, target) > heatmap_cross_entropy(best.detach(), target) + 0.05


def test_pixel_normalisation_round_trip_and_edges():
    p = torch.tensor([[-0.5, -0.5], [99.5, 99.5], [49.5, 0.0]])
    n = pixels_to_normalized(p, 100)
    torch.testing.assert_close(n[:2], torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    torch.testing.assert_close(normalized_to_pixels(n, 100), p)


def test_warp_image_matches_opencv():
    g = np.random.default_rng(1)
    img = g.random((60, 60, 3)).astype(np.float32)
    ang, s = 0.3, 0.8
    A = np.array([[s * np.cos(ang), -s * np.sin(ang), 12.0], [s * np.sin(ang), s * np.cos(ang), -5.0]])
    ref = cv2.warpAffine(img, A, (40, 40), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    out = warp_image(torch.from_numpy(img).permute(2, 0, 1)[None], torch.from_numpy(A)[None].float(), 40)
    out = out[0].permute(1, 2, 0).numpy()
    inner = np.s_[2:-2, 2:-2]  # OpenCV quantises interpolation weights to 1/32
    valid = cv2.warpAffine(np.ones((60, 60), np.float32), A, (40, 40))[inner] > 0.999
    assert valid.mean() > 0.5
    np.testing.assert_allclose(out[inner][valid], ref[inner][valid], atol=2e-2)


def _face_problem(b=4, n=200, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = (torch.rand(b, n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([0.15, 0.2, 0.08], dtype=dtype)
    R = torch.stack([random_rotation(g) for _ in range(b)]).to(dtype)
    t = torch.stack([torch.tensor([0.02, -0.01, 0.5 + 0.05 * i], dtype=dtype) for i in range(b)])
    K = torch.tensor([[315.0, 0, 200], [0, 315.0, 200], [0, 0, 1]], dtype=dtype).expand(b, 3, 3)
    s = 1.6
    A = torch.tensor([[s, 0.1, -180.0], [-0.1, s, -170.0]], dtype=dtype).expand(b, 2, 3)
    lm_crop = pyfacepnp.warp_points(project_points(X, R, t, K), A)
    return X, R, t, K, A, lm_crop


def test_solve_pose_recovers_pose_from_crop_landmarks():
    X, R, t, K, A, lm_crop = _face_problem()
    out = solve_pose(X.float(), lm_crop.float(), torch.zeros(4, 200, 2), A.float(), K.float())
    assert (out.status == int(pyfacepnp.PnPStatus.CONVERGED)).all()
    torch.testing.assert_close(out.R.double(), R, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.t.double(), t, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.camera_vertices.double(), X @ R.transpose(1, 2) + t[:, None], atol=2e-5, rtol=0)


def test_pnp_weights_follow_crop_scale():
    lv = torch.zeros(1, 5, 2)
    A = torch.tensor([[[2.0, 0.0, 3.0], [0.0, 2.0, 1.0]]])
    torch.testing.assert_close(pnp_weights(lv, A), torch.full((1, 5, 2), 4.0))
    torch.testing.assert_close(pnp_weights(torch.log(torch.full((1, 5), 4.0)), A), torch.ones(1, 5))


def test_solve_pose_gradients_reach_both_branches():
    X, R, t, K, A, lm_crop = _face_problem(b=2, n=60, seed=3)
    noise = torch.randn(lm_crop.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lm = (lm_crop + 0.5 * noise).float().requires_grad_()
    verts = X.float().requires_grad_()
    lv = torch.zeros(2, 60, 2, requires_grad=True)
    out = solve_pose(verts, lm, lv, A.float(), K.float())
    assert (out.status == 0).all()
    loss = (out.camera_vertices - (X @ R.transpose(1, 2) + t[:, None]).float()).norm(dim=-1).mean()
    loss.backward()
    for g in (lm.grad, verts.grad, lv.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # the landmark gradient is the implicit one: a finite-difference check along it
    d = lm.grad / lm.grad.norm()
    eps = 1e-2
    def f(l):
        o = solve_pose(X, l, lv.detach().double(), A, K)
        return (o.camera_vertices - (X @ R.transpose(1, 2) + t[:, None])).norm(dim=-1).mean()
    fd = (f(lm.detach().double() + eps * d) - f(lm.detach().double() - eps * d)) / (2 * eps)
    assert abs(float(fd) - float(lm.grad.norm())) < 0.05 * float(lm.grad.norm())


def test_landmark_refiner_starts_as_the_coarse_answer_and_learns():
    fm = tiny_face_model()
    torch.manual_seed(0)
    plain = FaceNet(fm, crop_size=32, widths=(8, 16), depths=(1, 1), stem_width=8, head_hidden=16).eval()
    torch.manual_seed(0)
    refined = FaceNet(fm, crop_size=32, widths=(8, 16), depths=(1, 1), stem_width=8, head_hidden=16,
                      refine_maps=(0, 1)).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        refined.landmark_head.mlp[-1].bias.normal_()  # coarse landmarks off the crop centre
        plain.landmark_head.mlp[-1].bias.copy_(refined.landmark_head.mlp[-1].bias)
    a, b = plain(x), refined(x)
    # a zero-initialised last layer: the refiner adds nothing until it is trained
    for k in ("landmarks", "log_var", "vertices"):
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    (b["landmarks"].square().sum() + b["log_var"].sum()).backward()
    last = refined.refiner.mlp[-1]
    assert last.weight.grad.abs().sum() > 0 and last.bias.grad.abs().sum() > 0
    # its offsets move the landmarks by step_px per unit, its variance term adds to the log-variance
    with torch.no_grad():
        last.bias.copy_(torch.tensor([1.0, -0.5, 0.25, 0.0]))
        c = refined(x)
    torch.testing.assert_close(c["landmarks"] - b["landmarks"],
                               torch.tensor([4.0, -2.0]).expand(3, 50, 2), atol=1e-5, rtol=0)
    assert torch.all(c["log_var"][..., 0] > b["log_var"][..., 0])
    torch.testing.assert_close(c["log_var"][..., 1], b["log_var"][..., 1])
