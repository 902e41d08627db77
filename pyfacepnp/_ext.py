"""Loads the compiled extension once; every other module imports ``_C`` from here."""

from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension)

try:
    from pyfacepnp import _C  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "pyfacepnp's compiled extension (pyfacepnp._C) could not be loaded: "
        f"{exc}. Build it against the installed torch with "
        "`pip install --no-build-isolation .` (or `make build`), and make sure the torch "
        "you run is the one it was built with (see docs/building.md)."
    ) from exc

ops = torch.ops.pyfacepnp


def build_info() -> dict:
    """Facts about the compiled extension: CUDA kernels built, torch it was built with."""
    return {
        "with_cuda": bool(_C.with_cuda),
        "built_with_torch": str(_C.torch_version),
        "openmp": bool(getattr(_C, "openmp", False)),
        "compiler": str(getattr(_C, "compiler", "unknown")),
    }
