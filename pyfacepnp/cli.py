"""Command line: ``pyfacepnp train | eval | predict | data | info | demo``.

Every command that builds a run takes the configuration options of
:mod:`pyfacepnp.config` (``--preset``, ``--config``, ``--section.field VALUE``), added by
:func:`add_config_arguments`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

from pyfacepnp.config import PRESETS, RunConfig, make_config, set_dotted
from pyfacepnp.data.cli import add_data_commands


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--preset``, ``--config`` and one ``--section.field`` option per field."""
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                        help="starting configuration (default: cpu)")
    parser.add_argument("--config", default=None,
                        help="a saved config.json to start from instead of a preset")
    group = parser.add_argument_group("configuration overrides")
    base = RunConfig()
    for f in dataclasses.fields(base):
        value = getattr(base, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                group.add_argument(f"--{f.name}.{g.name}", dest=f"cfg__{f.name}.{g.name}",
                                   default=None, metavar=_metavar(getattr(value, g.name)))
        else:
            group.add_argument(f"--{f.name}", dest=f"cfg__{f.name}", default=None,
                               metavar=_metavar(value))


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve a configuration from parsed ``add_config_arguments`` options."""
    cfg = RunConfig.load(args.config) if args.config else make_config(args.preset)
    for key, value in vars(args).items():
        if key.startswith("cfg__") and value is not None:
            set_dotted(cfg, key[len("cfg__"):], value)
    return cfg


def _metavar(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, tuple):
        return "A,B,..."
    return type(value).__name__.upper()


def _face_model():
    from pyfacepnp.models.bundle import default_face_model

    return default_face_model()


def cmd_info(args) -> int:
    import platform

    import numpy
    import torch

    import pyfacepnp

    print(f"pyfacepnp {pyfacepnp.__version__}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  numpy {numpy.__version__}")
    try:
        import cv2

        print(f"opencv {cv2.__version__}")
    except ImportError:
        print("opencv not installed (needed by eval row (a) and predict)")
    print(f"torch CUDA available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    print("build_info: " + json.dumps(pyfacepnp.build_info()))
    return 0


def cmd_train(args) -> int:
    from pyfacepnp.train.stages import run_training

    cfg = config_from_args(args)
    out = run_training(cfg, resume=args.resume)
    if out.get("stopped"):
        print("training stopped before the end; continue with --resume")
        return 0
    if int(os.environ.get("RANK", "0")) == 0:
        for name, s in out["stages"].items():
            if "seconds" in s:
                print(f"{name}: {s['steps']} steps, {s['seconds']:.1f} s, {s['img_per_s']:.1f} images/s")
        print(f"model bundle: {out['model']}")
    return 0


def _eval_source(cfg: RunConfig, args):
    from pyfacepnp.train.data import load_split

    if args.wcpa_root:
        cfg.data.source, cfg.data.root = "wcpa", args.wcpa_root
        cfg.data.test_list = args.wcpa_list or ""
    if args.samples:
        cfg.data.test_samples = args.samples
    return load_split(cfg.data, args.split, keep_image=True)


def cmd_eval(args) -> int:
    import torch

    from pyfacepnp.eval.evaluate import evaluate
    from pyfacepnp.eval.report import write_report
    from pyfacepnp.models.bundle import load_bundle

    if args.threads:
        torch.set_num_threads(args.threads)
    face_model = _face_model()
    bundle = load_bundle(args.checkpoint, face_model)
    cfg = bundle["config"]
    source = _eval_source(cfg, args)
    res = evaluate(bundle, source, face_model, cv2_method=args.cv2_method)
    out_dir = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out_dir, exist_ok=True)
    path = write_report(out_dir, res, face_model.triangles)
    print(f"report: {path}")
    _print_gain(os.path.dirname(path))
    print()
    print(res.table())
    return 0


def _print_gain(run_dir: str) -> None:
    """The end-to-end experiment's verdict lines from ``<run_dir>/metrics.json``."""
    from pyfacepnp.eval.experiment import gain_lines

    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    lines = gain_lines(metrics)
    if lines:
        print()
        print("\n".join(lines))


def cmd_predict(args) -> int:
    import warnings

    from pyfacepnp.eval.predict import predict_files, resolve_detector
    from pyfacepnp.models.bundle import load_bundle
    from pyfacepnp.models.pretrained import MissingExtraError

    face_model = _face_model()
    bundle = load_bundle(args.checkpoint, face_model)
    try:
        detector, _ = resolve_detector(args.detector)
        print(f"coarse landmarks: {detector} detector" + (" (auto)" if args.detector == "auto" else ""))
        with warnings.catch_warnings():  # the results carry the messages; printed below
            warnings.simplefilter("ignore", UserWarning)
            results = predict_files(args.images, bundle, face_model, args.out, focal=args.focal,
                                    weighted=not args.unweighted, net=args.net, detector=args.detector)
    except MissingExtraError as exc:
        print(f"pyfacepnp predict: error: {exc}", file=sys.stderr)
        return 2
    missed = 0
    for r in results:
        for msg in r["warnings"]:
            print(f"warning: {r['image']}: {msg}", file=sys.stderr)
        if not r["face_found"]:
            missed += 1
            print(f"{r['image']}: no face found by the {r['detector']} detector; nothing written")
            continue
        print(f"{r['image']}: t = [{', '.join(f'{v:.4f}' for v in r['t'])}] m, "
              f"status {r['pnp_status']} -> {r['overlay']}, {r['npz']}")
    return 1 if missed else 0


def run_demo(cfg: RunConfig, resume: bool = False) -> dict:
    """Data, detector, stage 1, stage 2, evaluation and report: the main job."""
    from pyfacepnp.eval.evaluate import evaluate
    from pyfacepnp.eval.report import write_report
    from pyfacepnp.models.bundle import load_bundle
    from pyfacepnp.train.data import load_split
    from pyfacepnp.train.stages import run_training

    t0 = time.time()
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    face_model = _face_model()
    load_split(cfg.data, "train")
    test = load_split(cfg.data, "test", keep_image=True)
    t_data = time.time() - t0
    print(f"data ready in {t_data:.1f} s ({cfg.data.train_samples} train / {len(test)} test samples)")
    out = run_training(cfg, resume=resume, face_model=face_model)
    bundle = load_bundle(out["model"], face_model)
    res = evaluate(bundle, test, face_model)
    training = {k: {kk: vv for kk, vv in v.items() if isinstance(vv, (int, float, str, bool))}
                for k, v in out["stages"].items()}
    extra = {"training": training, "data_seconds": t_data, "total_seconds": time.time() - t0}
    path = write_report(cfg.run_dir, res, face_model.triangles, extra)
    return {"report": path, "result": res, "seconds": time.time() - t0, "training": training}


def cmd_demo(args) -> int:
    if args.quick and args.preset == "cpu" and not args.config:
        args.preset = "quick"
    cfg = config_from_args(args)
    if args.quick and args.cfg__name is None:
        cfg.name = "demo-quick"
    out = run_demo(cfg, resume=args.resume)
    res = out["result"]
    for name, s in out["training"].items():
        if "img_per_s" in s:
            print(f"{name}: {s['steps']} steps in {s['seconds']:.1f} s ({s['img_per_s']:.1f} images/s)")
    print(f"detector: 68-landmark error {res.detector['landmark68_error_px']:.2f} px, "
          f"whole face inside crop {100 * res.detector['face_inside_crop']:.1f}%")
    print(f"report: {out['report']} (total {out['seconds']:.0f} s)")
    _print_gain(os.path.dirname(out["report"]))  # the experiment first: the table is printed last
    print()
    print(res.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyfacepnp", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="versions and build facts (CUDA kernels built?)")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("train", help="train detector, stage 1 and stage 2 (torchrun for DDP)")
    add_config_arguments(s)
    s.add_argument("--resume", action="store_true", help="continue from the run's checkpoints")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="comparison table on a held-out split or a WCPA folder")
    s.add_argument("--checkpoint", required=True, help="<run>/model.pt")
    s.add_argument("--split", default="test", choices=["val", "test"])
    s.add_argument("--samples", type=int, default=0, help="synthetic samples (default: as trained)")
    s.add_argument("--wcpa-root", default="", help="evaluate on a WCPA track-2 folder instead")
    s.add_argument("--wcpa-list", default="", help="csv list inside the WCPA folder")
    s.add_argument("--cv2-method", default="sqpnp", choices=["sqpnp", "iterative"])
    s.add_argument("--out", default="", help="report folder (default: the checkpoint's folder)")
    s.add_argument("--threads", type=int, default=0)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("predict", help="reconstruct the face in image files")
    s.add_argument("images", nargs="+", help="image files (any format OpenCV reads)")
    s.add_argument("--checkpoint", required=True, help="<run>/model.pt")
    s.add_argument("--out", default="predictions", help="output folder")
    s.add_argument("--focal", type=float, default=None,
                   help="focal length in pixels of the image (default: WCPA field of view)")
    s.add_argument("--net", default="stage2", choices=["stage1", "stage2"])
    s.add_argument("--unweighted", action="store_true", help="PnP without 1/sigma^2 weights")
    s.add_argument("--detector", default="auto", choices=["auto", "learned", "dlib", "mediapipe"],
                   help="source of the 68 landmarks that place the crop: the learned detector (synthetic "
                        "training only), dlib (extra 'real') or mediapipe (extra 'mediapipe'); "
                        "default auto: dlib, else mediapipe, else learned")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("demo", help="the main job: data, training, evaluation, report")
    add_config_arguments(s)
    s.add_argument("--quick", action="store_true", help="smoke-test sizes (under 2 minutes)")
    s.add_argument("--resume", action="store_true")
    s.set_defaults(func=cmd_demo)

    add_data_commands(sub)
    return p


# Commands that keep both CPU cores busy for minutes.
HEAVY_COMMANDS = ("train", "demo", "eval")


def _reexec_with_passive_openmp(argv: list[str] | None) -> None:
    """Restart the process with ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set.

    With OpenMP's default spin-waiting, torch's threads burn their time slices waiting for
    each other as soon as another process shares the cores; on a busy 2-core machine we
    measured a training step 5-30x slower than with passive waiting. The policy is read
    when the OpenMP runtime loads (with ``import torch``), so it cannot be changed from
    inside this process. Set ``OMP_WAIT_POLICY`` yourself to choose otherwise.
    """
    if os.environ.get("OMP_WAIT_POLICY") or "WORLD_SIZE" in os.environ or argv is not None:
        return
    if len(sys.argv) < 2 or sys.argv[1] not in HEAVY_COMMANDS:
        return
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    os.execve(sys.executable, [sys.executable, "-m", "pyfacepnp", *sys.argv[1:]], env)


def main(argv: list[str] | None = None) -> int:
    _reexec_with_passive_openmp(argv)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"pyfacepnp {args.command}: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["add_config_arguments", "build_parser", "config_from_args", "main", "run_demo", "make_config"]
