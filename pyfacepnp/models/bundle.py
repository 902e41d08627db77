"""The one place that builds the pipeline's networks and saves / loads a trained bundle.

A bundle (``<run>/model.pt``, written at the end of training) holds the run's configuration,
the detector's and both face networks' weights (``stage1``: branches only, ``stage2``: end
to end) and the trivial baseline's mean pose; it loads with ``weights_only=True``.
"""

from __future__ import annotations

from pyfacepnp.config import RunConfig, stage2_arms
from pyfacepnp.files import load_checkpoint, save_atomic
from pyfacepnp.models.detector import LandmarkDetector
from pyfacepnp.models.face_net import FaceNet

__all__ = ["BUNDLE_KEYS", "build_models", "default_face_model", "load_bundle", "save_bundle"]

BUNDLE_KEYS = ("config", "detector", "stage1", "stage2")


def default_face_model():
    """The procedural face model (:func:`pyfacepnp.data.face_model.get_face_model`)."""
    from pyfacepnp.data.face_model import get_face_model

    return get_face_model()


def build_models(cfg: RunConfig, face_model=None) -> tuple[LandmarkDetector, FaceNet]:
    """The detector and the two-branch network sized by ``cfg.model`` / ``cfg.data``
    (``face_model``: its template and bases; default :func:`default_face_model`)."""
    face_model = face_model or default_face_model()
    m = cfg.model
    det = LandmarkDetector(cfg.data.detector_size, m.detector_widths, m.detector_depths,
                           m.detector_widths[0])
    net = FaceNet(face_model, cfg.data.crop_size, m.widths, m.depths, m.stem_width,
                  m.head_hidden, m.sigma, m.strides, m.pool_grid, m.refine_maps,
                  m.identity_readout)
    return det, net


def save_bundle(path: str, cfg: RunConfig, detector, stage1, stage2, baseline: dict,
                arms: dict | None = None) -> None:
    """Write a bundle atomically (``baseline``: ``{"R": (3, 3), "t": (3,)}`` mean pose;
    ``arms``: the further stage-2 networks of the end-to-end experiment by stage name)."""
    save_atomic({"config": cfg.to_dict(), "detector": detector.state_dict(), "stage1": stage1.state_dict(),
                 "stage2": stage2.state_dict(), "baseline": baseline,
                 "arms": {k: m.state_dict() for k, m in (arms or {}).items()}}, path)


def load_bundle(path: str, face_model=None, device="cpu") -> dict:
    """Models of a finished run from its ``model.pt`` (loaded with ``weights_only=True``).

    Returns:
        dict with ``config`` (RunConfig), ``detector``, ``stage1``, ``stage2`` (eval mode),
        ``baseline`` (mean pose) and ``arms``: every stage-2 run of the end-to-end
        experiment as ``{"name", "arm" ("c" | "c0"), "seed", "net"}`` (``stage2`` is the
        first; a bundle without the experiment's arms gives just that one).
    """
    ck = load_checkpoint(path, map_location=device)
    for key in BUNDLE_KEYS:
        if key not in ck:
            raise ValueError(f"checkpoint {path!r} is not a model bundle: missing {key!r} "
                             "(pass <run>/model.pt written at the end of training)")
    cfg = RunConfig.from_dict(ck["config"])
    if "identity_readout" not in ck["config"].get("model", {}):
        cfg.model.identity_readout = False  # written before the readout existed: it has none
    face_model = face_model or default_face_model()
    det, net1 = build_models(cfg, face_model)
    _, net2 = build_models(cfg, face_model)
    det.load_state_dict(ck["detector"])
    net1.load_state_dict(ck["stage1"])
    net2.load_state_dict(ck["stage2"])
    out = {"config": cfg, "baseline": ck.get("baseline")}
    for k, m in (("detector", det), ("stage1", net1), ("stage2", net2)):
        out[k] = m.to(device).eval()
    saved = ck.get("arms") or {}
    out["arms"] = []
    for arm in stage2_arms(cfg):
        if arm.name == "stage2":
            net = out["stage2"]
        elif arm.name in saved:
            _, net = build_models(cfg, face_model)
            net.load_state_dict(saved[arm.name])
            net = net.to(device).eval()
        else:
            continue
        out["arms"].append({"name": arm.name, "arm": arm.arm, "seed": arm.seed, "net": net})
    return out
