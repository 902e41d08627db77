"""Training: losses, schedule, checkpoints, configuration, batch order, resume, DDP, masking."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import pyfacepnp
from pyfacepnp.config import RunConfig, make_config, set_dotted
from pyfacepnp.files import load_checkpoint, save_atomic
from pyfacepnp.geometry.mesh import edges_from_triangles
from pyfacepnp.train import losses as L
from pyfacepnp.train.data import TensorSplit, step_batches
from pyfacepnp.train.distributed import DistInfo
from pyfacepnp.train.schedule import warmup_cosine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(tmp_path, name="run", **train):
    """Smallest configuration that exercises every stage (seconds on 2 cores)."""
    cfg = make_config("quick", name=name, out_dir=str(tmp_path / "runs"))
    over = {"data.train_samples": 24, "data.test_samples": 8, "data.val_samples": 8,
            "data.image_size": 96, "data.crop_size": 32, "data.detector_size": 32,
            "data.cache_dir": str(tmp_path / "cache"), "data.render_workers": 0,
            "model.widths": "8,8", "model.depths": "1,1", "model.strides": "2,2", "model.stem_width": 8,
            "model.head_hidden": 16, "model.detector_widths": "8,8", "model.detector_depths": "1,1",
            "train.batch_size": 8, "train.detector_steps": 4, "train.stage1_steps": 6,
            "train.stage2_steps": 4, "train.warmup_steps": 2, "train.checkpoint_every": 2,
            "train.log_every": 2}
    for k, v in {**over, **{f"train.{k}": v for k, v in train.items()}}.items():
        set_dotted(cfg, k, v)
    return cfg


# ---------------------------------------------------------------- losses
def test_gaussian_nll_is_minimised_at_the_residual_variance():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 2.0], [0.5, 3.0], [2.0, 2.0]]])
    best = torch.log(target ** 2)
    for delta in (-0.3, 0.3):
        assert L.gaussian_nll(pred, best, target) < L.gaussian_nll(pred, best + delta, target)
    # per point (isotropic): the minimiser is the mean squared residual per axis
    best_pt = torch.log((target ** 2).mean(-1))
    for delta in (-0.3, 0.3):
        assert L.gaussian_nll(pred, best_pt, target) < L.gaussian_nll(pred, best_pt + delta, target)
    lv = best.clone().requires_grad_()
    L.gaussian_nll(pred, lv, target).sum().backward()
    assert lv.grad.abs().max() < 1e-6
    # beta-NLL keeps the minimiser and scales the position gradient by sigma^(2 beta)
    lv = best.clone().requires_grad_()
    L.gaussian_nll(pred, lv, target, beta=0.5).sum().backward()
    assert lv.grad.abs().max() < 1e-6
    p0 = pred.clone().requires_grad_()
    L.gaussian_nll(p0, best, target).sum().backward()
    p1 = pred.clone().requires_grad_()
    L.gaussian_nll(p1, best, target, beta=0.5).sum().backward()
    torch.testing.assert_close(p1.grad, p0.grad * torch.exp(0.5 * best))


def test_vertex_and_edge_losses_in_millimetres():
    v = torch.zeros(1, 3, 3)
    v[0, 1, 0], v[0, 2, 1] = 0.01, 0.01
    edges = edges_from_triangles(np.array([[0, 1, 2], [2, 1, 0]]))
    assert edges.tolist() == [[0, 1], [0, 2], [1, 2]]
    shifted = v + 0.002  # a translation changes vertices, not edge lengths
    torch.testing.assert_close(L.vertex_l1(shifted, v), torch.tensor([2.0]))
    torch.testing.assert_close(L.edge_length_l1(shifted, v, edges), torch.tensor([0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(L.edge_length_l1(2 * v, v, edges), torch.tensor([(10 + 10 + 10 * 2 ** 0.5) / 3]))


def test_masked_mean_keeps_nan_out_of_value_and_gradient():
    x = torch.tensor([1.0, float("nan"), 3.0], requires_grad=True)
    y = torch.sqrt(x)  # NaN upstream of the masked entry
    m = torch.tensor([True, False, True])
    out = L.masked_mean(y, m)
    out.backward()
    torch.testing.assert_close(out, (1.0 + 3.0 ** 0.5) / 2 * torch.ones(()))
    assert torch.isfinite(x.grad[[0, 2]]).all()
    assert L.masked_mean(y, torch.zeros(3, dtype=torch.bool)) == 0


# ---------------------------------------------------------------- schedule, config, checkpoints
def test_warmup_cosine():
    lrs = [warmup_cosine(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.02)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_config_overrides_presets_and_round_trip(tmp_path):
    cfg = make_config("gpu", {"train.batch_size": "64", "model.widths": "8,16", "train.amp": "false"})
    assert cfg.train.batch_size == 64 and cfg.model.widths == (8, 16) and cfg.train.amp is False
    assert cfg.data.crop_size == 256  # from the preset
    path = tmp_path / "config.json"
    cfg.save(str(path))
    assert RunConfig.load(str(path)) == cfg
    with pytest.raises(ValueError, match="'train.batch_size' expects int, got 'abc'"):
        set_dotted(cfg, "train.batch_size", "abc")
    with pytest.raises(ValueError, match="unknown configuration field 'train.nope'"):
        set_dotted(cfg, "train.nope", 1)
    with pytest.raises(ValueError, match="preset must be one of"):
        make_config("huge")


def test_checkpoints_are_atomic_and_weights_only(tmp_path):
    path = str(tmp_path / "ck.pt")
    save_atomic({"step": 3, "model": {"w": torch.ones(2)}}, path)
    assert load_checkpoint(path)["step"] == 3
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []
    umask = os.umask(0o022)
    try:  # the permissions an ordinary open() gives, not mkstemp's owner-only 0600
        save_atomic({"step": 4}, path)
        assert os.stat(path).st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)

    from fractions import Fraction  # an arbitrary pickled object, refused by weights_only

    torch.save({"x": Fraction(1, 3)}, str(tmp_path / "pickle.pt"))
    with pytest.raises(ValueError, match="pickle.pt' could not be loaded"):
        load_checkpoint(str(tmp_path / "pickle.pt"))
    (tmp_path / "trunc.pt").write_bytes(open(path, "rb").read()[:50])
    with pytest.raises(ValueError, match="trunc.pt' could not be loaded"):
        load_checkpoint(str(tmp_path / "trunc.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(str(tmp_path / "missing.pt"))


# ---------------------------------------------------------------- batch order
def test_step_batches_resume_replays_and_ranks_partition():
    src = TensorSplit({"i": torch.arange(20)})
    full = [b["i"].tolist() for _, b in step_batches(src, 4, 0, 12, seed=5, info=DistInfo())]
    assert len(full) == 12 and all(len(b) == 4 for b in full)
    assert sorted(sum(full[:5], [])) == list(range(20))  # an epoch is a permutation
    assert full[:5] != full[5:10]  # and the next epoch another one
    resumed = [b["i"].tolist() for _, b in step_batches(src, 4, 7, 12, seed=5, info=DistInfo())]
    assert resumed == full[7:]
    r0 = [b["i"].tolist() for _, b in step_batches(src, 4, 0, 2, 5, DistInfo(0, 2))]
    r1 = [b["i"].tolist() for _, b in step_batches(src, 4, 0, 2, 5, DistInfo(1, 2))]
    assert not set(sum(r0, [])) & set(sum(r1, []))
    with pytest.raises(ValueError, match="batch_size=32 is larger than the 20 samples"):
        next(step_batches(src, 32, 0, 1, 0, DistInfo()))


# ---------------------------------------------------------------- stage 2 masking
def stage2_setup(tmp_path):
    """A tiny face network, a batch of 3 and the mesh edges for the stage-2 objective: an
    untrained network predicts the same landmarks for every crop, so they start at the
    template seen under another pose (every problem well posed but off)."""
    from pyfacepnp.models.bundle import build_models
    from tests.test_model import random_rotation, tiny_face_model

    fm = tiny_face_model()
    cfg = tiny_config(tmp_path)
    _, net = build_models(cfg, fm)
    net.eval()  # per-sample independence (no batch statistics)
    g = torch.Generator().manual_seed(0)
    b = 3
    R = torch.stack([random_rotation(g, 0.2) for _ in range(b)]).float()
    t = torch.tensor([[0.0, 0.0, 0.5]]).repeat(b, 1)
    K = torch.tensor([[60.0, 0, 48], [0, 60.0, 48], [0, 0, 1]]).expand(b, 3, 3).contiguous()
    A = torch.tensor([[0.7, 0.0, -18.0], [0.0, 0.7, -18.0]]).expand(b, 2, 3).contiguous()
    verts = torch.from_numpy(fm.template).expand(b, -1, -1).contiguous()
    batch = {"crop": torch.randint(0, 255, (b, 3, 32, 32), dtype=torch.uint8, generator=g),
             "vertices": verts, "R": R, "t": t, "K": K, "crop_affine": A}
    R_ref = random_rotation(g, 0.2).float()[None]
    net.landmark_head.set_mean_landmarks(L.gt_crop_landmarks(
        {"vertices": verts[:1], "R": R_ref, "t": t[:1], "K": K[:1], "crop_affine": A[:1]})[0])
    return cfg, net, batch, edges_from_triangles(fm.triangles)


def capture_output_grads(net):
    """A forward hook keeping the gradients of the network's vertices, landmarks and
    log-variances: ``(captured outputs, hook handle)``."""
    captured = {}

    def keep_outputs(module, inputs, output):
        for k in ("vertices", "landmarks", "log_var"):
            output[k].retain_grad()
        captured.update(output)

    return captured, net.register_forward_hook(keep_outputs)


def test_stage2_loss_masks_failed_pnp(monkeypatch, tmp_path):
    from pyfacepnp.models.pose import PoseOutput

    cfg, net, batch, edges = stage2_setup(tmp_path)
    real = L.solve_pose

    def failing(*args, **kw):  # problem 1 fails: garbage pose, non-converged status
        out = real(*args, **kw)
        R_bad = out.R.clone()
        R_bad[1] = float("nan")
        status = out.status.clone()
        status[1] = int(pyfacepnp.PnPStatus.MAX_ITERATIONS)
        return PoseOutput(R_bad, out.t, status, out.landmarks_image, out.weights, out.camera_vertices)

    monkeypatch.setattr(L, "solve_pose", failing)
    loss_fn = L.make_stage2_loss(cfg, edges)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    loss, metrics = loss_fn(net, batch, gen())
    assert torch.isfinite(loss) and metrics["pnp_failed"] == pytest.approx(1 / 3)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    # with the branch terms off, the failed sample sends no gradient into the network
    cfg.train.stage2_branch_weight = 0.0
    loss_fn = L.make_stage2_loss(cfg, edges)
    captured, handle = capture_output_grads(net)
    loss, _ = loss_fn(net, batch, gen())
    loss.backward()
    handle.remove()
    for k in ("vertices", "landmarks"):
        grad = captured[k].grad
        assert torch.all(grad[1] == 0), k
        assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0, k


def test_stage2_pose_nll_loss_trains_both_branches(tmp_path):
    """The pose-distribution variant of stage 2: the Laplace NLL of the GT pose replaces d12 and
    d13; it is finite, its gradient reaches both branches through the op, and the control arm
    (no PnP terms) is the same whatever the variant."""
    cfg, net, batch, edges = stage2_setup(tmp_path)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    cfg.train.stage2_branch_weight = 0.0
    cfg.train.shape_weight = 0.0  # only the term that flows through the PnP
    cfg.train.stage2_pnp_loss = "pose_nll"
    captured, handle = capture_output_grads(net)
    loss, metrics = L.make_stage2_loss(cfg, edges)(net, batch, gen())
    loss.backward()
    handle.remove()
    assert torch.isfinite(loss) and loss.item() != 0 and metrics["pnp_failed"] == 0
    for k in ("vertices", "landmarks", "log_var"):
        assert captured[k].grad.abs().sum() > 0, k
    control_nll, _ = L.make_stage2_loss(cfg, edges, pnp_terms=False)(net, batch, gen())
    cfg.train.stage2_pnp_loss = "wcpa"
    control_wcpa, _ = L.make_stage2_loss(cfg, edges, pnp_terms=False)(net, batch, gen())
    assert control_nll.item() == control_wcpa.item() == 0.0
    cfg.train.stage2_pnp_loss = "kl"
    with pytest.raises(ValueError, match="stage2_pnp_loss"):
        L.make_stage2_loss(cfg, edges)


# ---------------------------------------------------------------- end-to-end runs (real renderer)
def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_resume_continues_exactly(tmp_path):
    from pyfacepnp.train.stages import run_training

    torch.set_num_threads(1)
    cfg_a = tiny_config(tmp_path, "straight")
    straight = run_training(cfg_a, info=DistInfo())
    cfg_b = tiny_config(tmp_path, "stopped")
    first = run_training(cfg_b, stop_after={"stage1": 4}, info=DistInfo())
    assert first.get("stopped")
    ck = load_checkpoint(os.path.join(cfg_b.run_dir, "checkpoints", "stage1.pt"))
    assert ck["step"] == 4 and not ck["done"]
    resumed = run_training(cfg_b, resume=True, info=DistInfo())
    for name in ("detector", "stage1", "stage2"):
        a, b = _params(straight[name]), _params(resumed[name])
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=f"{name}.{k}")
    # the metrics CSV of the resumed run equals the uninterrupted one's (minus timing)
    def rows(run, stage):
        import csv
        with open(os.path.join(run, f"{stage}_log.csv")) as f:
            return [{k: v for k, v in r.items() if k != "img_per_s"} for r in csv.DictReader(f)]
    assert rows(cfg_a.run_dir, "stage1") == rows(cfg_b.run_dir, "stage1")
    saved = json.load(open(os.path.join(cfg_b.run_dir, "config.json")))
    assert saved["train"]["stage1_steps"] == 6


def test_ddp_two_cpu_processes_keep_identical_parameters(tmp_path):
    cfg = tiny_config(tmp_path, "ddp")
    cfg.train.batch_size = 4
    cfg.save(str(tmp_path / "cfg.json"))
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        torch.set_num_threads(1)
        from pyfacepnp.config import RunConfig
        from pyfacepnp.train.distributed import init_distributed, shutdown
        from pyfacepnp.train.stages import run_training
        import torch.distributed as dist
        cfg = RunConfig.load({str(tmp_path / 'cfg.json')!r})
        info = init_distributed("cpu")
        assert dist.is_initialized() and dist.get_backend() == "gloo" and info.world_size == 2
        out = run_training(cfg, info=info)
        torch.save({{k: out[k].state_dict() for k in ("detector", "stage1", "stage2")}},
                   os.path.join({str(tmp_path)!r}, f"rank{{info.rank}}.pt"))
        shutdown(info)
    """))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    moved = 0
    for name in r0:
        for k in r0[name]:
            torch.testing.assert_close(r0[name][k], r1[name][k], atol=0, rtol=0, msg=f"{name}.{k}")
    # and training did change them (the check above is not comparing two initialisations)
    first = load_checkpoint(os.path.join(cfg.run_dir, "checkpoints", "stage1.pt"))
    assert first["done"] and first["step"] == cfg.train.stage1_steps
    from pyfacepnp.models.bundle import build_models, default_face_model
    torch.manual_seed(cfg.train.seed)
    _, fresh = build_models(cfg, default_face_model())
    for k, v in fresh.state_dict().items():
        if v.is_floating_point() and not torch.equal(v, r0["stage1"][k]):
            moved += 1
    assert moved > 0


