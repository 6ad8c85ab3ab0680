"""Config defaults with Dassl's key groups and values (``get_cfg_default``), plus safe merging.

Trainer-specific groups (``TRAINER.TaskRes`` ...) are added by the trainers themselves, see
``trainers.extend_cfg``. Keys nothing reads are declared with ``unused_key``; ``check_cfg``
refuses a non-default value of one. Merging goes through ``merge_from_file`` / ``merge_from_list`` here so
an unknown key or a wrong type ends in one sentence that names it and suggests the fix.
"""
import difflib
import os

from yacs.config import CfgNode as CN

from .errors import ConfigError

_C = CN()
_C.VERSION = 1
_C.OUTPUT_DIR = "./output"
_C.RESUME = ""  # a folder holding <model>/checkpoint; empty -> OUTPUT_DIR is used
_C.SEED = -1  # >= 0 fixes every RNG; < 0 (Dassl: not seeded): train.py draws one, logs it and records it here
_C.USE_CUDA = True
_C.VERBOSE = True

###########################
# Input
###########################
_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.NO_TRANSFORM = False
_C.INPUT.TRANSFORMS = ()
_C.INPUT.INTERPOLATION = "bilinear"
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.CROP_PADDING = 4
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
_C.INPUT.RANDAUGMENT_N = 2
_C.INPUT.RANDAUGMENT_M = 10
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
_C.INPUT.RGS_P = 0.2
_C.INPUT.GB_P = 0.5
_C.INPUT.GB_K = 21

###########################
# Dataset
###########################
_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = ""
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1
_C.DATASET.NUM_SHOTS = -1  # -1: the full training set
_C.DATASET.VAL_PERCENT = 0.1
_C.DATASET.STL10_FOLD = -1
_C.DATASET.CIFAR_C_TYPE = ""
_C.DATASET.CIFAR_C_LEVEL = 1
_C.DATASET.ALL_AS_UNLABELED = False
_C.DATASET.SUBSAMPLE_CLASSES = "all"  # CoOp: all | base | new
_C.DATASET.TEST_SUBSET = -1  # ours: keep the first N test images per class (FashionMNIST demo); -1 = all
_C.DATASET.ELEVATER_NAME = ""  # ours: which ELEVATER dataset DATASET.NAME "Elevater" reads (MVLPT's --dataset name)
# MVLPT's multitask keys (engine/data/multitask.py); its train.py flags --dataset, --dataset-coop,
# --multi-task, --multi-task-label-pertask, --multi-task-evalkey set them
_C.DATASET.DATASET = ""  # comma-separated dataset names of one run; empty -> DATASET.NAME
_C.DATASET.COOP = False  # the names are CoOp's datasets (True) or ELEVATER's (False, MVLPT's default)
_C.DATASET.MULTITASK = False  # track tasks: own-task loss, per-task accuracy and their average
# ours: True (default) -> a sample's loss is over its own task's classes; False -> the original's
# default, a softmax over the union of every task's classes
_C.DATASET.MULTITASK_LABEL_PERTASK = True
_C.DATASET.MULTITASK_EVALKEY = "average"  # what best_val selects on: "average" or one task's name
# ours: how a multitask run draws each task's few-shot sample: "per_task" (default, each task from
# its own random.Random(SEED), so a task's sample does not depend on the tasks before it) or
# "global" (the original: one generator seeded once with SEED, the tasks drawn in --dataset order)
_C.DATASET.MULTITASK_FEWSHOT_RNG = "per_task"
# The rest of the DATASET keys of MVLPT's train.py and configs (its ELEVATER loader's), with its
# defaults. NUM_SAMPLES_PER_CLASS / RANDOM_SEED_SAMPLING: the ELEVATER few-shot draw's shots and
# seed (its --shots and --seed set them together with NUM_SHOTS and SEED, which is what the
# default means here: datasets/elevater.py takes NUM_SHOTS / SEED unless these were changed).
_C.DATASET.NUM_SAMPLES_PER_CLASS = 20
_C.DATASET.RANDOM_SEED_SAMPLING = 1
_C.DATASET.TRAIN_SET = "train"  # its ImageFolder fallback for names ELEVATER does not know (see below)
_C.DATASET.VAL_SET = ""
_C.DATASET.TEST_SET = "val"
_C.DATASET.CENTER_CROP = False  # its ELEVATER loader's fixed transform (see below)

###########################
# Dataloader
###########################
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.K_TRANSFORMS = 1
_C.DATALOADER.RETURN_IMG0 = False
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
_C.DATALOADER.TRAIN_U = CN()
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

