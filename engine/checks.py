"""Config checks every run gets, whatever a trainer's own ``check_cfg`` does or skips.

``SimpleTrainer`` runs these before any data or weights load (``check_values``,
``check_trainer_keys``) and once the dataset is known (``check_val_split``); a trainer's
``check_cfg`` is only its own hook on top (Dassl's trainers override it without ``super()``).
Each refusal is one sentence naming the key, the value and the fix.
"""
import logging
import sys

from yacs.config import CfgNode

from .config import get_cfg_default
from .errors import ConfigError

logger = logging.getLogger(__name__)

PROJECT_TRAINERS = "trainers."  # the project's trainer package: what its trainers read is known here


def _positive(cfg, key, what, minimum=1):
    value = _get(cfg, key)
    if value < minimum:
        raise ConfigError(f"{key} is {value}, but it must be {what}; set it to at least {minimum}.")


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_values(cfg, trains, epoch_loop=True):
    """Refuse values that crash later with a traceback or silently mislead.

    ``trains``: the trainer learns something (its OPTIM keys matter); ``epoch_loop``: it learns
    through Dassl's epoch loop (so OPTIM.MAX_EPOCH is its training length).
    """
    _positive(cfg, "DATALOADER.TRAIN_X.BATCH_SIZE", "a positive batch size")  # its loader is built for every run
    _positive(cfg, "DATALOADER.TEST.BATCH_SIZE", "a positive batch size")
    if cfg.DATALOADER.NUM_WORKERS < 0:
        raise ConfigError(f"DATALOADER.NUM_WORKERS is {cfg.DATALOADER.NUM_WORKERS}, but it must be 0 (load in the "
                          "main process) or a positive number of worker processes.")
    _positive(cfg, "TRAIN.PRINT_FREQ", "a positive number of batches between progress lines")
    for key in ("INPUT.SIZE",):
        size = _get(cfg, key)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"{key} is {tuple(size)}, but it must be two positive sizes (height, width), e.g. (224, 224).")
    shots = cfg.DATASET.NUM_SHOTS
    if shots < -1:
        raise ConfigError(f"DATASET.NUM_SHOTS is {shots}; give a positive number of images per class, or -1 "
                          "(Dassl's default) for the full train set.")
    subset = cfg.DATASET.TEST_SUBSET
    if subset == 0 or subset < -1:
        raise ConfigError(f"DATASET.TEST_SUBSET is {subset}; give a positive number of test images per class, "
                          "or -1 for all of them.")
    if cfg.FEATURE_CACHE.ENABLED:
        _positive(cfg, "FEATURE_CACHE.TRAIN_VIEWS", "a positive number of augmented views per training image")
        _positive(cfg, "FEATURE_CACHE.ENCODE_BATCH_SIZE", "a positive encoding batch size")
    if not trains:
        return
    optim = cfg.OPTIM
    if not optim.LR > 0:
        raise ConfigError(f"OPTIM.LR is {optim.LR}, but a learning rate must be positive (e.g. 0.002).")
    if optim.WEIGHT_DECAY < 0:
        raise ConfigError(f"OPTIM.WEIGHT_DECAY is {optim.WEIGHT_DECAY}, but it must be 0 or positive.")
    if optim.MOMENTUM < 0:
        raise ConfigError(f"OPTIM.MOMENTUM is {optim.MOMENTUM}, but it must be 0 or positive (e.g. 0.9).")
    for key in ("ADAM_BETA1", "ADAM_BETA2"):
        if not 0 <= optim[key] < 1:
            raise ConfigError(f"OPTIM.{key} is {optim[key]}, but it must be in [0, 1) (Adam's defaults: 0.9, 0.999).")
    if not optim.GAMMA > 0:
        raise ConfigError(f"OPTIM.GAMMA is {optim.GAMMA}, but the LR decay factor must be positive (e.g. 0.1).")
    if not epoch_loop:
        return
    if optim.MAX_EPOCH < 1:
        raise ConfigError(f"OPTIM.MAX_EPOCH is {optim.MAX_EPOCH}, so {cfg.TRAINER.NAME} would record an untrained "
                          "model as a finished run; give at least 1 epoch (or evaluate a trained run with --eval-only).")
    if optim.WARMUP_EPOCH > optim.MAX_EPOCH:
        raise ConfigError(f"OPTIM.WARMUP_EPOCH is {optim.WARMUP_EPOCH} but OPTIM.MAX_EPOCH is {optim.MAX_EPOCH}, so the "
                          "whole run would be warm-up; lower OPTIM.WARMUP_EPOCH (or -1 for no warm-up).")


