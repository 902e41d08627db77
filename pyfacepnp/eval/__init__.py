"""Evaluation of the face pipeline on top of :func:`pyfacepnp.models.pipeline.run_pipeline`:
the comparison table, the run report, prediction on image files."""

from pyfacepnp.eval.evaluate import METHODS, EvalResult, evaluate

__all__ = ["METHODS", "EvalResult", "evaluate"]
