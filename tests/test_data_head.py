"""The head and neck drawn behind synthetic faces."""

import numpy as np
import torch

from pyfacepnp.data import appearance as ap
from pyfacepnp.data.head import head_mesh
from pyfacepnp.geometry.conventions import wcpa_to_opencv
from pyfacepnp.geometry.mesh import boundary_loop
from pyfacepnp.geometry.transforms import transform_points
from pyfacepnp.ops.render import render_mesh
from pyfacepnp.data.synthetic import SyntheticFaceDataset


def test_head_attaches_to_the_face_boundary():
    ds = SyntheticFaceDataset("val", num_samples=4)
    model = ds.model
    loop = boundary_loop(model)
    assert len(loop) == len(set(loop.tolist())) and set(model.regions[i] for i in loop) == {"outline"}
    V = model.vertices(ds.scene(0).id_coeffs)
    verts, faces, uv = head_mesh(V, model)
    n = len(V)
    assert faces.min() >= 0 and faces.max() == n + len(verts) - 1 and uv.shape == (len(verts), 2)
    # Head triangles use no face vertex except the boundary loop: the cap starts there.
    used = np.unique(faces[faces < n])
    np.testing.assert_array_equal(np.sort(loop), used)
    # Every boundary edge of the face is shared by exactly one head triangle.
    head_edges = {(int(a), int(b)) for t in faces for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    for i in range(len(loop)):
        a, b = int(loop[i]), int(loop[(i + 1) % len(loop)])
        assert (b, a) in head_edges  # opposite direction: consistent orientation across the seam
    # The cap lies behind the face: nothing of it in front of the face's front plane.
    assert verts[:, 2].max() <= V[:, 2].max()


def test_head_never_hides_the_face_and_keeps_the_ground_truth():
    on = SyntheticFaceDataset("train", num_samples=30, image_size=200, crop_size=96, occluder_prob=0.0)
    off = SyntheticFaceDataset("train", num_samples=30, image_size=200, crop_size=96, occluder_prob=0.0, head=False)
    model = on.model
    for i in range(0, 30, 3):
        scene = on.scene(i)
        V = model.vertices(scene.id_coeffs, scene.exp_coeffs)
        R, t = wcpa_to_opencv(scene.R_t)
        K = on.intrinsics().astype(np.float32)
        tex = ap.texture_from_palette(scene.palette)
        face = render_mesh(transform_points(V, R, t).astype(np.float32), model.triangles, model.texcoords, tex, K, (200, 200))
        cam, faces, uv = on.scene_mesh(scene, V, R, t)
        both = render_mesh(cam, faces, uv, tex, K, (200, 200))
        face_px = face.triangle >= 0
        still_face = (both.triangle[face_px] < len(model.triangles)).float().mean().item()
        assert still_face > 0.99, (i, still_face)
        assert ((both.triangle >= 0).sum() > 1.2 * face_px.sum()).item()  # the head adds to the silhouette
    a, b = on[5], off[5]
    for key in ("vertices", "landmarks68", "R_t", "crop_affine", "K_crop"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["crop"], b["crop"])
