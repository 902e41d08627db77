"""WCPA track-2 format: export -> load round trip, bad files, skipping, submission array."""

import shutil

import cv2

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pyfacepnp.geometry.conventions import opencv_to_wcpa
from pyfacepnp.data.synthetic import SyntheticFaceDataset
from pyfacepnp.data.wcpa import (
    SUBMISSION_COLUMNS,
    WCPADataError,
    WCPADataset,
    collate_skip_none,
    export_synthetic,
    read_info,
    read_landmarks,
    read_list,
    read_submission,
    write_submission,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("wcpa")
    # Without pixel noise, so that JPEG loss stays small and the image comparison is tight.
    ds = SyntheticFaceDataset("val", num_samples=3, image_size=800, crop_size=64, occluder_prob=0.0, noise_prob=0.0)
    list_path = export_synthetic(root, ds)
    return root, list_path, ds


def fresh_copy(exported, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(exported[0], root)
    return root


def test_layout_and_round_trip(exported):
    root, list_path, ds = exported
    assert list_path == root / "list" / "synthetic_val.csv"
    rows = read_list(list_path)
    assert len(rows) == 3 and rows[0][1] == "00_synthetic" and rows[0][2] == "000000"
    subject = rows[0][0]
    for rel in (f"image/{subject}/00_synthetic/000000_ar.jpg", f"68landmarks/{subject}/00_synthetic/000000_68landmarks.txt",
                f"info/{subject}/00_synthetic/000000_info.npz"):
        assert (root / rel).is_file(), rel
    loaded = WCPADataset(root, "list/synthetic_val.csv", crop_size=64)
    assert len(loaded) == 3 and len(WCPADataset(root, crop_size=64)) == 3  # listing by scan too
    for i in range(3):
        src, got = ds[i], loaded[i]
        for key in ("vertices", "R_t"):
            assert torch.equal(got[key], src[key]), key
        for key in ("R", "t", "K"):
            torch.testing.assert_close(got[key], src[key], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got["landmarks68"], src["landmarks68"], atol=1e-4, rtol=0)
        # JPEG at quality 95: the images agree to a few grey levels; the loader decodes the
        # file exactly as OpenCV does (RGB order).
        assert (got["image"] - src["image"]).abs().mean() < 0.01
        bgr = cv2.imread(str(loaded.paths(i)["image"]))
        assert torch.equal(got["image"], torch.from_numpy(bgr[..., ::-1].transpose(2, 0, 1) / np.float32(255)))
        assert got["image"].shape == (3, 800, 800) and got["crop"].shape == (3, 64, 64)
        assert got["name"] == "/".join(rows[i])
        # The crop is cut around the landmarks: they land inside it.
        assert 0 < got["landmarks68_crop"].min() and got["landmarks68_crop"].max() < 64


def test_crop_from_image_matches_rendered_crop(exported):
    root, _, ds = exported
    val = SyntheticFaceDataset("val", num_samples=3, image_size=800, crop_size=96, occluder_prob=0.0, noise_prob=0.0)
    loaded = WCPADataset(root, "list/synthetic_val.csv", crop_size=96)
    for i in range(3):
        a, b = val[i], loaded[i]
        torch.testing.assert_close(a["crop_affine"], b["crop_affine"], atol=1e-3, rtol=1e-5)
        # Rendered with K_crop vs warped from the JPEG: same picture up to resampling.
        assert (a["crop"] - b["crop"]).abs().mean() < 0.04


def test_integer_landmark_format(tmp_path):
    ds = SyntheticFaceDataset("test", num_samples=1, image_size=800, crop_size=32)
    export_synthetic(tmp_path, ds, landmark_format="int", list_name="x.csv")
    txt = next((tmp_path / "68landmarks").rglob("*.txt")).read_text().split()
    assert all(v.lstrip("-").isdigit() for v in txt)  # loadable with np.loadtxt(dtype=int32)
    got = WCPADataset(tmp_path, "list/x.csv", crop_size=32)[0]
    assert (got["landmarks68"] - ds[0]["landmarks68"]).abs().max() <= 0.5 + 1e-4


@pytest.mark.parametrize(
    "damage, kind, message",
    [
        (lambda p: p.unlink(), "image", "image file is missing"),
        (lambda p: p.write_bytes(b"not a jpeg at all"), "image", "truncated or corrupt"),
        (lambda p: p.write_bytes(p.read_bytes()[:3000]), "image", "truncated or corrupt"),
        (lambda p: p.write_text("1 2\n3 4\n"), "landmarks", r"expected 68 lines of 'x y', got an array of shape \(2, 2\)"),
        (lambda p: p.write_text("a b\n" * 68), "landmarks", "not numeric text"),
        (lambda p: p.write_text("nan 1\n" * 68), "landmarks", "NaN or infinite"),
        (lambda p: np.savez(open(p, "wb"), vertices=np.zeros((1220, 3)), R_t=np.eye(4)), "info",
         r"missing key\(s\) \['verts'\]; found \['R_t', 'vertices'\]"),
        (lambda p: np.savez(open(p, "wb"), verts=np.zeros((1000, 3)), R_t=np.eye(4)), "info",
         r"verts must have shape \(1220, 3\), got \(1000, 3\)"),
        (lambda p: np.savez(open(p, "wb"), verts=np.zeros((1220, 3)), R_t=2 * np.eye(4)), "info", "not a rigid"),
        (lambda p: p.write_bytes(b"PK garbage"), "info", r"not a readable \.npz file"),
    ],
)
def test_bad_files_name_the_file(exported, tmp_path, damage, kind, message):
    root = fresh_copy(exported, tmp_path)
    ds = WCPADataset(root, "list/synthetic_val.csv", crop_size=32, require_info=True)
    path = ds.paths(1)[kind]
    damage(path)
    with pytest.raises(WCPADataError, match=message) as err:
        ds[1]
    assert err.value.path == str(path) and str(path) in str(err.value)
    ds[0], ds[2]  # the other samples still load


def test_skip_and_count(exported, tmp_path):
    root = fresh_copy(exported, tmp_path)
    ds = WCPADataset(root, "list/synthetic_val.csv", crop_size=32, on_error="skip")
    ds.paths(1)["landmarks"].write_text("garbage")
    with pytest.warns(UserWarning, match="skipping sample 1"):
        assert ds[1] is None
    assert ds.num_skipped == 1
    loader = DataLoader(ds, batch_size=3, collate_fn=collate_skip_none, num_workers=0)
    with pytest.warns(UserWarning):
        batch = next(iter(loader))
    assert batch["num_skipped"].item() == 1 and batch["crop"].shape == (2, 3, 32, 32)
    assert batch["name"] == ["/".join(ds.samples[0]), "/".join(ds.samples[2])]


def test_missing_info_and_list_errors(exported, tmp_path):
    root = fresh_copy(exported, tmp_path)
    shutil.rmtree(root / "info")
    item = WCPADataset(root, "list/synthetic_val.csv", crop_size=32)[0]  # test-set style
    assert "vertices" not in item and "R_t" not in item
    with pytest.raises(WCPADataError, match="info file is missing"):
        WCPADataset(root, "list/synthetic_val.csv", crop_size=32, require_info=True)[0]
    (root / "list" / "bad.csv").write_text("subject,img\n1,2\n")
    with pytest.raises(WCPADataError, match=r"list CSV lacks column\(s\) \['subject_id', 'facial_action', 'img_id'\]"):
        WCPADataset(root, "list/bad.csv")
    with pytest.raises(WCPADataError, match="list file is missing"):
        WCPADataset(root, "list/none.csv")
    with pytest.raises(WCPADataError, match="dataset root is not a directory"):
        WCPADataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="on_error must be"):
        WCPADataset(root, on_error="ignore")


def test_readers_accept_challenge_style_files(tmp_path):
    # Integer landmark text (as distributed) and float64 npz arrays.
    p = tmp_path / "a_68landmarks.txt"
    p.write_text("".join(f"{i} {2 * i}\n" for i in range(68)))
    assert read_landmarks(p)[5].tolist() == [5.0, 10.0]
    q = tmp_path / "a_info.npz"
    R_t = np.eye(4)
    R_t[3, :3] = [0.01, 0.02, -0.5]
    np.savez(q, verts=np.ones((1220, 3)), R_t=R_t)
    verts, rt = read_info(q)
    assert verts.dtype == np.float32 and rt[3, 2] == np.float32(-0.5)


def test_submission_layout_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    n = 4
    V = rng.normal(0, 0.05, (n, 1220, 3))
    R = np.linalg.qr(rng.normal(size=(n, 3, 3)))[0]
    R *= np.sign(np.linalg.det(R))[:, None, None]
    t = rng.normal(0, 0.1, (n, 3)) + [0, 0, 0.5]
    arr = write_submission(tmp_path / "sub.npy", torch.from_numpy(V), R, t)
    on_disk = np.load(tmp_path / "sub.npy")
    assert on_disk.shape == (n, SUBMISSION_COLUMNS) == (n, 3672) and on_disk.dtype == np.float32
    np.testing.assert_array_equal(on_disk, arr)
    R_t = opencv_to_wcpa(R, t)
    np.testing.assert_allclose(on_disk[:, :3660], V.reshape(n, -1), atol=1e-7)
    np.testing.assert_allclose(on_disk[:, 3660:3669], R_t[:, :3, :3].reshape(n, 9), atol=1e-7)
    np.testing.assert_allclose(on_disk[:, 3669:], R_t[:, 3, :3], atol=1e-7)
    V2, R2, t2 = read_submission(tmp_path / "sub.npy")
    np.testing.assert_allclose(V2, V, atol=1e-7)
    np.testing.assert_allclose(R2, R, atol=1e-6)
    np.testing.assert_allclose(t2, t, atol=1e-6)
    # The WCPA-convention path writes R_t blocks unchanged.
    arr_w = write_submission(tmp_path / "w.npy", V, R_t[:, :3, :3], R_t[:, 3, :3], convention="wcpa")
    np.testing.assert_array_equal(arr_w, arr)
    with pytest.raises(ValueError, match=r"vertices must have shape \(N, 1220, 3\), got \(4, 1219, 3\)"):
        write_submission(tmp_path / "x.npy", V[:, :1219], R, t)
    with pytest.raises(ValueError, match="same N"):
        write_submission(tmp_path / "x.npy", V, R[:3], t)
    with pytest.raises(ValueError, match="NaN"):
        write_submission(tmp_path / "x.npy", V * np.nan, R, t)
    np.save(tmp_path / "bad.npy", np.zeros((2, 10)))
    with pytest.raises(WCPADataError, match=r"submission must have shape \(N, 3672\), got \(2, 10\)"):
        read_submission(tmp_path / "bad.npy")
