"""Config defaults declared by several modules, merged key by key (``merge_defaults``).

Every trainer module's ``extend_cfg(cfg)`` adds its group, and published files start theirs with
``cfg.TRAINER.COOP = CN()`` (KgCoOp's, MaPLe's and PromptSRC's all define CoOp's group again,
with keys and defaults of their own). Run one after another on one config, each such line would
wipe what the modules before it defined. So each ``extend_cfg`` runs on a copy, and what it
defined is merged in: keys of both are kept; a key defined twice with different values (or
types) keeps one, chosen by the caller's ``prefer(new_source, old_source)``, and is reported.
"""
from dataclasses import dataclass

from yacs.config import CfgNode as CN

from .errors import ConfigError


@dataclass(frozen=True)
class Disagreement:
    key: str
    kept: object  # the value the merged config holds
    kept_from: str
    dropped: object
    dropped_from: str
    replaced: bool  # the later definition replaced the earlier one


def merge_defaults(into, new, source, owners, prefer, prefix=""):
    """Merge config ``new`` (``source``'s copy of ``into`` after its extend_cfg) into ``into``.

    ``owners`` maps a full key to the source that defined its value (missing: the engine's
    defaults, named "engine/config.py"); it is updated. ``prefer(new_source, old_source)`` says
    whether a differing value of ``new_source`` replaces the one of ``old_source``. Keys ``new``
    lacks (a group assigned afresh) stay. Returns the list of ``Disagreement``s.
    """
    found = []
    for key, value in new.items():
        full = prefix + key
        if key not in into:
            into[key] = value
            owners[full] = source
            for leaf in _leaves(value, full):
                owners[leaf] = source
            continue
        old = into[key]
        if isinstance(old, CN) and isinstance(value, CN):
            found += merge_defaults(old, value, source, owners, prefer, full + ".")
            continue
        old_source = owners.get(full, "engine/config.py")
        if isinstance(old, CN) != isinstance(value, CN):
            what = lambda v: "a group" if isinstance(v, CN) else f"the value {v!r}"  # noqa: E731
            raise ConfigError(f"Config key {full} is {what(old)} in {old_source} but {what(value)} in {source}; "
                              "rename one of them.")
        if _same(old, value):
            continue
        if prefer(source, old_source):
            into[key] = value
            owners[full] = source
            found.append(Disagreement(full, value, source, old, old_source, True))
        else:
            found.append(Disagreement(full, old, old_source, value, source, False))
    return found


def _leaves(value, full):
    if isinstance(value, CN):
        for key, sub in value.items():
            yield from _leaves(sub, f"{full}.{key}")
    else:
        yield full


def _same(a, b):
    # False == 0 and "" != False: compare types too, yacs refuses a yaml value of another type
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b
