"""Our lean engine with the Dassl.pytorch API (Dassl is not on PyPI).

``from dassl.engine import TRAINER_REGISTRY, TrainerX`` ports as
``from engine import TRAINER_REGISTRY, TrainerX``; likewise ``engine.config``, ``engine.optim``,
``engine.utils``, ``engine.metrics``, ``engine.data``, ``engine.data.datasets``; docs/porting.md lists
every Dassl name CoOp-family code uses and where it lives here.
"""
from .trainer import TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, TrainerXU, build_trainer  # noqa: F401