def test_geometric_jitter_recrops_consistently_with_the_affine():
    from pyfacepnp.geometry.crop import warp_image
    from pyfacepnp.train.augment import geometric_jitter

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(200.0), torch.arange(200.0), indexing="ij")
    frame = torch.stack([torch.sin(xx / 9), torch.cos(yy / 7), torch.sin((xx + yy) / 13)])[None] * 0.4 + 0.5
    frame = frame.expand(3, -1, -1, -1)
    A = torch.tensor([[0.8, 0.1, -30.0], [-0.1, 0.8, -20.0]]).expand(3, 2, 3).contiguous()
    crop = (warp_image(frame, A, 64) * 255).round().to(torch.uint8)
    out = geometric_jitter({"crop": crop, "crop_affine": A}, g)
    assert not torch.allclose(out["crop_affine"], A)
    direct = warp_image(frame, out["crop_affine"], 64) * 255
    inner = np.s_[:, :, 12:-12, 12:-12]  # away from the zero-padded border of the re-crop
    assert (out["crop"].float()[inner] - direct[inner]).abs().mean() < 2.0


# ---------------------------------------------------------------- resume: more steps, other configs, temporaries
def _leave_interrupted_checkpoint(target):
    """A process killed while save_atomic writes ``target``: its temporary stays behind."""
    code = ("import os, torch\nfrom pyfacepnp import files as c\n"
            "os.replace = lambda *a: os._exit(3)\n"
            f"c.save_atomic({{'w': torch.zeros(500000)}}, {str(target)!r})\n")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 3, proc.stderr.decode()[-2000:]
    left = [p for p in os.listdir(os.path.dirname(target)) if p.startswith(".tmp-")]
    assert len(left) == 1 and os.path.getsize(os.path.join(os.path.dirname(target), left[0])) > 1_000_000
    return os.path.join(os.path.dirname(target), left[0])


