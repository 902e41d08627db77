"""The mesh rasteriser: coverage, z-buffer, perspective-correct interpolation, shading,
crop consistency and input errors."""

import cv2
import numpy as np
import pytest
import torch

from pyfacepnp.geometry.camera import crop_intrinsics, wcpa_intrinsics
from pyfacepnp.geometry.conventions import wcpa_rotation_from_euler, wcpa_to_opencv
from pyfacepnp.geometry.crop import crop_affine_from_landmarks
from pyfacepnp.geometry.transforms import transform_points
from pyfacepnp.data.face_model import get_face_model
from pyfacepnp.ops.render import DEFAULT_LIGHTS, DEFAULT_MATERIAL, render_mesh

K = np.array([[100.0, 0.0, 31.5], [0.0, 100.0, 31.5], [0.0, 0.0, 1.0]], dtype=np.float32)
FLAT = np.array([1.0, 1.0, 1.0, 0.0, 1.0], dtype=np.float32)  # ambient 1, no specular
NO_LIGHT = np.zeros((0, 6), dtype=np.float32)


def test_coverage_is_exact_for_pixel_centres():
    rng = np.random.default_rng(0)
    for _ in range(5):
        px = rng.uniform(-5, 68, (3, 2))
        z = rng.uniform(1.0, 3.0, 3)
        verts = np.concatenate([(px - 31.5) / 100.0 * z[:, None], z[:, None]], 1).astype(np.float32)
        out = render_mesh(verts, np.array([[0, 1, 2]]), np.zeros((3, 2)), np.ones((1, 1, 3)), K, (64, 64))
        covered = out.triangle.numpy() == 0
        yy, xx = np.mgrid[0:64, 0:64].astype(np.float64)
        a, b, c = px

        def edge(p, q):
            return (q[0] - p[0]) * (yy - p[1]) - (q[1] - p[1]) * (xx - p[0])

        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        w = np.stack([edge(b, c), edge(c, a), edge(a, b)]) / area
        inside, margin = (w >= 0).all(0), np.abs(w).min(0) > 1e-4
        np.testing.assert_array_equal(covered[margin], inside[margin])
        assert inside[margin].sum() > 0 or covered.sum() == 0


def plane_quad(z_left, z_right, half=0.5):
    """A quad spanning the view, tilted in depth from z_left (x < 0) to z_right."""
    v = np.array([[-half * z_left, -half * z_left, z_left], [half * z_right, -half * z_right, z_right],
                  [half * z_right, half * z_right, z_right], [-half * z_left, half * z_left, z_left]], dtype=np.float32)
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def ray_plane_depth(z_left, z_right, half=0.5):
    """Exact depth of the tilted plane at each pixel centre (x_cam = z (u - c) / f)."""
    xs = (np.arange(64) - 31.5) / 100.0
    # The plane passes through (-h zl, zl) and (h zr, zr) in the x-z plane: z = z0 + s x.
    s = (z_right - z_left) / (half * z_right + half * z_left)
    z0 = z_left + s * half * z_left
    return z0 / (1 - s * xs)  # intersection of the ray x = xs z with z = z0 + s x


def test_depth_and_texture_are_perspective_correct():
    verts, faces = plane_quad(1.0, 3.0)
    # Texture: the red channel is the texture x coordinate (a 256-texel ramp).
    ramp = np.zeros((1, 256, 3), np.float32)
    ramp[0, :, 0] = (np.arange(256) + 0.5) / 256
    uv = np.array([[0, 0.5], [1, 0.5], [1, 0.5], [0, 0.5]], np.float32)
    out = render_mesh(verts, faces, uv, ramp, K, (64, 64), NO_LIGHT, FLAT)
    z_true = ray_plane_depth(1.0, 3.0)
    row = 32
    np.testing.assert_allclose(out.depth[row, 2:62].numpy(), z_true[2:62], rtol=1e-4)
    # Texture coordinate along the quad = fraction of the way in 3D, from the exact depth.
    x_cam = (np.arange(64) - 31.5) / 100.0 * z_true
    frac = (x_cam + 0.5 * 1.0) / (0.5 * 3.0 + 0.5 * 1.0)
    np.testing.assert_allclose(out.image[row, 2:62, 0].numpy(), frac[2:62], atol=2e-3)
    # The quad spans screen x from -18.5 to 81.5: screen-space (affine) interpolation would
    # give 0.505 at x = 32, far from the perspective-correct value the renderer matches.
    assert abs(frac[32] - (32 + 18.5) / 100) > 0.1


