"""The procedural face model: mesh validity, landmark semantics, bases, determinism."""

import collections

import numpy as np
import pytest
import torch

from pyfacepnp.data.face_model import EXPRESSION_NAMES, build_face_model, get_face_model

INNER = {"eye_upper", "eye_lower", "eye_mid", "lip_inner_upper", "lip_inner_lower", "mouth_corner"}


@pytest.fixture(scope="module")
def model():
    return get_face_model()


def test_sizes_and_dtypes(model):
    assert model.template.shape == (1220, 3) and model.template.dtype == np.float32
    assert model.id_basis.shape[1:] == (1220, 3) and model.id_basis.shape[0] >= 30
    assert model.exp_basis.shape[1:] == (1220, 3) and model.exp_basis.shape[0] >= 15
    assert model.triangles.dtype == np.int64 and model.triangles.shape[1] == 3
    assert model.landmark_indices.shape == (68,) and len(set(model.landmark_indices.tolist())) == 68
    assert model.texcoords.min() >= 0 and model.texcoords.max() <= 1
    assert get_face_model() is model  # cached
    # Metres, face-sized: ~14 cm wide, ~20 cm tall.
    ext = model.template.max(0) - model.template.min(0)
    assert 0.12 < ext[0] < 0.16 and 0.18 < ext[1] < 0.22 and 0.04 < ext[2] < 0.08


def test_deterministic_build(model):
    again = build_face_model()
    for name in ("template", "id_basis", "exp_basis", "triangles", "landmark_indices", "texcoords"):
        np.testing.assert_array_equal(getattr(again, name), getattr(model, name))


def test_mesh_is_an_oriented_disk(model):
    T = model.triangles
    assert T.min() >= 0 and T.max() == 1219
    assert len(np.unique(T.ravel())) == 1220  # every vertex used
    edges = collections.Counter()
    for a, b, c in T:
        for e in ((a, b), (b, c), (c, a)):
            edges[e] += 1
    # Consistent orientation: no directed edge twice; each undirected edge in <= 2 triangles.
    assert max(edges.values()) == 1
    boundary = [e for e in edges if (e[1], e[0]) not in edges]
    # Euler characteristic of a disk: V - E + F = 1, and the boundary is one loop.
    n_edges = len(boundary) + (len(edges) - len(boundary)) // 2
    assert 1220 - n_edges + len(T) == 1
    nxt = dict(boundary)
    start, cur, steps = boundary[0][0], nxt[boundary[0][0]], 1
    while cur != start:
        cur, steps = nxt[cur], steps + 1
    assert steps == len(boundary)
    # Front-facing: triangle normals of the template point out of the face (+z).
    P = model.template
    n = np.cross(P[T[:, 1]] - P[T[:, 0]], P[T[:, 2]] - P[T[:, 0]])
    assert (n[:, 2] > 0).mean() > 0.99


def test_landmark_semantics(model):
    lm = model.template[model.landmark_indices]
    x, y, z = lm[:, 0], lm[:, 1], lm[:, 2]
    # The face's right (x < 0) carries the low landmark numbers, as in the 68-point scheme.
    assert x[0] < 0 < x[16] and x[36] < x[39] < 0 < x[42] < x[45] and x[48] < x[54]
    assert x[17] < x[21] < 0 < x[22] < x[26] and x[31] < x[33] < x[35]
    assert np.argmin(y[:17]) == 8  # chin
    assert np.argmax(z) == 30  # nose tip protrudes most
    brows, eyes, nose_base, mouth = y[17:27].mean(), y[36:48].mean(), y[31:36].mean(), y[48:68].mean()
    assert brows > eyes > y[30] > nose_base > mouth > y[8]
    assert y[37] > y[41] and y[44] > y[46] and y[51] > y[62] > y[66] > y[57]
    # Mirror pairs of the 68-point scheme are mirror images in the template.
    pairs = [(0, 16), (4, 12), (17, 26), (19, 24), (36, 45), (39, 42), (37, 44), (41, 46),
             (31, 35), (48, 54), (50, 52), (59, 55), (60, 64), (61, 63), (67, 65)]
    for a, b in pairs:
        np.testing.assert_allclose(lm[a] * [-1, 1, 1], lm[b], atol=1e-6, err_msg=f"landmarks {a} and {b}")
    for k in (8, 27, 28, 29, 30, 33, 51, 57, 62, 66):
        assert abs(x[k]) < 1e-6


