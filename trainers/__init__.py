"""Trainers, registered in ``TRAINER_REGISTRY`` by importing their modules.

Every ``.py`` file in this folder is imported (ours first, then any file a user dropped here),
and so is every ``.py`` file in the folders named by ``--trainer-dir DIR`` or
``$TASKRES_TRAINER_DIRS`` (``:``-separated), each folder as a package so relative imports work.
A module that defines ``extend_cfg(cfg)`` adds its config keys (``TRAINER.<NAME>`` ...) that way;
``extend_cfg`` below calls them all before the yaml files are merged. CoOp keeps its
``extend_cfg`` in its ``train.py``: put it in the trainer file, or in any ``.py`` in that folder.
"""
import importlib
import logging
import os
import pkgutil
import sys
import types

from engine.errors import UserError

logger = logging.getLogger(__name__)

BUILTIN = ("strong_base", "taskres", "zsclip")  # imported first, so a user's file can replace a name
ENV_DIRS = "TASKRES_TRAINER_DIRS"

_modules = {}  # module name -> module, in import order (their extend_cfg runs in that order)
_folders = {}  # real path of a user folder -> its package name


def _import(name, source):
    try:
        module = importlib.import_module(name)
    except UserError:
        raise
    except Exception as e:  # a user's file that does not import: say which, keep the cause chained
        raise UserError(f"Could not import trainer file {source} ({type(e).__name__}: {e}); fix it or remove it "
                        "from the trainer folder.") from e
    _modules.setdefault(module.__name__, module)
    return module


def _import_own_folder():
    here = os.path.dirname(os.path.abspath(__file__))
    others = sorted(i.name for i in pkgutil.iter_modules([here]) if i.name not in BUILTIN)
    for name in (*BUILTIN, *others):
        _import(f"{__name__}.{name}", os.path.join(here, name + ".py"))


def trainer_dirs_from_env():
    return [d for d in os.environ.get(ENV_DIRS, "").split(os.pathsep) if d]


def load_trainer_dirs(dirs):
    """Import every ``.py`` file of each folder (once per process); returns the modules imported."""
    loaded = []
    for folder in dirs:
        real = os.path.realpath(folder)
        if not os.path.isdir(real):
            raise UserError(f"Trainer folder {folder} (from --trainer-dir or ${ENV_DIRS}) does not exist; "
                            "pass a folder holding trainer .py files.")
        if real in _folders:
            continue
        package = f"_taskres_trainer_dir{len(_folders)}"
        module = types.ModuleType(package)
        module.__path__ = [real]
        sys.modules[package] = module
        _folders[real] = package
        names = sorted(i.name for i in pkgutil.iter_modules([real]))
        for name in names:
            loaded.append(_import(f"{package}.{name}", os.path.join(real, name + ".py")))
        logger.info("Trainer folder %s: imported %s", folder, ", ".join(names) or "nothing")
    return loaded


def config_modules():
    """The loaded trainer modules, in the order their ``extend_cfg`` runs (engine.checks reads them)."""
    return list(_modules.values())


def extend_cfg(cfg):
    """Add every loaded trainer module's config keys (its ``extend_cfg(cfg)``) to a default config."""
    for module in _modules.values():
        extend = getattr(module, "extend_cfg", None)
        if callable(extend):
            extend(cfg)
    # trainers registered from elsewhere (a test, a notebook) bring their module's extend_cfg too
    from engine import TRAINER_REGISTRY

    seen = set(_modules)
    for _, cls in TRAINER_REGISTRY:
        module = sys.modules.get(cls.__module__)
        if module is not None and module.__name__ not in seen and module.__name__ != __name__:
            seen.add(module.__name__)
            if callable(getattr(module, "extend_cfg", None)):
                module.extend_cfg(cfg)
    return cfg


_import_own_folder()
