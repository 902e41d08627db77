"""Pure-PyTorch references of the compiled ops: the same objective and conventions,
written in batched torch ops. Tests compare the ops against them; benchmarks use them as
the stand-in for PnP solvers written in plain torch.
"""

from pyfacepnp.reference.hessian import local_hessian_reference
from pyfacepnp.reference.init import omega_initialisation
from pyfacepnp.reference.objective import project, reprojection_cost
from pyfacepnp.reference.pnp import solve_pnp_reference
from pyfacepnp.reference.so3 import rotation_angle, so3_exp
from pyfacepnp.reference.warp import warp_points_reference

__all__ = [
    "local_hessian_reference",
    "omega_initialisation",
    "project",
    "reprojection_cost",
    "rotation_angle",
    "so3_exp",
    "solve_pnp_reference",
    "warp_points_reference",
]
