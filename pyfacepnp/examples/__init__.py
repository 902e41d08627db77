"""Runnable examples of the op inside networks (``python -m pyfacepnp.examples.<name>``)."""
