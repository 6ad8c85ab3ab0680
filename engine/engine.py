"""``engine.engine``: ``dassl.engine``'s names, for a port that renamed ``dassl`` to ``engine`` literally.

The documented rename is ``dassl.engine`` -> ``engine``; with this alias ``from engine.engine import
TRAINER_REGISTRY, TrainerX`` (``sed s/dassl/engine/``) works too, so every ``dassl.X`` is ``engine.X``.
"""
from .trainer import TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, TrainerXU, build_trainer

__all__ = ["TRAINER_REGISTRY", "SimpleTrainer", "TrainerBase", "TrainerX", "TrainerXU", "build_trainer"]
