"""Command line: info, the quick demo (the CI smoke test of the whole job), eval, predict, errors."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=600):
    # Passive OpenMP waiting: on a shared 2-core machine spinning threads starve each other.
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return subprocess.run([sys.executable, "-m", "pyfacepnp", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def cli_main(capsys, *args):
    """The command line in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from pyfacepnp.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_prints_versions_and_build_info():
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    assert "torch " in proc.stdout and "pyfacepnp " in proc.stdout
    line = next(line for line in proc.stdout.splitlines() if line.startswith("build_info: "))
    info = json.loads(line[len("build_info: "):])
    assert isinstance(info["with_cuda"], bool)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    proc = run_cli("demo", "--quick", "--out_dir", str(out), "--data.cache_dir", str(out / "cache"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "demo-quick", proc


def test_quick_demo_writes_report_and_prints_table_last(quick_demo):
    run_dir, proc = quick_demo
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("|")
    start = max(i for i, line in enumerate(lines) if not line.startswith("|")) + 1
    table = lines[start:]  # the last block of the output is the table
    assert len(table) == 9  # header, rule, baseline, (a) (b) (c) (c0), two oracle floors
    for label in ("trivial baseline", "(a) stage-1 net + cv2.solvePnP", "(b) stage-1 net + pyfacepnp.solve_pnp",
                  "(c) end-to-end net", "(c0) control", "oracle: template shape", "oracle: everything known"):
        assert any(label in row for row in table), label
    # the experiment's verdicts come before it, with intervals
    assert any("(c0)" in line and "95 % CI" in line for line in lines[:start])
    report = (run_dir / "report.md").read_text()
    assert "| method | WCPA score" in report and "loss_curves.png" in report and "overlay_0.png" in report
    for f in ("loss_curves.png", "overlays/overlay_0.png", "config.json", "model.pt", "eval.json",
              "metrics.json", "stage1_log.csv", "stage2_log.csv", "detector_log.csv", "stage2_c0_s0_log.csv",
              "stage2_c_s1_log.csv", "stage2_c0_s1_log.csv"):
        assert (run_dir / f).is_file(), f
    ev = json.loads((run_dir / "eval.json").read_text())
    for m in ("baseline", "a", "b", "c"):
        assert np.isfinite(ev["methods"][m]["wcpa"]) and ev["methods"][m]["wcpa"] > 0
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["name"] == "demo-quick" and cfg["data"]["crop_size"] == 64
    check_metrics_schema(json.loads((run_dir / "metrics.json").read_text()), n=24, seeds=[0, 1])
    assert "## The end-to-end experiment" in report


def check_metrics_schema(m, n, seeds):
    """metrics.json: every row with every field, the gain with its intervals, the floors."""
    fields = {"wcpa", "d12", "d13", "d14", "rotation_deg", "translation_mm", "vertex_mm", "pnp_failed",
              "n_samples", "n_identities"}
    for row in ("trivial", "a", "b", "c", "c0"):
        assert fields <= set(m[row]), row
        assert m[row]["n_samples"] == n and m[row]["n_identities"] == n, row  # one identity per sample
        for k in fields - {"n_samples", "n_identities", "pnp_failed"}:
            assert np.isfinite(m[row][k]), (row, k)
        # the score is its terms
        assert m[row]["wcpa"] == pytest.approx(m[row]["d12"] + m[row]["d13"] + 10 * m[row]["d14"], rel=1e-9)
    for row in ("c", "c0"):
        assert m[row]["seeds"] == seeds and sorted(m[row]["per_seed"]) == [str(s) for s in seeds]
        assert m[row]["wcpa"] == pytest.approx(np.mean([m[row]["per_seed"][str(s)]["wcpa"] for s in seeds]))
    for key, other in (("c_vs_c0", "c0"), ("c_vs_a", "a")):
        g = m["e2e_gain"][key]
        lo, hi = g["ci95"]
        assert lo <= g["mean"] <= hi
        assert g["mean"] == pytest.approx(m["c"]["wcpa"] - m[other]["wcpa"], abs=1e-6)
        assert sorted(g["per_seed"]) == [str(s) for s in seeds]
        for s in seeds:
            d = g["per_seed"][str(s)]
            base = m[other]["per_seed"][str(s)]["wcpa"] if other == "c0" else m["a"]["wcpa"]
            assert d["mean"] == pytest.approx(m["c"]["per_seed"][str(s)]["wcpa"] - base, abs=1e-6)
            assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
        assert set(g["terms"]) == {"wcpa", "d12", "d13", "d14"}
    for floor in ("template_exact_landmarks", "all_but_scale"):
        assert np.isfinite(m["oracle_floors"][floor]["wcpa"])
    # with the shape known up to its scale and exact landmarks, the floor beats the template's
    assert m["oracle_floors"]["all_but_scale"]["wcpa"] < m["oracle_floors"]["template_exact_landmarks"]["wcpa"]


def test_eval_command_on_a_trained_bundle(quick_demo, tmp_path, capsys):
    run_dir, _ = quick_demo
    code, out, err = cli_main(capsys, "eval", "--checkpoint", str(run_dir / "model.pt"), "--out", str(tmp_path),
                              "--cv2-method", "iterative")
    assert code == 0, err[-3000:]
    lines = out.strip().splitlines()
    assert lines[-1].startswith("| oracle") and any(line.startswith("| (c0) control") for line in lines)
    assert (tmp_path / "report.md").is_file()
    check_metrics_schema(json.loads((tmp_path / "metrics.json").read_text()), n=24, seeds=[0, 1])


def test_predict_writes_overlay_pose_and_vertices(quick_demo, tmp_path, capsys):
    run_dir, _ = quick_demo
    # a non-square frame of another size: predict pads and resizes it
    img = (np.random.default_rng(0).random((150, 120, 3)) * 255).astype(np.uint8)
    path = str(tmp_path / "face.jpg")
    cv2.imwrite(path, img)
    # (noise, no face: the learned detector, which always answers; the default would be a
    # pretrained real-face detector when one is installed, tests/test_real_photos.py)
    code, out, err = cli_main(capsys, "predict", path, "--checkpoint", str(run_dir / "model.pt"),
                              "--out", str(tmp_path / "pred"), "--detector", "learned")
    assert code == 0, err[-3000:]
    assert "coarse landmarks: learned detector" in out
    npz = np.load(tmp_path / "pred" / "face.npz")
    assert npz["R"].shape == (3, 3) and npz["t"].shape == (3,) and npz["vertices"].shape[1] == 3
    np.testing.assert_allclose(npz["R"] @ npz["R"].T, np.eye(3), atol=1e-4)
    meta = json.loads((tmp_path / "pred" / "face.json").read_text())
    assert np.allclose(meta["t"], npz["t"], atol=1e-6)
    overlay = cv2.imread(str(tmp_path / "pred" / "face_overlay.png"))
    assert overlay.shape == img.shape


def test_cli_errors_name_the_problem(quick_demo, tmp_path, capsys):
    run_dir, _ = quick_demo
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    code, _, err = cli_main(capsys, "predict", str(bad), "--checkpoint", str(run_dir / "model.pt"),
                            "--out", str(tmp_path))
    assert code == 2 and "cannot read image file" in err and "not_an_image.png" in err
    code, _, err = cli_main(capsys, "eval", "--checkpoint", str(tmp_path / "missing.pt"))
    assert code == 2 and "missing.pt" in err and "does not exist" in err
    code, _, err = cli_main(capsys, "eval", "--checkpoint", str(run_dir / "checkpoints" / "stage1.pt"))
    assert code == 2 and "not a model bundle" in err
    code, _, err = cli_main(capsys, "train", "--train.batch_size", "abc")
    assert code == 2 and "'train.batch_size' expects int" in err


def test_eval_on_a_wcpa_format_folder(quick_demo, tmp_path, capsys):
    from pyfacepnp.data.synthetic import SyntheticFaceDataset
    from pyfacepnp.data.wcpa import export_synthetic

    run_dir, _ = quick_demo
    ds = SyntheticFaceDataset("test", num_samples=3, seed=7, image_size=800, crop_size=64)
    lst = export_synthetic(tmp_path / "wcpa", ds)
    code, _, err = cli_main(capsys, "eval", "--checkpoint", str(run_dir / "model.pt"), "--wcpa-root",
                            str(tmp_path / "wcpa"), "--wcpa-list", str(lst), "--out", str(tmp_path / "report"))
    assert code == 0, err[-3000:]
    ev = json.loads((tmp_path / "report" / "eval.json").read_text())
    assert ev["n"] == 3 and all(np.isfinite(ev["methods"][m]["wcpa"]) for m in ("baseline", "a", "b", "c"))


def test_train_resume_with_more_steps_finishes_and_a_changed_config_is_refused(tmp_path, capsys):
    from tests.test_train import tiny_config

    cfg = tiny_config(tmp_path, "cli-resume")
    cfg.save(str(tmp_path / "cfg.json"))
    base = ("train", "--config", str(tmp_path / "cfg.json"))
    code, out, err = cli_main(capsys, *base)
    assert code == 0 and "model bundle" in out, err[-3000:]
    # A finished run resumed with a larger step count trains to it (it used to print
    # "training stopped before the end; continue with --resume" and exit 0, forever).
    for _ in range(2):
        code, out, err = cli_main(capsys, *base, "--train.stage2_steps", "6", "--resume")
        assert code == 0 and "model bundle" in out and "training stopped" not in out, out + err[-3000:]
    from pyfacepnp.files import load_checkpoint

    ck = load_checkpoint(os.path.join(cfg.run_dir, "checkpoints", "stage2.pt"))
    assert ck["done"] and ck["step"] == 6
    code, out, err = cli_main(capsys, *base, "--train.stage2_steps", "6", "--resume", "--train.lr", "0.01",
                              "--data.crop_size", "48")
    assert code == 2 and "cannot resume" in err
    assert "train.lr: 0.002 in the checkpoint, 0.01 now" in err
    assert "data.crop_size: 32 in the checkpoint, 48 now" in err
