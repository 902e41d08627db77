"""Evaluation of the face pipeline: comparison table, post-hoc OpenCV PnP, report."""

from pyfacepnp.eval.evaluate import METHODS, EvalResult, evaluate

__all__ = ["METHODS", "EvalResult", "evaluate"]
