"""What ``train.py`` sets up, as importable functions: the command line, the config (defaults +
every trainer module's ``extend_cfg`` -> --dataset-config-file -> --config-file -> CLI flags ->
``KEY VALUE`` opts), the trainer folders, logging, the seed, and the launch of one run (train or
evaluate, with its run.json). train.py, torchrun extraction (engine/distributed.py) and the
planner (scripts/plan.py) call these; nothing here imports an entry script.

    args, cfg = setup(argv)       # parse, load --trainer-dir folders, build the frozen cfg
    main(argv)                    # one run, as ``python train.py ...``
"""
import argparse
import datetime
import logging
import os
import platform
import random

import torch
import yaml

from . import TRAINER_REGISTRY, build_trainer
from .config import check_cfg, get_cfg_default, merge_from_file, merge_from_list
from .errors import UserError
from .provenance import RunRecord
from .trackers import Trackers
from .trainer import trainer_group
from .utils import set_random_seed, setup_logger
from .utils.io import atomic_write_text
from .utils.lock import OutputDirLock

ENV_DIRS = "TASKRES_TRAINER_DIRS"  # trainers.ENV_DIRS (kept here so the parser needs no plugin import)
LISTS = ("trainers", "datasets", "backbones", "configs")


def plugins():
    """The plugin packages (they register the datasets and trainers); imported on first use, as
    they import the engine themselves."""
    import datasets  # noqa: F401, PLC0415
    import trainers  # noqa: PLC0415

    return trainers

logger = logging.getLogger("train")  # the log lines keep train.py's name


def build_parser():
    parser = argparse.ArgumentParser(
        description="Train or evaluate a CLIP few-shot method registered in TRAINER_REGISTRY")
    # every default is None: a flag overrides the yaml files only when it is given
    parser.add_argument("--root", type=str, help="path to dataset")
    parser.add_argument("--output-dir", type=str, help="output directory")
    parser.add_argument("--resume", type=str, help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, help="a fixed seed (>= 0, as in Dassl); negative: one is drawn at "
                                                 "random, logged and recorded in config.yaml")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, help="name of trainer")
    parser.add_argument("--trainer-dir", type=str, action="append", default=[],
                        help=f"folder of trainer .py files to import (repeatable; also ${ENV_DIRS})")
    parser.add_argument("--list", choices=LISTS,
                        help="print the registered trainers (with their config folders and declared protocol), "
                             "datasets (expected folder under --root), backbones or configs, and exit")
    parser.add_argument("--backbone", type=str, help="name of CNN backbone")
    parser.add_argument("--head", type=str, help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--enhanced-base", type=str,
                        help="the trainer's TRAINER.<NAME>.ENHANCED_BASE: an enhanced base file "
                             "(strong_base/...) or none")
    # multitask flags (the multitask prompt-tuning repository's train.py): several datasets in one run
    parser.add_argument("--dataset", type=str, help="dataset name(s), comma-separated (DATASET.DATASET)")
    parser.add_argument("--shots", type=int, help="few-shot images per class (DATASET.NUM_SHOTS)")
    parser.add_argument("--dataset-coop", action="store_true",
                        help="--dataset names the Dassl-style few-shot datasets (DATASET.COOP), not ELEVATER's")
    parser.add_argument("--multi-task", action="store_true", help="train the --dataset tasks jointly (DATASET.MULTITASK)")
    parser.add_argument("--multi-task-label-pertask", "--multi-task-label_pertask", action="store_true",
                        help="loss over each sample's own task's classes (DATASET.MULTITASK_LABEL_PERTASK)")
    parser.add_argument("--multi-task-evalkey", type=str,
                        help="'average' or a task to select the best epoch on (DATASET.MULTITASK_EVALKEY)")
    parser.add_argument("--cut-contextlen", action="store_true",
                        help="text prompts only as long as the longest (TRAINER.CUT_CONTEXTLEN)")
    parser.add_argument("--act-ckpt", type=int, help="activation-checkpoint chunks of the text encoder (TRAINER.ACT_CKPT)")
    parser.add_argument("opts", nargs="*", help="modify config options using the command-line (KEY VALUE pairs; "
                                                "flags may come before or after them)")
    return parser


def parse_args(argv=None):
    """Flags and ``KEY VALUE`` opts in any order (``... DATASET.NUM_SHOTS 1 --output-dir X`` works)."""
    return build_parser().parse_intermixed_args(argv)