# ---- keys of another trainer's config group ---------------------------------------------------
def trainer_defaults(registry):
    """The default config with the keys of every trainer module (its ``extend_cfg``: the modules of
    the trainer folders, then of any other registered trainer), and, for each top-level
    ``TRAINER.<KEY>``, the modules whose ``extend_cfg`` added, replaced or extended it."""
    cfg = get_cfg_default()
    owners = {}
    seen = set()
    package = sys.modules.get("trainers")  # the trainer folders' modules, when loaded (as train.py does)
    modules = list(package.config_modules()) if hasattr(package, "config_modules") else []
    modules += [sys.modules.get(cls.__module__) for _, cls in registry]
    for module in modules:
        if module is None or module.__name__ in seen or not callable(getattr(module, "extend_cfg", None)):
            continue
        seen.add(module.__name__)
        before = {key: _shape(value) for key, value in cfg.TRAINER.items()}
        module.extend_cfg(cfg)
        for key, value in cfg.TRAINER.items():
            if before.get(key) != _shape(value):  # added, replaced or extended by this module: it reads it
                owners.setdefault(key, set()).add(module.__name__)
    return cfg, owners


def _shape(value):
    """What an extend_cfg can change about a TRAINER entry: the object, and a group's leaf names."""
    leaves = sorted(k for k, _ in _changed_leaves(value, None, "")) if isinstance(value, CfgNode) else []
    return id(value), tuple(leaves)


def reads_trainer_key(name, cls, key, owners, own_group=None, value=None):
    """Whether trainer ``name`` (class ``cls``) reads ``TRAINER.<key>``: a group named after it or a
    class it inherits from (case-insensitive, as ``trainer_group``), a key its own module's
    ``extend_cfg`` adds or extends, the group its ``trainer_cfg()`` returns, or one named in its
    ``reads_keys`` (a ported trainer that reads CoOp's group: ``reads_keys = ("TRAINER.COOP",)``)."""
    names = {name.upper()} | {c.__name__.upper() for c in cls.__mro__}
    if key.upper() in names or cls.__module__ in owners.get(key, ()):
        return True
    if own_group is not None and value is own_group:
        return True
    return any(k == f"TRAINER.{key}" or k.startswith(f"TRAINER.{key}.") for k in getattr(cls, "reads_keys", ()))


def drop_unread_trainer_keys(args, trainer, registry, owners=None):
    """``args`` (train.py flags and ``KEY VALUE`` opts) without the ``TRAINER.<key> VALUE`` pairs that
    ``trainer`` does not read: opts meant for every run of a sweep or the demo reach each trainer's
    runs only where they mean something (``check_trainer_keys`` refuses them elsewhere).
    ``owners``: ``trainer_defaults(registry)[1]``, when the caller keeps it across calls."""
    if trainer not in registry:
        return list(args)
    cls = registry.get(trainer)
    if owners is None:
        owners = trainer_defaults(registry)[1]
    kept, i = [], 0
    while i < len(args):
        item = str(args[i])
        if item.startswith("TRAINER.") and i + 1 < len(args):
            key = item.split(".")[1]
            if key != "NAME" and not reads_trainer_key(trainer, cls, key, owners):
                i += 2
                continue
        kept.append(args[i])
        i += 1
    return kept


def _changed_leaves(node, default, prefix):
    for key, value in node.items():
        ref = default.get(key) if isinstance(default, CfgNode) else None
        if isinstance(value, CfgNode):
            yield from _changed_leaves(value, ref, f"{prefix}.{key}")
        elif ref is None or (value != ref and not _same_sequence(value, ref)):
            yield f"{prefix}.{key}", value