###########################
# Model
###########################
_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""
_C.MODEL.BACKBONE.PRETRAINED = True
# Ours: where CLIP weights come from. WEIGHTS is an explicit file (wins over NAME's file);
# CACHE_DIR empty -> $TASKRES_CLIP_CACHE, else ~/.cache/clip (OpenAI's own default).
_C.MODEL.BACKBONE.WEIGHTS = ""
_C.MODEL.BACKBONE.CACHE_DIR = ""
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

###########################
# Optimization
###########################
_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
_C.OPTIM.STAGED_LR = False
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
_C.OPTIM.LR_SCHEDULER = "single_step"
_C.OPTIM.STEPSIZE = (-1,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
_C.OPTIM.WARMUP_EPOCH = -1  # > 0 turns warm-up on
_C.OPTIM.WARMUP_TYPE = "linear"  # constant | linear
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
_C.OPTIM.WARMUP_RECOUNT = True

###########################
# Train / test
###########################
_C.TRAIN = CN()
_C.TRAIN.CHECKPOINT_FREQ = 0  # 0: only the last epoch is saved
_C.TRAIN.PRINT_FREQ = 10
_C.TRAIN.COUNT_ITER = "train_x"
# Ours: besides Dassl's checkpoints, save a resume checkpoint when this many seconds passed since
# the last save (the older resume-only one is deleted), so a killed run loses little work.
_C.TRAIN.RESUME_SAVE_SECONDS = 60

_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
_C.TEST.COMPUTE_CMAT = False
_C.TEST.NO_TEST = False
_C.TEST.SPLIT = "test"
_C.TEST.FINAL_MODEL = "last_step"  # last_step | best_val
# ours: best_val on a dataset whose val split is its test split (CoOp's ImageNet) selects on the
# test set; refused unless this is True (to reproduce a paper that did), then logged as a warning
_C.TEST.ALLOW_VAL_IS_TEST = False

###########################
# Experiment trackers beside tensorboard (ours, optional packages: requirements-trackers.txt), engine/trackers.py
###########################
_C.TRACKING = CN()
_C.TRACKING.MLFLOW = False  # MLflow: params, metrics, run.json as an artifact
_C.TRACKING.MLFLOW_URI = ""  # empty -> file:<OUTPUT_DIR>/../mlruns (a local store: mlflow ui --backend-store-uri ...)
_C.TRACKING.MLFLOW_EXPERIMENT = "taskres"
_C.TRACKING.WANDB = False  # Weights & Biases
_C.TRACKING.WANDB_MODE = "offline"  # offline (wandb sync uploads later) | online | disabled
_C.TRACKING.WANDB_DIR = ""  # empty -> OUTPUT_DIR
_C.TRACKING.WANDB_PROJECT = "taskres"

###########################
# Feature cache (ours): frozen-encoder features computed once, see engine/features.py
###########################
_C.FEATURE_CACHE = CN()
_C.FEATURE_CACHE.ENABLED = True  # trainers that support it train and test on cached features
_C.FEATURE_CACHE.DIR = ""  # empty -> $TASKRES_FEATURE_CACHE, else $XDG_CACHE_HOME/taskres/features
# Augmented views stored per training image; epoch e trains on view e mod TRAIN_VIEWS.
# TRAIN_VIEWS = OPTIM.MAX_EPOCH reproduces the end-to-end loop. 4, measured: on Fashion-MNIST with
# the micro-CLIP (16 shots, 3 seeds), TaskRes and CoOp accuracy at V = 1..32 and V = E stay within
# one seed std of V = 4; on a crop-sensitive synthetic task V = 1 loses ~3 points; and V = 4 keeps
# 43x of the encoding saved on 16-shot ImageNet (23x at V = 8). Table and command:
# docs/feature_cache.md "Why V = 4" (scripts/bench/views_vs_accuracy.py).
_C.FEATURE_CACHE.TRAIN_VIEWS = 4
_C.FEATURE_CACHE.ENCODE_BATCH_SIZE = 256
# Where JPEGs are decoded and views cut when encoding: cpu (loader workers, Pillow: the pixels the
# end-to-end loop sees), device (torchvision's decode_jpeg + tensor crops on the model's device:
# nvJPEG on a GPU; same crop boxes and flips, pixels within 3 grey levels of Pillow's on a CPU,
# tests/test_device_decode.py) or auto (device on CUDA, cpu otherwise). Default cpu: device
# decoding was not yet measured faster on a GPU here (scripts/bench/gpu_suite.py measures both).
_C.FEATURE_CACHE.DECODE = "cpu"
# torch CPU threads of a frozen-CLIP run (encoding and the training loop); 0 = torch's default
# (one per core). Default 1: the cached loop's matrices are small, and on a shared 2-core machine
# 2 threads ran it 8x slower than 1 (5.8 vs 46.4 s/epoch, see docs/feature_cache.md "Threads");
# a fixed count also fixes the float summation order, so the same seed gives the same numbers on
# machines with different core counts.
_C.FEATURE_CACHE.NUM_THREADS = 1
# torch CPU threads while the frozen encoder runs on the CPU, whatever NUM_THREADS the loop uses;
# 0 = torch's default. The thread count changes how the encoder's sums are split, so features
# differ in the last bits between counts (2.4e-7 on an AMD EPYC between 1 and 2): fixed, they are
# the same for every NUM_THREADS, and a count other than 1 is part of the cache key.
_C.FEATURE_CACHE.ENCODE_THREADS = 1

###########################
# Trainer
###########################
_C.TRAINER = CN()
_C.TRAINER.NAME = ""


# Keys Dassl defines that nothing here reads: a non-default value is refused in one sentence
# rather than accepted and ignored. Trainers add their own with ``unused_key`` in extend_cfg.
_UNUSED = {}  # key -> (default, why nothing reads it)

_NO_DOMAINS = "no dataset here has domains: DG evaluates on the ImageNet variants as datasets"
_DASSL_SSL = "used by Dassl's semi-supervised / CIFAR / STL10 datasets, which are not here"
_NO_HEAD = "Dassl's SimpleNet backbone+head model is not here; CLIP trainers build their own heads"
_NO_SAMPLER = "used by Dassl's domain/class samplers only, which are not supported here"
_MVLPT_FOLDER = ("MVLPT's ImageFolder fallback for a dataset name ELEVATER does not know, which its own MVLPT "
                 "trainer cannot run (class_map has no entry, train_set is never set); name an ELEVATER dataset")
_MVLPT_CROP = ("MVLPT's ELEVATER loader's fixed, augmentation-free transform; here ELEVATER images go through "
               "INPUT.TRANSFORMS like every dataset's, so choose the crop there")


def unused_key(key, default, reason):
    """Declare ``key`` (default ``default``) as read by nothing: ``check_cfg`` refuses other values."""
    _UNUSED[key] = (default, reason)


def check_cfg(cfg, reads=()):
    """Refuse a non-default value of a key nothing reads (one sentence naming key, value and why).

    ``reads``: keys of that list the chosen trainer does read (its ``reads_keys``, e.g. CoOp's
    MODEL.INIT_WEIGHTS), so they are accepted.
    """
    for key, (default, reason) in _UNUSED.items():
        if key in reads:
            continue
        node, found = cfg, True
        for part in key.split("."):
            if not isinstance(node, CN) or part not in node:
                found = False
                break
            node = node[part]
        if found and not _same_value(node, default):
            raise ConfigError(f"{key} is {node!r}, but nothing here reads it ({reason}); "
                              f"remove it or set it back to {default!r}.")


def _same_value(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b


for _key, _reason in [
    ("INPUT.RANDAUGMENT_N", "RandAugment is one of Dassl's policy augmentations, refused by INPUT.TRANSFORMS"),
    ("INPUT.RANDAUGMENT_M", "RandAugment is one of Dassl's policy augmentations, refused by INPUT.TRANSFORMS"),
    ("DATASET.SOURCE_DOMAINS", _NO_DOMAINS), ("DATASET.TARGET_DOMAINS", _NO_DOMAINS),
    ("DATASET.NUM_LABELED", _DASSL_SSL), ("DATASET.VAL_PERCENT", _DASSL_SSL), ("DATASET.STL10_FOLD", _DASSL_SSL),
    ("DATASET.CIFAR_C_TYPE", _DASSL_SSL), ("DATASET.CIFAR_C_LEVEL", _DASSL_SSL),
    ("DATASET.ALL_AS_UNLABELED", _DASSL_SSL),
    ("DATALOADER.TRAIN_X.N_DOMAIN", _NO_SAMPLER), ("DATALOADER.TRAIN_X.N_INS", _NO_SAMPLER),
    ("DATALOADER.TRAIN_U.N_DOMAIN", _NO_SAMPLER), ("DATALOADER.TRAIN_U.N_INS", _NO_SAMPLER),
    ("MODEL.INIT_WEIGHTS", _NO_HEAD + " (load weights in your trainer with engine.utils.load_pretrained_weights)"),
    ("MODEL.HEAD.NAME", _NO_HEAD), ("MODEL.HEAD.HIDDEN_LAYERS", _NO_HEAD), ("MODEL.HEAD.ACTIVATION", _NO_HEAD),
    ("MODEL.HEAD.BN", _NO_HEAD), ("MODEL.HEAD.DROPOUT", _NO_HEAD),
    ("DATASET.TRAIN_SET", _MVLPT_FOLDER), ("DATASET.VAL_SET", _MVLPT_FOLDER), ("DATASET.TEST_SET", _MVLPT_FOLDER),
    ("DATASET.CENTER_CROP", _MVLPT_CROP),
]:
    _node = _C
    for _part in _key.split("."):
        _node = _node[_part]
    unused_key(_key, _node, _reason)


def get_cfg_default():
    """A fresh copy of the defaults (Dassl's ``get_cfg_default``)."""
    return _C.clone()


def _all_keys(node, prefix=""):
    for key, value in node.items():
        full = f"{prefix}{key}"
        if isinstance(value, CN):
            yield from _all_keys(value, full + ".")
        else:
            yield full


def _closest_key(cfg, key):
    close = difflib.get_close_matches(key, list(_all_keys(cfg)), n=1, cutoff=0.6)
    if not close:  # a typo in the last part only ("OPTIM.LRR")
        leaf = key.split(".")[-1]
        by_leaf = {k.split(".")[-1]: k for k in _all_keys(cfg)}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1)]
    return close[0] if close else None


