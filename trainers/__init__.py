"""Trainers, registered in ``TRAINER_REGISTRY`` by importing their modules.

Every ``.py`` file in this folder is imported (ours first, then any file a user dropped here),
and so is every ``.py`` file in the folders named by ``--trainer-dir DIR`` or
``$TASKRES_TRAINER_DIRS`` (``:``-separated), each folder as a package so relative imports work,
and an absolute import of a name the folder holds (its own ``clip/``) gets the folder's copy
(``folder_imports``).
A module that defines ``extend_cfg(cfg)`` adds its config keys (``TRAINER.<NAME>`` ...) that way;
``extend_cfg`` below calls them all before the yaml files are merged. CoOp keeps its
``extend_cfg`` in its ``train.py``: put it in the trainer file, or in any ``.py`` in that folder.
"""
import importlib
import itertools
import logging
import os
import pkgutil
import sys
import types

from engine.errors import UserError

from . import folder_imports

logger = logging.getLogger(__name__)

BUILTIN = ("strong_base", "taskres", "zsclip")  # imported first, so a user's file can replace a name
ENV_DIRS = "TASKRES_TRAINER_DIRS"

_modules = {}  # module name -> module, in import order (their extend_cfg runs in that order)
_folders = {}  # real path of a user folder -> its package name
_package_numbers = itertools.count()


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
        package = f"_taskres_trainer_dir{next(_package_numbers)}"  # never reused, even if _folders is reset
        module = types.ModuleType(package)
        module.__path__ = [real]
        sys.modules[package] = module
        _folders[real] = package
        names = sorted(folder_imports.register_folder(package, real))
        for name in names:
            loaded.append(_import(f"{package}.{name}", os.path.join(real, name + ".py")))
        logger.info("Trainer folder %s: imported %s", folder, ", ".join(names) or "nothing")
    return loaded


def config_modules():
    """The loaded trainer modules, in the order their ``extend_cfg`` runs (engine.checks reads them)."""
    return list(_modules.values())


def extend_cfg(cfg, trainer=None):
    """Add every loaded trainer module's config keys (its ``extend_cfg(cfg)``) to a default config.

    Groups merge: a module assigning ``cfg.TRAINER.COOP = CN()`` again adds its keys to the group
    the modules before it defined. Where two modules give one key different defaults, the module
    from the folder of ``trainer`` (the run's trainer name: ours for our trainers, a trainer
    folder's for its own trainers) wins, so each method runs with its own published defaults and
    a loaded folder never changes ours; within one folder the later line wins (as in one
    ``train.py``); otherwise the first definition stays (engine defaults, ours, then the folders
    in the order given). Each such key is logged with both files.
    """
    from engine import TRAINER_REGISTRY
    from engine.config_merge import merge_defaults

    modules = list(_modules.values())
    # trainers registered from elsewhere (a test, a notebook) bring their module's extend_cfg too
    for _, cls in TRAINER_REGISTRY:
        module = sys.modules.get(cls.__module__)
        if module is not None and module not in modules and module.__name__ != __name__:
            modules.append(module)
    home = None
    if trainer and trainer in TRAINER_REGISTRY:
        home = _package(TRAINER_REGISTRY.get(trainer).__module__)
    packages = {"engine/config.py": "engine"}

    def prefer(new, old):
        if packages[new] == packages[old]:
            return True  # one folder's lines, in order
        return packages[new] == home and packages[old] != home

    owners = {}
    for module in modules:
        extend = getattr(module, "extend_cfg", None)
        if not callable(extend):
            continue
        label = _label(module)
        packages[label] = _package(module.__name__)
        scratch = cfg.clone()
        extend(scratch)
        for d in merge_defaults(cfg, scratch, label, owners, prefer):
            log = logger.warning if d.replaced else logger.info
            log("Config key %s: default %r from %s, not %r from %s%s", d.key, d.kept, d.kept_from, d.dropped,
                d.dropped_from, f" (trainer {trainer} is defined there)" if packages[d.kept_from] == home else "")
    return cfg


def _package(module_name):
    return module_name.rpartition(".")[0] or module_name


def _label(module):
    path = getattr(module, "__file__", None)
    if not path:
        return module.__name__
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.abspath(path)
    return os.path.relpath(path, root) if path.startswith(root + os.sep) else path


_import_own_folder()