def test_z_buffer_keeps_the_nearest_surface_in_any_order():
    far, faces = plane_quad(2.0, 2.0)
    near, _ = plane_quad(1.0, 1.0, half=0.2)
    verts = np.concatenate([far, near])
    tex = np.stack([np.full((1, 1, 3), 0.2), np.full((1, 1, 3), 0.9)]).astype(np.float32)
    uv = np.zeros((8, 2), np.float32)
    for order in ([0, 1, 2, 3], [2, 3, 0, 1]):
        all_faces = np.concatenate([faces, faces + 4])[order]
        out = render_mesh(verts, all_faces, uv, tex[0], K, (64, 64), NO_LIGHT, FLAT)
        tri = out.triangle.numpy()
        near_ids = [i for i, f in enumerate(order) if f >= 2]
        assert np.isin(tri[32, 32], near_ids)
        assert out.depth[32, 32].item() == pytest.approx(1.0, rel=1e-5)
        assert out.depth[2, 2].item() == pytest.approx(2.0, rel=1e-5)


def test_lambert_shading_and_background():
    verts, faces = plane_quad(1.0, 1.0, half=0.2)
    bg = torch.full((64, 64, 3), 0.25)
    albedo = np.full((1, 1, 3), 0.5, np.float32)
    light = np.array([[0.0, 0.0, -1.0, 0.6, 0.6, 0.6]], np.float32)  # towards the camera side
    material = np.array([0.2, 0.2, 0.2, 0.0, 1.0], np.float32)
    out = render_mesh(verts, faces, np.zeros((4, 2)), albedo, K, bg, light, material)
    # The plane faces the camera: n.l = 1 -> 0.5 * (0.2 + 0.6) = 0.4 where lit.
    assert out.image[32, 32].tolist() == pytest.approx([0.4, 0.4, 0.4], abs=1e-5)
    assert out.image[1, 1].tolist() == pytest.approx([0.25] * 3) and out.triangle[1, 1] == -1
    assert torch.isinf(out.depth[1, 1])
    # A light from behind the plane leaves only the ambient term.
    back = render_mesh(verts, faces, np.zeros((4, 2)), albedo, K, bg, -light * [1, 1, 1, -1, -1, -1], material)
    assert back.image[32, 32, 0].item() == pytest.approx(0.1, abs=1e-5)
    assert torch.equal(bg, torch.full((64, 64, 3), 0.25))  # the background is not written to


def face_scene(yaw=0.3):
    m = get_face_model()
    R_t = np.eye(4)
    R_t[:3, :3] = wcpa_rotation_from_euler(0.1, yaw, 0.05)
    R_t[3, :3] = [0.01, -0.01, -0.5]
    R, t = wcpa_to_opencv(R_t)
    cam = transform_points(m.template, R, t).astype(np.float32)
    tex = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(tex, (0, 0), 3)
    return m, cam, tex


def test_crop_render_matches_warped_full_frame():
    m, cam, tex = face_scene()
    K800 = wcpa_intrinsics().astype(np.float32)
    full = render_mesh(cam, m.triangles, m.texcoords, tex, K800, (800, 800))
    proj = cam @ K800.T
    lm = proj[m.landmark_indices, :2] / proj[m.landmark_indices, 2:]
    # The crop magnifies slightly less than 1:1 so warping the full frame is a fair reference.
    A = crop_affine_from_landmarks(lm.astype(np.float64), 192)
    crop = render_mesh(cam, m.triangles, m.texcoords, tex, crop_intrinsics(K800, A).astype(np.float32), (192, 192))
    warped = cv2.warpAffine(full.image.numpy(), A, (192, 192), flags=cv2.INTER_LINEAR)
    mask_full = cv2.warpAffine((full.triangle.numpy() >= 0).astype(np.float32), A, (192, 192)) > 0.5
    mask_crop = crop.triangle.numpy() >= 0
    iou = (mask_full & mask_crop).sum() / (mask_full | mask_crop).sum()
    assert iou > 0.98
    both = cv2.erode((mask_full & mask_crop).astype(np.uint8), np.ones((5, 5))) > 0
    assert np.abs(crop.image.numpy() - warped)[both].mean() < 0.02


