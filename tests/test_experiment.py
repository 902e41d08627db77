"""The end-to-end experiment's machinery: the bootstrap over identities, the control arm
(c0 switches off exactly the loss terms that flow through the PnP, with the same run
otherwise), the training data path (crop margin, one jitter, identities) and metrics.json."""

import numpy as np
import pytest
import torch

from pyfacepnp.eval.bootstrap import group_bootstrap
from pyfacepnp.train import losses as L
from pyfacepnp.train.distributed import DistInfo
from tests.test_train import stage2_setup, tiny_config


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_constant_and_two_groups():
    m, ci = group_bootstrap(np.full(50, -1.5), np.arange(50) // 5)
    assert m == -1.5 and ci == (-1.5, -1.5)
    # two identities: every replicate is (0, 1 or 2 copies of each) -> the interval's ends
    m, (lo, hi) = group_bootstrap([1.0, 1.0, 3.0, 3.0], [7, 7, 9, 9], n_boot=4000)
    assert m == 2.0 and lo == 1.0 and hi == 3.0


def test_bootstrap_resamples_identities_not_images():
    rng = np.random.default_rng(0)
    k, per = 400, 4
    effect = rng.normal(0.0, 1.0, k)  # the identity's effect, shared by its images
    values = np.repeat(effect, per) + rng.normal(0.0, 0.01, k * per)
    groups = np.repeat(np.arange(k), per)
    m, (lo, hi) = group_bootstrap(values, groups, n_boot=4000)
    se = effect.std() / np.sqrt(k)  # the standard error over identities
    assert lo < m < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.12)
    # treating the 1600 images as independent would give an interval half as wide
    _, (lo_i, hi_i) = group_bootstrap(values, None, n_boot=4000)
    assert (hi_i - lo_i) == pytest.approx((hi - lo) / 2, rel=0.15)
    # coverage on a known mean: about 95 % of intervals contain it
    hits = 0
    for s in range(200):
        r = np.random.default_rng(100 + s)
        v = np.repeat(r.normal(0.3, 1.0, 60), 3)
        _, (a, b) = group_bootstrap(v, np.repeat(np.arange(60), 3), n_boot=1000, seed=s)
        hits += a <= 0.3 <= b
    assert 0.88 <= hits / 200 <= 0.99


def test_bootstrap_errors():
    with pytest.raises(ValueError, match="at least one"):
        group_bootstrap([])
    with pytest.raises(ValueError, match="one label per value"):
        group_bootstrap([1.0, 2.0], [0])


# ---------------------------------------------------------------- the control arm
def test_stage2_weights_zero_exactly_the_pnp_terms(tmp_path):
    cfg = tiny_config(tmp_path)
    c, c0 = L.stage2_weights(cfg), L.stage2_weights(cfg, pnp_terms=False)
    assert set(L.PNP_TERMS) == {"d12", "d13"}
    assert {k for k in c if c[k] != c0[k]} == {"d12", "d13"}
    assert c0["d12"] == c0["d13"] == 0 and c0["d14"] == c["d14"] == cfg.train.shape_weight


def test_control_loss_is_the_loss_without_the_pnp_terms_and_sends_no_gradient_through_the_pnp(
        tmp_path, monkeypatch):
    cfg, net, batch, edges = stage2_setup(tmp_path)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    seen = {}
    real = L.wcpa_terms

    def spy(*args):
        out = real(*args)
        seen["terms"] = out
        return out

    monkeypatch.setattr(L, "wcpa_terms", spy)
    loss_c, m_c = L.make_stage2_loss(cfg, edges)(net, batch, gen())
    terms = seen["terms"]
    loss_c0, m_c0 = L.make_stage2_loss(cfg, edges, pnp_terms=False)(net, batch, gen())
    # the same PnP and metrics; the loss differs by exactly the masked mean of d12 + d13
    assert m_c == m_c0
    ok = torch.ones(3, dtype=torch.bool)
    pnp_part = L.masked_mean(cfg.train.camera_weight * terms.d12 + cfg.train.gt_shape_pose_weight * terms.d13, ok)
    torch.testing.assert_close(loss_c - loss_c0, pnp_part, rtol=1e-5, atol=1e-4)

    # c0's gradient is the same when the PnP's outputs are detached (nothing flows through
    # it); c's is not
    def grads(pnp_terms, detach):
        def solve(*args, **kw):
            out = real_solve(*args, **kw)
            return out._replace(R=out.R.detach(), t=out.t.detach()) if detach else out

        monkeypatch.setattr(L, "solve_pose", solve)
        net.zero_grad()
        loss, _ = L.make_stage2_loss(cfg, edges, pnp_terms=pnp_terms)(net, batch, gen())
        loss.backward()
        return torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])

    real_solve = L.solve_pose
    torch.testing.assert_close(grads(False, False), grads(False, True), rtol=0, atol=0)
    assert (grads(True, False) - grads(True, True)).abs().max() > 0


