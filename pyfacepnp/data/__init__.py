"""Face data: a procedural morphable face model, the embedded synthetic dataset rendered
with it (through the ``render_mesh`` op of :mod:`pyfacepnp.ops`), and the WCPA track-2
folder format (:mod:`pyfacepnp.data.wcpa`). Geometry and conventions are
:mod:`pyfacepnp.geometry`.

Submodules are imported on use (``from pyfacepnp.data.synthetic import
SyntheticFaceDataset``) so that importing the package stays cheap.
"""