def reset_cfg(cfg, args):
    """CLI flags override the yaml files (the original's reset_cfg), each only when given."""
    flags = [("root", "DATASET.ROOT"), ("output_dir", "OUTPUT_DIR"), ("resume", "RESUME"), ("seed", "SEED"),
             ("source_domains", "DATASET.SOURCE_DOMAINS"), ("target_domains", "DATASET.TARGET_DOMAINS"),
             ("transforms", "INPUT.TRANSFORMS"), ("trainer", "TRAINER.NAME"), ("backbone", "MODEL.BACKBONE.NAME"),
             ("head", "MODEL.HEAD.NAME")]
    set_flags(cfg, args, flags)
    if args.enhanced_base is not None:
        set_enhanced_base(cfg, args.enhanced_base)
    reset_multitask_cfg(cfg, args)


def set_flags(cfg, args, flags):
    """``cfg[key] = args.attr`` for each (attr, dotted key) whose flag was given (not None)."""
    for attr, key in flags:
        value = getattr(args, attr)
        if value is not None:
            node, leaf = cfg, key
            while "." in leaf:
                head, leaf = leaf.split(".", 1)
                node = node[head]
            node[leaf] = value


def reset_multitask_cfg(cfg, args):
    """The multitask flags, as the multitask repository's reset_cfg maps them (each only when given)."""
    if args.dataset is not None:
        cfg.DATASET.DATASET = args.dataset
        if "," not in args.dataset and args.dataset_coop:
            cfg.DATASET.NAME = args.dataset  # one Dassl-style dataset: also the ordinary DATASET.NAME
    set_flags(cfg, args, [("shots", "DATASET.NUM_SHOTS"), ("multi_task_evalkey", "DATASET.MULTITASK_EVALKEY"),
                          ("act_ckpt", "TRAINER.ACT_CKPT")])
    switches = [("dataset_coop", "COOP"), ("multi_task", "MULTITASK"),
                ("multi_task_label_pertask", "MULTITASK_LABEL_PERTASK")]
    for attr, key in switches:  # store_true flags: False means "not given", the yaml's value stays
        if getattr(args, attr):
            cfg.DATASET[key] = True
    if args.cut_contextlen:
        cfg.TRAINER.CUT_CONTEXTLEN = True


def set_enhanced_base(cfg, value):
    """--enhanced-base sets ENHANCED_BASE in the config group of the trainer that has one."""
    trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME, hint=" Pass one with --trainer.")
    group = trainer_group(cfg, trainer_cls)
    if "ENHANCED_BASE" in group:
        group.ENHANCED_BASE = value
    elif value.lower() != "none":
        raise UserError(f"--enhanced-base is not used by trainer {cfg.TRAINER.NAME} (its config group has no "
                        "ENHANCED_BASE key); leave it out.")


def setup_cfg(args):
    cfg = plugins().extend_cfg(get_cfg_default(), trainer=args.trainer)  # its folder's defaults win
    if args.dataset_config_file:
        merge_from_file(cfg, args.dataset_config_file)
    if args.config_file:
        merge_from_file(cfg, args.config_file)
    reset_cfg(cfg, args)
    merge_from_list(cfg, args.opts or [])
    name = cfg.TRAINER.NAME
    trainer_cls = TRAINER_REGISTRY.get(name) if name in TRAINER_REGISTRY else None
    check_cfg(cfg, reads=getattr(trainer_cls, "reads_keys", ()))
    args.drawn_seed = draw_seed_if_unset(cfg)
    cfg.freeze()
    return cfg


