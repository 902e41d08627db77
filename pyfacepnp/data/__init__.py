"""Face data: a procedural morphable face model, a renderer, the synthetic dataset, the
WCPA track-2 folder format and its conventions.

Submodules are imported on use (``from pyfacepnp.data.synthetic import
SyntheticFaceDataset``) so that importing the package stays cheap.
"""
