"""Imports inside a trainer folder resolve to the folder's own modules first, as in the original repo.

A CoOp-family repository runs from its own root, so ``from clip import clip`` in its trainer
files finds the ``clip/`` it ships (MaPLe's takes ``design_details``, PLOT's attention pool
returns every token), not ours. Here one process holds our ``clip`` and any number of trainer
folders, so ``sys.path`` cannot do that. Instead each folder is the package ``<package>`` and its
files run with their own ``__import__``: an absolute import whose first name is a module or
package held by the folder (``clip``, ``clip.simple_tokenizer``, a sibling ``imagenet_templates``)
gets ``<package>.<name>``; every other import, and every import in our code, is untouched.

One change is made to a shipped ``clip/clip.py``: its ``_download`` becomes ours, so weights are
found the way every trainer here finds them (``$TASKRES_CLIP_CACHE`` / ``~/.cache/clip`` without
re-checking OpenAI's sha256, one clear sentence offline) instead of re-downloading a file whose
checksum is not OpenAI's. The model code of the folder's ``clip`` is what runs.
"""
import builtins
import importlib
import importlib.abc
import importlib.machinery
import logging
import pkgutil
import sys

logger = logging.getLogger(__name__)


def local_names(folder):
    """The top-level module and package names a folder holds (what ``import NAME`` there means)."""
    return frozenset(info.name for info in pkgutil.iter_modules([folder]))


def scoped_import(package, names):
    """An ``__import__`` mapping absolute imports of ``names`` to ``<package>.<name>``."""

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):
        real = builtins.__import__  # looked up per call: a hook installed later still applies
        if level == 0 and name.partition(".")[0] in names:
            module = real(f"{package}.{name}", globals, locals, fromlist, 0)
            # `import clip.model` binds the top package `clip`, not `<package>`
            return module if fromlist else sys.modules[f"{package}.{name.partition('.')[0]}"]
        return real(name, globals, locals, fromlist, level)

    return __import__


class _ScopedLoader(importlib.machinery.SourceFileLoader):
    """A source loader that runs the module with the folder's ``__import__``."""

    def __init__(self, fullname, path, builtins_dict):
        super().__init__(fullname, path)
        self._builtins = builtins_dict

    def exec_module(self, module):
        # exec() adds the real builtins only when the module has none; functions defined in the
        # module keep these builtins, so a lazy import inside a function is mapped too
        module.__dict__["__builtins__"] = self._builtins
        super().exec_module(module)
        if module.__name__.endswith(".clip.clip") and callable(getattr(module, "_download", None)):
            from clip import clip as ours

            module._download = ours._download


class FolderFinder(importlib.abc.MetaPathFinder):
    """Finds ``<package>.*`` for the registered trainer folders and loads them with ``_ScopedLoader``."""

    def __init__(self):
        self._builtins = {}  # package name -> builtins dict with its scoped __import__

    def add(self, package, folder):
        names = local_names(folder)
        scoped = dict(vars(builtins))
        scoped["__import__"] = scoped_import(package, names)
        self._builtins[package] = scoped
        return names

    def find_spec(self, fullname, path=None, target=None):
        package = fullname.partition(".")[0]
        if package not in self._builtins or fullname == package:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _ScopedLoader(fullname, spec.origin, self._builtins[package])
        return spec


_finder = None


def register_folder(package, folder):
    """Make ``<package>.*`` load from ``folder`` with the folder's imports; returns the names it holds."""
    global _finder
    if _finder is None:
        _finder = FolderFinder()
        sys.meta_path.insert(0, _finder)
    names = _finder.add(package, folder)
    if "clip" in names:
        logger.info("Trainer folder %s ships its own clip/: its files import that one (weights found by ours)",
                    folder)
    return names