def test_resume_with_more_steps_trains_on_and_cleans_temporaries(tmp_path):
    from pyfacepnp.train.stages import run_training

    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path, "grow")
    first = run_training(cfg, info=DistInfo())
    stage1_before = _params(first["stage1"])
    ck_dir = os.path.join(cfg.run_dir, "checkpoints")
    leftovers = [_leave_interrupted_checkpoint(os.path.join(ck_dir, "stage1.pt")),
                 _leave_interrupted_checkpoint(os.path.join(cfg.run_dir, "model.pt"))]
    decoys = [os.path.join(cfg.run_dir, n) for n in (".tmp-notes.txt", ".tmp-abcd1234.pt.bak", "keep.pt")]
    decoys.append(os.path.join(ck_dir, ".tmp-abc.pt"))  # not what mkstemp names
    for d in decoys:
        open(d, "w").close()
    os.makedirs(os.path.join(cfg.run_dir, ".tmp-dir12345.pt"))

    cfg.train.stage1_steps, cfg.train.stage2_steps = 8, 6  # larger counts on a finished run
    out = run_training(cfg, resume=True, info=DistInfo())
    assert not out.get("stopped") and os.path.isfile(out["model"])
    st = out["stages"]
    assert st["detector"].get("skipped") and st["detector"]["steps"] == 4
    assert (st["stage1"]["start"], st["stage1"]["steps"]) == (6, 8)
    assert (st["stage2"]["start"], st["stage2"]["steps"]) == (0, 6)  # retrained from the new stage 1
    for name, steps in (("stage1", 8), ("stage2", 6)):
        ck = load_checkpoint(os.path.join(ck_dir, f"{name}.pt"))
        assert ck["done"] and ck["step"] == steps
    after = _params(out["stage1"])
    assert any(not torch.equal(stage1_before[k], after[k]) for k in after if after[k].is_floating_point())
    import csv
    with open(os.path.join(cfg.run_dir, "stage1_log.csv")) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4, 6, 8]
    assert not any(os.path.exists(p) for p in leftovers)
    assert all(os.path.exists(d) for d in decoys) and os.path.isdir(os.path.join(cfg.run_dir, ".tmp-dir12345.pt"))
    # resumed again with the same counts: every stage is finished, nothing trains
    again = run_training(cfg, resume=True, info=DistInfo())
    assert all(s.get("skipped") for s in again["stages"].values()) and not again.get("stopped")
    for k, v in _params(again["stage2"]).items():
        assert torch.equal(v, _params(out["stage2"])[k]), k