def test_face_render_covers_the_projected_landmarks():
    m, cam, tex = face_scene(yaw=0.0)
    out = render_mesh(cam, m.triangles, m.texcoords, tex, wcpa_intrinsics().astype(np.float32), (800, 800))
    proj = cam @ wcpa_intrinsics().T
    lm = np.round(proj[m.landmark_indices, :2] / proj[m.landmark_indices, 2:]).astype(int)
    for k in range(17, 68):  # all but the jaw outline, which lies on the mesh boundary
        assert out.triangle[lm[k, 1], lm[k, 0]] >= 0
    # The visible surface at the nose tip is the nose tip's depth.
    assert out.depth[lm[30, 1], lm[30, 0]].item() == pytest.approx(cam[m.landmark_indices[30], 2], abs=2e-3)


def test_empty_mesh_and_errors():
    bg = torch.rand(8, 8, 3)
    out = render_mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 2)), np.ones((1, 1, 3)), K, bg)
    assert torch.equal(out.image, bg) and (out.triangle == -1).all()
    v = np.array([[0, 0, 1], [0.1, 0, 1], [0, 0.1, 1]], np.float32)
    f = np.array([[0, 1, 2]])
    uv, tex = np.zeros((3, 2)), np.ones((1, 1, 3))
    with pytest.raises(ValueError, match=r"vertices must have shape \(V, 3\), got \(3, 3, 1\)"):
        render_mesh(v[..., None], f, uv, tex, K, (8, 8))
    with pytest.raises(RuntimeError, match=r"faces index vertices out of range \[0, 3\)"):
        render_mesh(v, np.array([[0, 1, 3]]), uv, tex, K, (8, 8))
    with pytest.raises(RuntimeError, match=r"texcoords must have shape \(V, 2\) with V = 3"):
        render_mesh(v, f, np.zeros((2, 2)), tex, K, (8, 8))
    with pytest.raises(RuntimeError, match=r"K must have shape \(3, 3\)"):
        render_mesh(v, f, uv, tex, np.eye(4), (8, 8))
    with pytest.raises(RuntimeError, match=r"lights must have shape \(L, 6\)"):
        render_mesh(v, f, uv, tex, K, (8, 8), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="background must be an"):
        render_mesh(v, f, uv, tex, K, (8, 8, 3))
    with pytest.raises(TypeError, match="texture must be a numpy array or torch tensor"):
        render_mesh(v, f, uv, [[1.0]], K, (8, 8))


def test_non_finite_vertices_are_skipped_and_threads_do_not_matter():
    m, cam, tex = face_scene()
    K800 = wcpa_intrinsics().astype(np.float32)
    bad = cam.copy()
    bad[m.triangles[0]] = np.nan  # every triangle touching these vertices is dropped
    out = render_mesh(bad, m.triangles, m.texcoords, tex, K800, (400, 400))
    assert torch.isfinite(out.image).all()
    touching = np.isin(m.triangles, m.triangles[0]).any(1)
    assert not np.isin(out.triangle.numpy(), np.nonzero(touching)[0]).any()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = render_mesh(cam, m.triangles, m.texcoords, tex, K800, (400, 400))
        torch.set_num_threads(2)
        two = render_mesh(cam, m.triangles, m.texcoords, tex, K800, (400, 400))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.image, two.image) and torch.equal(one.triangle, two.triangle)


def test_render_mesh_checks_dtypes_and_has_a_fake_kernel():
    v = torch.tensor([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0], [0.0, 0.1, 1.0]])
    f, uv, tex = torch.tensor([[0, 1, 2]]), torch.zeros(3, 2), torch.ones(1, 1, 3)
    Kt = torch.from_numpy(K)
    with pytest.raises(TypeError, match="texture must be float32 or float64, got torch.int64"):
        render_mesh(v, f, uv, torch.ones(1, 1, 3, dtype=torch.int64), Kt, (8, 8))
    with pytest.raises(TypeError, match="faces must hold integer vertex indices"):
        render_mesh(v, f.float(), uv, tex, Kt, (8, 8))
    args = (v, f, uv, tex, Kt, torch.zeros(8, 6, 3), torch.from_numpy(DEFAULT_LIGHTS), torch.from_numpy(DEFAULT_MATERIAL))
    torch.library.opcheck(torch.ops.pyfacepnp.render_mesh.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    out = render_mesh(*args)
    assert out.image.shape == (8, 6, 3) and out.depth.shape == (8, 6) and out.triangle.dtype == torch.int64
