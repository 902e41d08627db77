"""The result types, shared with the compiled op so results compare field by field."""

from pyfacepnp.ops.pnp import PnPResult, PnPStatus

__all__ = ["PnPResult", "PnPStatus"]
