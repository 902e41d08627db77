"""pyfacepnp: batched differentiable Perspective-n-Point for PyTorch, and an end-to-end
face reconstruction pipeline built on it.

The ops (``solve_pnp``, ``solve_pnp_ransac``, ``solve_pnp_minima``, ``pose_hessian``,
``warp_points``) are compiled C++/CUDA kernels registered under
``torch.ops.pyfacepnp``; this package adds input checking, broadcasting, autograd and
fake (meta) kernels so they work with ``torch.compile``.
"""

from pyfacepnp._ext import build_info
from pyfacepnp.ops import (
    PnPMinima,
    PnPResult,
    PnPStatus,
    PoseHessian,
    RansacResult,
    invert_affine,
    pose_hessian,
    solve_pnp,
    solve_pnp_minima,
    solve_pnp_ransac,
    warp_points,
)

__version__ = "0.1.0"


def __getattr__(name):
    # pose_nll builds on the torch objective of pyfacepnp.reference, which imports the ops:
    # loaded on first use, so that importing the package (or its geometry) does not load it.
    if name == "pose_nll":
        from pyfacepnp.pose_distribution import pose_nll

        return pose_nll
    raise AttributeError(f"module 'pyfacepnp' has no attribute {name!r}")

__all__ = [
    "PnPMinima",
    "PnPResult",
    "PnPStatus",
    "PoseHessian",
    "RansacResult",
    "build_info",
    "invert_affine",
    "pose_hessian",
    "pose_nll",
    "solve_pnp",
    "solve_pnp_minima",
    "solve_pnp_ransac",
    "warp_points",
    "__version__",
]