def test_arms_share_batches_augmentation_and_schedule(tmp_path):
    """With the PnP terms' weights 0 in the configuration, (c) and (c0) optimise the same
    loss: equal parameters at the end prove the same init, batches, augmentation and
    schedule; another seed differs."""
    from pyfacepnp.config import stage2_arms
    from pyfacepnp.train.stages import run_training

    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path, "arms", camera_weight=0.0, gt_shape_pose_weight=0.0)
    assert [(a.arm, a.seed) for a in stage2_arms(cfg)] == [("c", 0), ("c0", 0), ("c", 1), ("c0", 1)]
    out = run_training(cfg, info=DistInfo())
    for c, c0 in (("stage2", "stage2_c0_s0"), ("stage2_c_s1", "stage2_c0_s1")):
        a, b = out[c].state_dict(), out[c0].state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=f"{c} vs {c0}: {k}")
    a, b = out["stage2"].state_dict(), out["stage2_c_s1"].state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    assert out["stages"]["stage2_c0_s1"]["arm"] == "c0" and out["stages"]["stage2_c0_s1"]["seed"] == 1
    # the bundle carries every arm
    from pyfacepnp.models.bundle import load_bundle

    bundle = load_bundle(out["model"])
    assert [(a["name"], a["arm"], a["seed"]) for a in bundle["arms"]] == [
        (a.name, a.arm, a.seed) for a in stage2_arms(cfg)]
    torch.testing.assert_close(bundle["arms"][3]["net"].state_dict(), out["stage2_c0_s1"].state_dict())


# ---------------------------------------------------------------- the training data path
def test_training_crops_use_the_configured_margin_without_a_second_jitter(tmp_path):
    from pyfacepnp.geometry.crop import crop_affine_from_landmarks
    from pyfacepnp.train.data import cache_path, load_split

    cfg = tiny_config(tmp_path)
    crops = {}
    for margin in (0.25, 0.4):
        cfg.data.crop_margin = margin
        split = load_split(cfg.data, "train", progress=False)
        t = split.tensors
        expect = crop_affine_from_landmarks(t["landmarks68"], cfg.data.crop_size, margin=margin)
        torch.testing.assert_close(t["crop_affine"], expect.float(), rtol=1e-5, atol=1e-4)
        crops[margin] = (cache_path(cfg.data, "train", False), t["crop"])
    assert crops[0.25][0] != crops[0.4][0]  # the margin is part of the cache key
    assert not torch.equal(crops[0.25][1], crops[0.4][1])


def test_dataset_renders_only_what_is_used():
    from pyfacepnp.data.synthetic import SyntheticFaceDataset

    kw = dict(split="train", num_samples=2, image_size=96, crop_size=32)
    full, lean = SyntheticFaceDataset(**kw), SyntheticFaceDataset(**kw, render_crop=False)
    a, b = full[1], lean[1]
    assert "crop" in a and "crop" not in b
    for k in b:
        assert torch.equal(a[k], b[k]), k