def lm_dist(V, a, b, model):
    return float(np.linalg.norm(V[model.landmark_indices[a]] - V[model.landmark_indices[b]]))


def test_expression_semantics(model):
    def expr(**kw):
        e = np.zeros(model.num_exp)
        for k, v in kw.items():
            e[EXPRESSION_NAMES.index(k)] = v
        return model.vertices(None, e)

    neutral = model.template
    assert lm_dist(neutral, 62, 66, model) < 0.001  # closed lips
    assert lm_dist(expr(jaw_open=1.0), 62, 66, model) > 0.012  # open mouth
    assert lm_dist(neutral, 8, 27, model) + 0.02 < lm_dist(expr(jaw_open=1.0), 8, 27, model)
    # Blinking the face's left eye (landmarks 42-47) closes it and leaves the other open.
    closed = expr(blink_left=1.0)
    assert lm_dist(neutral, 43, 47, model) > 0.007 and lm_dist(closed, 43, 47, model) < 0.001
    assert lm_dist(closed, 37, 41, model) == pytest.approx(lm_dist(neutral, 37, 41, model), abs=1e-5)
    smile = expr(smile_left=1.0)
    lm54 = model.landmark_indices[54]
    assert smile[lm54, 1] - neutral[lm54, 1] > 0.004 and smile[lm54, 0] > neutral[lm54, 0]
    assert expr(brow_inner_up=1.0)[model.landmark_indices[21], 1] > neutral[model.landmark_indices[21], 1] + 0.003


def test_identity_scale(model):
    rng = np.random.default_rng(0)
    pairs = model.vertices(rng.standard_normal((100, 2, model.num_id)))
    dist = np.linalg.norm(pairs[:, 0] - pairs[:, 1], axis=-1).mean(-1)
    assert 0.005 < np.median(dist) < 0.014  # two random people differ by millimetres, not cm
    for k in range(model.num_id):
        assert 0.0005 < np.abs(model.id_basis[k]).max() < 0.012, model.id_names[k]


def test_no_folds_over_the_sampling_distribution(model):
    from pyfacepnp.data.synthetic import _sample_expression

    T = model.triangles
    # Triangles of the eye opening and the mouth band collapse when the eyes or lips close.
    collapsible = np.array([r in INNER for r in model.regions])[T].all(1)

    def normals(V):
        return np.cross(V[T[:, 1]] - V[T[:, 0]], V[T[:, 2]] - V[T[:, 0]])

    n0 = normals(model.template)
    rng = np.random.default_rng(1)
    for _ in range(200):
        V = model.vertices(rng.standard_normal(model.num_id), _sample_expression(rng))
        flipped = ((normals(V) * n0).sum(1) <= 0) & ~collapsible
        assert not flipped.any()


def test_vertices_numpy_torch_and_batching(model):
    rng = np.random.default_rng(2)
    idc = rng.standard_normal((2, 3, model.num_id)).astype(np.float32)
    exc = rng.random((3, model.num_exp)).astype(np.float32)
    V = model.vertices(idc, exc)
    assert V.shape == (2, 3, 1220, 3) and V.dtype == np.float32
    Vt = model.vertices(torch.from_numpy(idc).double().requires_grad_(), torch.from_numpy(exc).double())
    assert Vt.dtype == torch.float64 and Vt.shape == (2, 3, 1220, 3)
    np.testing.assert_allclose(Vt.detach().numpy(), V, atol=1e-6)
    Vt.sum().backward()
    # A prefix of the components is accepted (missing ones are zero).
    np.testing.assert_allclose(model.vertices(idc[0, 0, :10]), model.vertices(np.pad(idc[0, 0, :10], (0, 30))), atol=1e-7)
    np.testing.assert_array_equal(model.vertices(), model.template)
    with pytest.raises(ValueError, match=r"id_coeffs must have shape \(\.\.\., K\) with K <= 40, got \(41,\)"):
        model.vertices(np.zeros(41))
