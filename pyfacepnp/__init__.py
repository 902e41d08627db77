"""pyfacepnp: batched differentiable Perspective-n-Point for PyTorch, and an end-to-end
face reconstruction pipeline built on it.

The ops (``solve_pnp``, ``solve_pnp_ransac``, ``solve_pnp_minima``, ``warp_points``) are compiled C++/CUDA kernels registered under
``torch.ops.pyfacepnp``; this package adds input checking, broadcasting, autograd and
fake (meta) kernels so they work with ``torch.compile``.
"""

from pyfacepnp._ext import build_info
from pyfacepnp.ops import (
    PnPMinima,
    PnPResult,
    PnPStatus,
    RansacResult,
    invert_affine,
    solve_pnp,
    solve_pnp_minima,
    solve_pnp_ransac,
    warp_points,
)

from pyfacepnp.pose_distribution import pose_nll  # noqa: E402  (after the ops it builds on)

__version__ = "0.1.0"

__all__ = [
    "PnPMinima",
    "PnPResult",
    "PnPStatus",
    "RansacResult",
    "build_info",
    "invert_affine",
    "pose_nll",
    "solve_pnp",
    "solve_pnp_minima",
    "solve_pnp_ransac",
    "warp_points",
    "__version__",
]