def test_identities_per_sample_by_default_and_pool_configurable(tmp_path):
    from pyfacepnp.data.synthetic import SyntheticFaceDataset
    from pyfacepnp.train.data import load_split

    ds = SyntheticFaceDataset("test", num_samples=30, image_size=96, crop_size=32)
    ids = [ds.scene(i).identity for i in range(30)]
    assert ids == list(range(30))
    coeffs = {tuple(np.round(ds.scene(i).id_coeffs, 6)) for i in range(30)}
    assert len(coeffs) == 30
    pooled = SyntheticFaceDataset("test", num_samples=30, image_size=96, crop_size=32, num_identities=3)
    assert {pooled.scene(i).identity for i in range(30)} <= {0, 1, 2}
    cfg = tiny_config(tmp_path)
    t = load_split(cfg.data, "test", keep_image=True, progress=False).tensors
    assert t["identity"].dtype == torch.int64 and len(t["identity"].unique()) == cfg.data.test_samples
    cfg.data.identity_pool = 2
    t = load_split(cfg.data, "train", progress=False).tensors
    assert len(t["identity"].unique()) <= 2


def test_metrics_json_from_a_known_result(tmp_path):
    """Rows, pooled and per-seed gains on hand-made per-sample values."""
    from pyfacepnp.eval.evaluate import EvalResult
    from pyfacepnp.eval.experiment import ROW_FIELDS, metrics_dict

    n = 8
    ids = np.repeat(np.arange(4), 2)

    def metrics(d12, d13, d14):
        d12, d13, d14 = (np.full(n, float(v)) for v in (d12, d13, d14))
        return {"wcpa": d12 + d13 + 10 * d14, "d12": d12, "d13": d13, "d14": d14, "rotation_deg": np.ones(n),
                "translation_mm": np.ones(n), "vertex_mm": d14}

    res = EvalResult(n=n, identities=ids)
    res.per_sample = {"baseline": metrics(10, 10, 5), "a": metrics(4, 4, 2), "b": metrics(4, 4, 2)}
    res.per_run = {"c@0": metrics(3, 3, 2), "c0@0": metrics(4, 3, 2), "c@1": metrics(2, 3, 2),
                   "c0@1": metrics(4, 3, 2)}
    for arm in ("c", "c0"):
        res.per_sample[arm] = {k: (res.per_run[f"{arm}@0"][k] + res.per_run[f"{arm}@1"][k]) / 2
                               for k in res.per_run["c@0"]}
    res.failures = {"a": 0, "b": 1, "c": 0, "c0": 0}
    m = metrics_dict(res)
    for row in ("trivial", "a", "b", "c", "c0"):
        assert set(ROW_FIELDS) <= set(m[row])
        assert m[row]["n_samples"] == 8 and m[row]["n_identities"] == 4
    assert m["b"]["pnp_failed"] == 1
    g = m["e2e_gain"]["c_vs_c0"]
    assert g["mean"] == pytest.approx(-1.5) and g["ci95"] == pytest.approx([-1.5, -1.5])
    assert g["per_seed"]["0"]["mean"] == pytest.approx(-1.0) and g["per_seed"]["1"]["mean"] == pytest.approx(-2.0)
    assert g["terms"]["d12"]["mean"] == pytest.approx(-1.5) and g["terms"]["d14"]["mean"] == 0
    assert m["e2e_gain"]["c_vs_a"]["mean"] == pytest.approx(25.5 - 28.0)
    assert m["c"]["seeds"] == [0, 1]


def test_scale_free_targets_drop_exactly_the_scale_component():
    from pyfacepnp.data.face_model import get_face_model

    fm = get_face_model()
    assert fm.id_names[0] == "scale"
    rng = np.random.default_rng(0)
    ids, exps = rng.standard_normal((2, fm.num_id)), rng.random((2, fm.num_exp))
    batch = {"vertices": torch.from_numpy(fm.vertices(ids, exps)).float(),
             "id_coeffs": torch.from_numpy(ids).float(), "exp_coeffs": torch.from_numpy(exps).float()}
    V, c = L.scale_free_shape(batch, torch.from_numpy(np.array(fm.id_basis[0])))
    ids0 = ids.copy()
    ids0[:, 0] = 0
    torch.testing.assert_close(V, torch.from_numpy(fm.vertices(ids0, exps)).float(), atol=1e-6, rtol=0)
    assert torch.all(c[:, 0] == 0) and torch.equal(c[:, 1:], batch["id_coeffs"][:, 1:])
