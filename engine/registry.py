"""Name -> class registries (trainers, datasets, evaluators), as in Dassl/fvcore.

Registration is by decorator; registering a name again replaces the earlier object with a
logged warning (``force=True``: silently), so a user's trainer file can stand in for ours; an
unknown name raises a ConfigError (a KeyError) whose message lists the valid names and the
closest match.
"""
import difflib
import logging

from .errors import ConfigError

logger = logging.getLogger(__name__)


class Registry:
    """A named table of classes.

    Usage::

        TRAINER_REGISTRY = Registry("TRAINER")

        @TRAINER_REGISTRY.register()
        class MyTrainer(TrainerX): ...

        TRAINER_REGISTRY.get("MyTrainer")
    """

    def __init__(self, name):
        self._name = name
        self._obj_map = {}

    def _do_register(self, name, obj, force=False):
        old = self._obj_map.get(name)
        if old is not None and old is not obj and not force:
            # a user's module registering a name we ship (CoOp's ZeroshotCLIP) replaces ours: the
            # file the user chose to load is the one they mean; the log says which won
            logger.warning('%s "%s" from %s replaces the one from %s', self._name.capitalize(), name,
                           getattr(obj, "__module__", "?"), getattr(old, "__module__", "?"))
        self._obj_map[name] = obj

    def register(self, obj=None, force=False):
        """Register `obj` under its ``__name__``; used bare or as ``@register()``."""
        if obj is None:

            def wrapper(fn_or_class):
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class

            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name, hint=""):
        """The object registered as ``name``; an unknown name raises ConfigError (a KeyError) + ``hint``."""
        if name not in self._obj_map:
            raise ConfigError(self.unknown_name_message(name) + hint)
        return self._obj_map[name]

    def unknown_name_message(self, name):
        valid = self.registered_names()
        close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
        hint = f' Did you mean "{close[0]}"?' if close else ""
        return (
            f'Unknown {self._name.lower()} "{name}".{hint} '
            f"Valid names: {', '.join(valid)}."
        )

    def registered_names(self):
        return sorted(self._obj_map)

    def __contains__(self, name):
        return name in self._obj_map

    def __iter__(self):
        return iter(sorted(self._obj_map.items()))


def check_availability(requested, available):
    """Dassl's helper: raise ValueError when `requested` is not in `available`."""
    if requested not in available:
        close = difflib.get_close_matches(str(requested), list(available), n=1, cutoff=0.5)
        hint = f' Did you mean "{close[0]}"?' if close else ""
        raise ValueError(
            f'"{requested}" is not available.{hint} Choose from: {", ".join(map(str, available))}.'
        )
