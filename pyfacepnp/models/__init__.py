"""Networks of the face pipeline: coarse detector, two-branch face network, pose from PnP,
the inference pipeline, and the factory that builds the networks and loads a trained bundle."""

from pyfacepnp.models.backbone import BasicBlock, ResNetBackbone, SpatialPool
from pyfacepnp.models.bundle import build_models, load_bundle
from pyfacepnp.models.detector import LandmarkDetector
from pyfacepnp.models.face_net import FaceNet, LandmarkHead, MeshHead
from pyfacepnp.models.pipeline import run_pipeline
from pyfacepnp.models.pose import PoseOutput, solve_pose

__all__ = [
    "BasicBlock", "FaceNet", "LandmarkDetector", "LandmarkHead", "MeshHead", "PoseOutput",
    "ResNetBackbone", "SpatialPool", "build_models", "load_bundle", "run_pipeline", "solve_pose",
]
