"""Dataset classes in CoOp's folder layouts; importing this package registers all of them in DATASET_REGISTRY.

Every module in this folder is imported (discovered, not listed), so adding ``datasets/<name>.py`` with a
``@DATASET_REGISTRY.register()`` class is all a new dataset needs.
"""
import importlib
import pkgutil

_NOT_DATASETS = {"utils", "check", "download"}  # helpers and command-line tools

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _NOT_DATASETS:
        importlib.import_module(f"{__name__}.{_info.name}")
