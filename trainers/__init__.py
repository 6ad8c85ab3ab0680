"""Trainers registered in ``TRAINER_REGISTRY``; importing this package registers them all."""
from . import cocoop, coop, mvlpt, strong_base, taskres, zsclip

_CONFIG_EXTENSIONS = (taskres.add_config, zsclip.add_config, strong_base.add_config, coop.add_config,
                      cocoop.add_config, mvlpt.add_config)


def extend_cfg(cfg):
    """Add every trainer's config group (``TRAINER.TaskRes`` ...) to a default config."""
    for add in _CONFIG_EXTENSIONS:
        add(cfg)
    return cfg
