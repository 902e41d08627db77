"""Public functional API of the compiled ops."""

from pyfacepnp.ops.hessian import PoseHessian, pose_hessian
from pyfacepnp.ops.minima import PnPMinima, solve_pnp_minima
from pyfacepnp.ops.pnp import PnPResult, PnPStatus, solve_pnp
from pyfacepnp.ops.ransac import RansacResult, solve_pnp_ransac
from pyfacepnp.ops.render import RenderOutput, render_mesh
from pyfacepnp.ops.warp import invert_affine, warp_points

# Importing these modules registers fake kernels and autograd formulas for the ops.
from pyfacepnp import _fake, _autograd  # noqa: E402,F401  isort:skip

__all__ = [
    "PnPMinima",
    "PnPResult",
    "PnPStatus",
    "PoseHessian",
    "RansacResult",
    "RenderOutput",
    "invert_affine",
    "pose_hessian",
    "render_mesh",
    "solve_pnp",
    "solve_pnp_minima",
    "solve_pnp_ransac",
    "warp_points",
]