def test_resume_refuses_another_configuration(tmp_path):
    from pyfacepnp.train.checkpoint import check_resume_config
    from pyfacepnp.train.stages import run_training

    cfg = tiny_config(tmp_path, "fixed")
    path = os.path.join(cfg.run_dir, "checkpoints", "detector.pt")
    save_atomic({"stage": "detector", "step": 2, "done": False, "model": {}, "optimizer": {},
                 "config": cfg.to_dict()}, path)
    other = tiny_config(tmp_path, "fixed", lr=1e-3, stage1_steps=50)
    set_dotted(other, "model.widths", "8,16")
    with pytest.raises(ValueError) as err:
        run_training(other, resume=True, info=DistInfo())
    msg = str(err.value)
    assert "train.lr: 0.002 in the checkpoint, 0.001 now" in msg and "model.widths: [8, 8]" in msg
    assert "detector.pt" in msg and "stage1_steps" not in msg
    assert not os.path.exists(os.path.join(cfg.run_dir, "config.json"))  # refused before touching the run
    # step counts and bookkeeping may change
    ok = tiny_config(tmp_path, "fixed", detector_steps=9, stage2_steps=7, log_every=1, checkpoint_every=3)
    ok.threads, ok.data.render_workers = 1, 2
    check_resume_config(ok, [path])
    save_atomic({"step": 2, "model": {}}, path)
    with pytest.raises(ValueError, match="holds no configuration"):
        check_resume_config(ok, [path])