def draw_seed_if_unset(cfg):
    """SEED < 0 (Dassl: no fixed seed) becomes a seed drawn at random, so the run is still seeded,
    its few-shot draw is cached under the real seed (never under seed_-1, reused by every later
    "random" run) and config.yaml records it. The same command run again in that folder (to resume)
    takes the seed its config.yaml recorded, so it resumes the run it started. Returns
    ("drawn" | "recorded", seed), or None when a seed was given."""
    if cfg.SEED >= 0:
        return None
    recorded = recorded_seed(os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
    if recorded is not None:
        cfg.SEED = recorded
        return "recorded", recorded
    cfg.SEED = random.SystemRandom().randrange(1, 2**31)
    return "drawn", cfg.SEED


def recorded_seed(path):
    """The SEED an earlier run wrote into ``path`` (a config.yaml), if any and >= 0."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            seed = (yaml.safe_load(f) or {}).get("SEED")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else None


def save_config(cfg):
    """Dump the final config to OUTPUT_DIR/config.yaml; an older, different one is kept aside."""
    path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    text = cfg.dump()
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
        kept = f"{path}-{datetime.datetime.now():%Y-%m-%d-%H-%M-%S}"
        os.replace(path, kept)
        logger.warning("The config differs from the last run in this folder; the old one is kept as %s", kept)
    atomic_write_text(path, text)


def log_args(args, cfg):
    logger.info("***************\n** Arguments **\n***************")
    for key in sorted(vars(args)):
        logger.info("%s: %s", key, getattr(args, key))
    logger.info("************\n** Config **\n************\n%s", cfg)
    logger.info("** System info **\nPython %s, PyTorch %s, CUDA available: %s, platform %s",
                platform.python_version(), torch.__version__, torch.cuda.is_available(), platform.platform())


def check_eval_only(args, trainer_cls, trainer=None):
    """--eval-only without --model-dir: fine for a training-free trainer (``training_free = True``, or
    none declared and no model registered); otherwise there is nothing to evaluate."""
    if not args.eval_only or args.model_dir:
        return
    free = getattr(trainer_cls, "training_free", None)
    if free is None and trainer is not None:
        free = not trainer.get_model_names()
    if free is False:
        raise UserError(f"--eval-only needs --model-dir for trainer {trainer_cls.__name__}, which trains a model: "
                        "pass the output folder of the training run to evaluate.")


def load_trainer_folders(dirs=()):
    """Register the datasets and trainers: ours, $TASKRES_TRAINER_DIRS' and those of ``dirs``."""
    trainers = plugins()
    trainers.load_trainer_dirs(trainers.trainer_dirs_from_env() + list(dirs))


def load_trainer_dirs(args):
    """Import the trainer folders of --trainer-dir and $TASKRES_TRAINER_DIRS."""
    load_trainer_folders(args.trainer_dir)


def setup(argv=None):
    """(args, frozen cfg) of a train.py command line: the trainer folders loaded first."""
    args = parse_args(argv)
    load_trainer_dirs(args)
    return args, setup_cfg(args)


def main(argv=None):
    args = parse_args(argv)
    load_trainer_dirs(args)
    if args.list:
        from .listing import print_list  # noqa: PLC0415

        print_list(args.list, args)
        return None
    cfg = setup_cfg(args)
    trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME, hint=" Pass one with --trainer.")
    check_eval_only(args, trainer_cls)
    if args.model_dir and not os.path.isdir(args.model_dir):
        raise UserError(f"--model-dir {args.model_dir} does not exist; give the output folder of the run to load, "
                        "or leave --model-dir out.")
    with OutputDirLock(cfg.OUTPUT_DIR):
        setup_logger(cfg.OUTPUT_DIR)
        how = getattr(args, "drawn_seed", None)
        if how is not None and how[0] == "drawn":
            logger.info("SEED was negative (Dassl: not seeded): drew seed %d at random, recorded in config.yaml; "
                        "pass --seed %d to repeat this run", cfg.SEED, cfg.SEED)
        elif how is not None:
            logger.info("SEED was negative (Dassl: not seeded): using seed %d, the one drawn by the earlier run "
                        "recorded in %s/config.yaml", cfg.SEED, cfg.OUTPUT_DIR)
        if cfg.SEED >= 0:  # Dassl's rule: 0 is a fixed seed too
            logger.info("Setting fixed seed: %d", cfg.SEED)
            set_random_seed(cfg.SEED)
        if torch.cuda.is_available() and cfg.USE_CUDA:
            torch.backends.cudnn.benchmark = True
        log_args(args, cfg)
        # config.yaml is written once the inputs proved usable: a mistyped command leaves
        # the config.yaml of the run already in this folder where it is
        trainer = build_trainer(cfg)
        check_eval_only(args, trainer_cls, trainer)
        record = RunRecord(cfg, args, trainer_cls)
        record.set_device(getattr(trainer, "device", "cpu"))
        status = "failed"
        trainer.trackers = Trackers(cfg)  # none unless TRACKING.MLFLOW / TRACKING.WANDB
        try:
            if args.eval_only:
                trainer.load_model(args.model_dir, epoch=args.load_epoch)
                save_config(cfg)
                record.start()
                trainer.test()
            else:
                if args.model_dir:  # transfer (the multitask workflow): start training from a source run's weights
                    trainer.load_model(args.model_dir, epoch=args.load_epoch)
                save_config(cfg)
                record.start()
                if not args.no_train:
                    trainer.train()
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            record.end(status)  # when it started: the run's folder says how it ended
            trainer.trackers.finish(record.path, status)
        return trainer


def one_sentence(error):
    """The message of a UserError; one raised in a DataLoader worker comes wrapped in the
    worker's traceback ("Caught DataError in DataLoader worker process 0 ..."): keep its last line."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


