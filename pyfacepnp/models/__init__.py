"""Networks of the face pipeline: coarse detector, two-branch face network, pose from PnP."""

from pyfacepnp.models.backbone import BasicBlock, ResNetBackbone, SpatialPool
from pyfacepnp.models.detector import LandmarkDetector
from pyfacepnp.models.face_net import FaceNet, LandmarkHead, MeshHead
from pyfacepnp.models.pose import PoseOutput, project_points, solve_pose, to_camera

__all__ = [
    "BasicBlock", "FaceNet", "LandmarkDetector", "LandmarkHead", "MeshHead", "PoseOutput",
    "ResNetBackbone", "SpatialPool", "project_points", "solve_pose", "to_camera",
]