def _explain(cfg, err, source):
    """Turn yacs' KeyError / ValueError into one sentence naming the key and the fix."""
    msg = str(err.args[0]) if err.args else str(err)
    if "Non-existent" in msg:  # yacs: "Non-existent config key: X" (file) / "Non-existent key: X" (list)
        key = msg.split(":")[-1].strip()
        if key.startswith("-"):
            return ConfigError(f'Unknown config key "{key}" in {source}: it looks like a flag, but train.py has no '
                               f"flag {key}; see python train.py --help (flags go before or after the KEY VALUE opts).")
        close = _closest_key(cfg, key)
        hint = f' Did you mean "{close}"?' if close else ""
        return ConfigError(f'Unknown config key "{key}" in {source}.{hint}')
    if "Type mismatch" in msg:
        # yacs: "Type mismatch (<class 'float'> vs. <class 'str'>) with values (0.1 vs. abc) for config key: OPTIM.LR"
        key = msg.split("for config key:")[-1].strip()
        return ConfigError(f"Wrong value type for config key {key} in {source}: {msg.split(' for config key')[0]}; give a value of the same type as the default.")
    return ConfigError(f"Invalid config in {source}: {msg}")


def _lookup(cfg, key):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, CN) or part not in node:
            return None
        node = node[part]
    return node


