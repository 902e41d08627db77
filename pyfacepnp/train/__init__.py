"""Training of the face pipeline: data cache, augmentation, losses, the stage loop, DDP,
checkpoints, and the stages' orchestration (:func:`run_training`)."""

from pyfacepnp.train.stages import run_training

__all__ = ["run_training"]
