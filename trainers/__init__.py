"""Trainers registered in ``TRAINER_REGISTRY``; importing this package registers them all."""
from . import strong_base, taskres, zsclip
from . import clip_adapter, linear_probe, tip_adapter, zsclip2  # the comparison methods (issue 10)

_CONFIG_EXTENSIONS = (taskres.add_config, zsclip.add_config, strong_base.add_config,
                      zsclip2.add_config, linear_probe.add_config, clip_adapter.add_config, tip_adapter.add_config)


def extend_cfg(cfg):
    """Add every trainer's config group (``TRAINER.TaskRes`` ...) to a default config."""
    for add in _CONFIG_EXTENSIONS:
        add(cfg)
    return cfg
