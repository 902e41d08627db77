"""Training of the face pipeline: data cache, losses, the stage loop, DDP, checkpoints."""

from pyfacepnp.train.stages import build_models, load_bundle, run_training

__all__ = ["build_models", "load_bundle", "run_training"]