def _same_sequence(a, b):
    return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)


def check_trainer_keys(cfg, name, cls, registry, own_group=None):
    """Refuse a ``TRAINER.<group>`` key changed from its default when this trainer does not read it
    (``TRAINER.COOP.N_CTX 4`` on a TaskRes run would be ignored), naming the trainers that read it.
    For a trainer from outside the project's package (a ``--trainer-dir`` file), whose reads are
    not known here, it is a warning."""
    defaults, owners = trainer_defaults(registry)
    for key, value in cfg.TRAINER.items():
        if key == "NAME" or reads_trainer_key(name, cls, key, owners, own_group, value):
            continue
        default = defaults.TRAINER.get(key)
        if isinstance(value, CfgNode):
            changed = next(_changed_leaves(value, default, f"TRAINER.{key}"), None)
        else:
            changed = None if value == default or _same_sequence(value, default) else (f"TRAINER.{key}", value)
        if changed is None:
            continue
        readers = sorted(n for n, c in registry if reads_trainer_key(n, c, key, owners))
        by = f"read by {', '.join(readers)}" if readers else "read by no registered trainer"
        if not cls.__module__.startswith(PROJECT_TRAINERS):  # a user's trainer file: what it reads is unknown
            logger.warning("%s is %r, but trainer %s may not read it (%s); if it does, declare reads_keys = "
                           "(\"TRAINER.%s\",) on the trainer class, else remove it", changed[0], changed[1], name,
                           by, key)
            continue
        raise ConfigError(f"{changed[0]} is {changed[1]!r}, but trainer {name} does not read it ({by}); "
                          f"remove it, or run --trainer {readers[0] if readers else '<the trainer that reads it>'}.")


# ---- once the data is known --------------------------------------------------------------------
def val_in_test(dataset):
    """The val images that are also test images (CoOp's ImageNet: val = test)."""
    val, test = getattr(dataset, "val", None) or [], getattr(dataset, "test", None) or []
    test_paths = {item.impath for item in test}
    return [item for item in val if item.impath in test_paths]


def _dataset_name(cfg, dataset, shared):
    """The dataset in words; in a multitask run, the tasks whose val split is their test split."""
    tasks = getattr(dataset, "task_names", None)
    if tasks and len(tasks) > 1:
        names = sorted({tasks[item.domain] for item in shared if 0 <= item.domain < len(tasks)})
        if names:
            return f"task {', '.join(names)}"
    return f"dataset {cfg.DATASET.NAME or cfg.DATASET.DATASET}"


def check_val_split(cfg, dataset, has_val):
    """``best_val`` / ``TEST.SPLIT val`` need a val split; ``best_val`` on a val split that is the
    test split selects the model on the test set, refused unless TEST.ALLOW_VAL_IS_TEST."""
    name = cfg.DATASET.NAME or cfg.DATASET.DATASET
    if not has_val and (cfg.TEST.FINAL_MODEL == "best_val" or cfg.TEST.SPLIT == "val"):
        key = "TEST.FINAL_MODEL is best_val" if cfg.TEST.FINAL_MODEL == "best_val" else "TEST.SPLIT is val"
        raise ConfigError(f"{key} but dataset {name} has no val split; "
                          "use TEST.FINAL_MODEL last_step and TEST.SPLIT test.")
    shared = val_in_test(dataset) if cfg.TEST.FINAL_MODEL == "best_val" else []
    if not shared:
        return
    which = _dataset_name(cfg, dataset, shared)
    if not cfg.TEST.ALLOW_VAL_IS_TEST:
        raise ConfigError(f"TEST.FINAL_MODEL is best_val, but {which}'s val split is its test split (as in "
                          "CoOp), so the model would be selected on the test set; use TEST.FINAL_MODEL last_step, or "
                          "set TEST.ALLOW_VAL_IS_TEST True to do it on purpose (e.g. to reproduce a paper that did).")
    logger.warning("TEST.FINAL_MODEL is best_val and %s's val split is its test split: the model is selected "
                   "on the test set (allowed by TEST.ALLOW_VAL_IS_TEST); its test accuracy is optimistic.", which)
