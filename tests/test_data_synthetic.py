"""The synthetic dataset: keys, geometric consistency, determinism, splits, statistics."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pyfacepnp.geometry.camera import project_points
from pyfacepnp.geometry.conventions import wcpa_to_opencv
from pyfacepnp.data.synthetic import SyntheticFaceDataset


def small(split="train", **kw):
    kw.setdefault("image_size", 200)
    kw.setdefault("crop_size", 64)
    return SyntheticFaceDataset(split, num_samples=kw.pop("num_samples", 40), **kw)


def test_item_keys_shapes_dtypes():
    item = small()[3]
    shapes = {"image": (3, 200, 200), "crop": (3, 64, 64), "crop_affine": (2, 3), "K": (3, 3), "K_crop": (3, 3),
              "landmarks68": (68, 2), "landmarks68_crop": (68, 2), "vertices": (1220, 3), "R": (3, 3), "t": (3,),
              "R_t": (4, 4), "id_coeffs": (40,), "exp_coeffs": (21,), "index": (), "identity": ()}
    assert set(item) == set(shapes)
    for k, shape in shapes.items():
        assert tuple(item[k].shape) == shape, k
        assert item[k].dtype == (torch.int64 if k in ("index", "identity") else torch.float32), k
    for k in ("image", "crop"):
        assert 0.0 <= item[k].min() and item[k].max() <= 1.0 and item[k].std() > 0.02
    assert "image" not in small(render_image=False)[3]


def test_geometry_is_consistent():
    ds = small("val")
    for i in range(4):
        it = {k: v.double().numpy() for k, v in ds[i].items()}
        R, t = wcpa_to_opencv(it["R_t"])
        np.testing.assert_allclose(R, it["R"], atol=1e-6)
        np.testing.assert_allclose(t, it["t"], atol=1e-6)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
        lm3d = it["vertices"][ds.model.landmark_indices]
        np.testing.assert_allclose(project_points(lm3d, it["R"], it["t"], it["K"]), it["landmarks68"], atol=1e-3)
        A = it["crop_affine"]
        np.testing.assert_allclose(it["landmarks68"] @ A[:, :2].T + A[:, 2], it["landmarks68_crop"], atol=1e-3)
        np.testing.assert_allclose(np.vstack([A, [0, 0, 1]]) @ it["K"], it["K_crop"], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(ds.model.vertices(it["id_coeffs"], it["exp_coeffs"]), it["vertices"], atol=1e-6)
        # The face fills the crop: landmarks inside, spanning a good part of it.
        lmc = it["landmarks68_crop"]
        assert lmc.min() > 0 and lmc.max() < 64 and np.ptp(lmc, axis=0).max() > 25
    assert ds[0]["K"][0, 0].item() == pytest.approx(629.8 / 4)


def test_deterministic_and_worker_safe():
    ds = small(num_samples=6)
    a, b = ds[2], ds[2]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The crop does not depend on whether the full frame is rendered.
    assert torch.equal(small(num_samples=6, render_image=False)[2]["crop"], a["crop"])
    serial = [ds[i]["crop"] for i in range(6)]
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    batched = torch.cat([b["crop"] for b in loader])
    assert torch.equal(batched, torch.stack(serial))


def test_splits_and_seeds_differ():
    tr, va, te = small("train")[0], small("val")[0], small("test")[0]
    assert not torch.equal(tr["id_coeffs"], va["id_coeffs"]) and not torch.equal(va["id_coeffs"], te["id_coeffs"])
    assert not torch.equal(small(seed=1)[0]["R_t"], tr["R_t"])
    # Identity pools are per split: no identity vector is shared between train and test.
    ids_tr = {tuple(np.round(small("train").identity_params(k)[0], 6)) for k in range(20)}
    ids_te = {tuple(np.round(small("test").identity_params(k)[0], 6)) for k in range(20)}
    assert not ids_tr & ids_te
    # Jitter is on for training only: val crops follow the landmarks exactly.
    from pyfacepnp.geometry.crop import crop_affine_from_landmarks

    it = small("val")[1]
    np.testing.assert_allclose(crop_affine_from_landmarks(it["landmarks68"].double().numpy(), 64),
                               it["crop_affine"].double().numpy(), atol=1e-4)


def test_pose_statistics_follow_wcpa():
    ds = SyntheticFaceDataset("train", num_samples=2000)
    angles, ts = [], []
    for i in range(0, 2000, 4):
        R_t = ds.scene(i).R_t
        # Invert R_t[:3,:3] = (Rz(roll) Rx(pitch) Ry(yaw))^T for the angles.
        M = R_t[:3, :3].T
        pitch = np.arcsin(np.clip(M[2, 1], -1, 1))
        yaw = np.arctan2(-M[2, 0], M[2, 2])
        roll = np.arctan2(-M[0, 1], M[1, 1])
        angles.append([pitch, yaw, roll])
        ts.append(R_t[3, :3])
    angles, ts = np.array(angles), np.array(ts)
    std = angles.std(0)
    assert 0.24 < std[0] < 0.33 and 0.24 < std[1] < 0.33 and 0.06 < std[2] < 0.10
    assert np.abs(angles[:, :2]).max() <= 1.0 + 1e-9
    assert ts[:, 2].mean() == pytest.approx(-0.532, abs=0.01) and 0.05 < ts[:, 2].std() < 0.075


def test_argument_errors():
    with pytest.raises(ValueError, match="split must be one of"):
        SyntheticFaceDataset("training")
    with pytest.raises(ValueError, match="num_samples must be a non-negative integer, got -1"):
        SyntheticFaceDataset(num_samples=-1)
    with pytest.raises(ValueError, match="crop_size must be a positive integer"):
        SyntheticFaceDataset(crop_size=0)
    with pytest.raises(IndexError, match="index 5 out of range for a dataset of 5 samples"):
        SyntheticFaceDataset(num_samples=5)[5]


def test_supersampling_smooths_edges_without_moving_the_picture():
    kw = dict(num_samples=4, crop_size=96, noise_prob=0.0, blur_prob=0.0)
    for i in range(4):
        sharp, smooth = small(supersample=1, **kw)[i]["crop"], small(supersample=2, **kw)[i]["crop"]
        assert (sharp - smooth).abs().mean() < 0.03
        lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).expand(3, 1, 3, 3)
        energy = [torch.nn.functional.conv2d(c[None], lap, groups=3).pow(2).mean() for c in (sharp, smooth)]
        assert energy[1] < 0.8 * energy[0]
    with pytest.raises(ValueError, match="supersample must be a positive integer, got 0"):
        small(supersample=0)