def _ints_to_floats(loaded, defaults):
    """An integer where the default is a float (``LR: 1``) becomes that float; yacs would refuse it."""
    for key, value in loaded.items():
        default = defaults.get(key) if isinstance(defaults, CN) else None
        if isinstance(value, CN):
            _ints_to_floats(value, default)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            loaded[key] = float(value)


def merge_from_file(cfg, path):
    """Merge a yaml file; a missing file, unknown key or wrong type raises ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError(f"Config file not found: {path}; check the path given to --config-file/--dataset-config-file.")
    try:
        with open(path) as f:
            loaded = cfg.load_cfg(f)
        _ints_to_floats(loaded, cfg)
        cfg.merge_from_other_cfg(loaded)
    except (KeyError, ValueError, AssertionError) as e:
        raise _explain(cfg, e, path) from e


def merge_from_list(cfg, opts, source="the command-line opts"):
    """Merge ``KEY VALUE`` pairs; same errors as ``merge_from_file``. ``OPTIM.LR 1`` is read as 1.0."""
    if len(opts) % 2:
        raise ConfigError("The KEY VALUE opts must come in pairs, got an odd number of items: "
                          f"{' '.join(map(str, opts))}.")
    opts = list(opts)
    for i in range(0, len(opts), 2):
        if isinstance(_lookup(cfg, str(opts[i])), float):
            try:
                value = CN._decode_cfg_value(opts[i + 1])
            except (ValueError, SyntaxError):
                continue  # yacs reports the wrong type below
            if isinstance(value, int) and not isinstance(value, bool):
                opts[i + 1] = float(value)
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise _explain(cfg, e, source) from e
