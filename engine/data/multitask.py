"""Several datasets in one run (MVLPT's multitask source runs): one concatenated label space.

MVLPT's ``--dataset A,B,C --dataset-coop --multi-task`` builds each dataset as usual, then
offsets every task's labels by the classes of the tasks before it, so task t owns the label
range ``[start_t, end_t)`` and keeps its own class names; each item's ``domain`` is its task id.
Batches mix tasks (one random sampler over all items). The task of an item follows from its
label, so cached-feature batches (which carry no ``domain``) still know their task.

    dm = MultiTaskDataManager(cfg)            # cfg.DATASET.DATASET = "EuroSAT,DescribableTextures"
    dm.dataset.task_names, dm.dataset.task_ranges, dm.dataset.label_to_task   # [num_classes] long tensor
    own_task_logits(logits, labels, dm.dataset.label_to_task, dm.dataset.task_ranges)

Few-shot draws: each task from its own ``random.Random(SEED)`` (ours: a task's sample does not
depend on the tasks before it), or with ``DATASET.MULTITASK_FEWSHOT_RNG global`` the original's,
one generator seeded once and the tasks drawn in ``--dataset`` order (``fewshot_generator``).

``MultiTaskClassification`` scores each task on its own classes (its slice of the logits) and
reports the average over tasks first, so ``TEST.FINAL_MODEL best_val`` selects on the average
(or on ``DATASET.MULTITASK_EVALKEY`` when that names a task, as MVLPT's key does).
"""
import contextlib
import json
import logging
import os
import random
from collections import OrderedDict

import numpy as np
import torch

from ..errors import ConfigError
from ..evaluation import Classification
from ..utils.io import atomic_write_text, mkdir_if_missing
from .data_manager import DataManager
from .datasets import DatasetBase, Datum, build_dataset, shared_fewshot_generator

logger = logging.getLogger(__name__)

FEWSHOT_RNG_MODES = ("per_task", "global")  # DATASET.MULTITASK_FEWSHOT_RNG


def task_names(cfg):
    """The datasets of a run: ``DATASET.DATASET`` (comma-separated, MVLPT's ``--dataset``) or ``DATASET.NAME``."""
    names = [n.strip() for n in cfg.DATASET.DATASET.split(",") if n.strip()]
    if not names:
        names = [cfg.DATASET.NAME] if cfg.DATASET.NAME else []
    if not names:
        raise ConfigError("No dataset given: pass --dataset NAME[,NAME...] or set DATASET.NAME.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"DATASET.DATASET names {', '.join(duplicates)} more than once; list each dataset once.")
    return names


def task_cfg(cfg, name):
    """The config one task is built with: ``DATASET.NAME`` set to it (CoOp's datasets), or, with
    ``DATASET.COOP`` False, the ELEVATER dataset of that name (MVLPT's default data path)."""
    one = cfg.clone()
    one.defrost()
    if cfg.DATASET.COOP:
        one.DATASET.NAME = name
    else:
        one.DATASET.NAME = "Elevater"
        one.DATASET.ELEVATER_NAME = name
    one.freeze()
    return one


class MultiTaskDataset(DatasetBase):
    """The concatenation of ``tasks`` (a list of (name, dataset)) with offset labels."""

    def __init__(self, tasks):
        self.task_names = [name for name, _ in tasks]
        self.task_ranges = []
        train_x, val, test, classnames = [], [], [], []
        offset = 0
        for task_id, (name, dataset) in enumerate(tasks):
            def moved(items):
                return [Datum(d.impath, d.label + offset, task_id, d.classname) for d in items or []]

            train_x += moved(dataset.train_x)
            val += moved(dataset.val)
            test += moved(dataset.test)
            classnames += list(dataset.classnames)
            self.task_ranges.append((offset, offset + dataset.num_classes))
            offset += dataset.num_classes
        # ImageNet-style datasets use their test set as val: a task without val keeps none, and
        # the run has a val split only when every task has one (else best_val would skip a task)
        has_val = all(dataset.val for _, dataset in tasks)
        super().__init__(train_x=train_x, val=val if has_val else None, test=test)
        # every task's classes, also one without training items (a few-shot draw keeps all)
        self._num_classes = offset
        self._classnames = classnames
        self._lab2cname = {label: name for label, name in enumerate(classnames)}
        self.label_to_task = torch.tensor(
            [t for t, (start, end) in enumerate(self.task_ranges) for _ in range(start, end)], dtype=torch.long)

    def task_of(self, label):
        return self.task_names[int(self.label_to_task[label])]


def fewshot_generator(cfg):
    """The context the tasks are built in: per task (ours, default) each task draws from its own
    ``random.Random(SEED)``; ``global`` (the original) all draw, in --dataset order, from one seeded once."""
    mode = cfg.DATASET.MULTITASK_FEWSHOT_RNG
    if mode not in FEWSHOT_RNG_MODES:
        raise ConfigError(f"DATASET.MULTITASK_FEWSHOT_RNG is {mode!r}; use 'per_task' (each task's sample on its "
                          "own) or 'global' (the original's draws: one generator for all tasks, in order).")
    if mode == "per_task":
        return contextlib.nullcontext()
    seed = cfg.SEED
    logger.info("Few-shot draws: one generator seeded once with SEED %s for all tasks, in order "
                "(DATASET.MULTITASK_FEWSHOT_RNG global, the original's)", seed)
    # Dassl seeds the global random only when SEED >= 0; an unseeded run draws at random there too
    return shared_fewshot_generator(random.Random(seed) if seed >= 0 else random.Random())


def build_multitask_dataset(cfg):
    """Each task of ``task_names(cfg)`` built as its own dataset, then concatenated."""
    tasks = []
    with fewshot_generator(cfg):
        for name in task_names(cfg):
            dataset = build_dataset(task_cfg(cfg, name))
            logger.info("Task %d: %s (%d classes, %d train, %d test)", len(tasks), name, dataset.num_classes,
                        len(dataset.train_x), len(dataset.test))
            tasks.append((name, dataset))
    return MultiTaskDataset(tasks)


class MultiTaskDataManager(DataManager):
    """Dassl's DataManager over the concatenated tasks (MVLPT's ``MVLPTCOOPDataManager``)."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        super().__init__(cfg, custom_tfm_train, custom_tfm_test, dataset_wrapper,
                         dataset=build_multitask_dataset(cfg))

    def show_dataset_summary(self, cfg):
        super().show_dataset_summary(cfg)
        for name, (start, end) in zip(self.dataset.task_names, self.dataset.task_ranges):
            logger.info("  task %s: labels %d-%d", name, start, end - 1)


def use_multitask_data(trainer):
    """Give ``trainer`` (a SimpleTrainer in ``build_data_loader``) the multitask DataManager and
    Dassl's loader attributes, as SimpleTrainer.build_data_loader does for one dataset."""
    dm = MultiTaskDataManager(trainer.cfg)
    trainer.train_loader_x, trainer.train_loader_u = dm.train_loader_x, dm.train_loader_u
    trainer.val_loader, trainer.test_loader = dm.val_loader, dm.test_loader
    trainer.num_classes, trainer.num_source_domains = dm.num_classes, dm.num_source_domains
    trainer.lab2cname = dm.lab2cname
    trainer.dm = dm
    trainer.warn_short_classes(dm.dataset.train_x)
    return dm


def wants_multitask_data(cfg):
    """A run over ``DATASET.DATASET`` (MVLPT's ``--dataset``) or with ``--multi-task``."""
    return bool(cfg.DATASET.DATASET or cfg.DATASET.MULTITASK)


def own_task_logits(logits, labels, label_to_task, task_ranges):
    """``logits`` with every class outside each sample's own task set to -inf, so a softmax (the
    loss, the prediction) covers only that task's classes. ``labels`` are the concatenated ones."""
    tasks = label_to_task.to(labels.device)[labels]
    class_task = label_to_task.to(logits.device)
    keep = class_task.unsqueeze(0) == tasks.unsqueeze(1)  # [B, num_classes]
    return logits.masked_fill(~keep, float("-inf"))


def original_results_line(results):
    """The original's ``print('results', results)`` as its Python (3.8) writes it: Dassl's OrderedDict
    as ``results OrderedDict([('accuracy', 85.0), ...])``, a plain dict as ``results {'average': 85.0}``."""
    items = [(key, float(value)) for key, value in results.items()]
    if isinstance(results, OrderedDict):
        return "results OrderedDict([" + ", ".join(f"({k!r}, {v!r})" for k, v in items) + "])"
    return "results {" + ", ".join(f"{k!r}: {v!r}" for k, v in items) + "}"


class ScoreKeeper:
    """A task's scores and labels, kept for its ELEVATER metric (engine/elevater_metrics.py)."""

    def __init__(self, metric):
        self.name, self.fn = metric
        self.reset()

    def reset(self):
        self.scores, self.labels = [], []

    def process(self, mo, gt):
        self.scores.append(mo.detach().float().cpu().numpy())
        self.labels.append(gt.detach().cpu().numpy())

    def value(self):
        return self.fn(np.concatenate(self.labels), np.concatenate(self.scores))


class OriginalLinesClassification(Classification):
    """One task with the original MVLPT's lines after Dassl's block: ``Overall evaluation !`` and its
    ``results {...}`` (an ELEVATER task's ``metric``, a ``(name, function)``, scores it as the original does).

    Before them: ``=> results saved to <path>``, the split's results file, so the original's
    read_record.py, which wants "test" two lines above ``results``, reads our log."""

    def __init__(self, cfg, lab2cname=None, metric=None, **kwargs):
        self.keeper = ScoreKeeper(metric) if metric else None
        super().__init__(cfg, lab2cname=lab2cname, **kwargs)

    def reset(self):
        super().reset()
        if getattr(self, "keeper", None):
            self.keeper.reset()

    def process(self, mo, gt):
        super().process(mo, gt)
        if self.keeper:
            self.keeper.process(mo, gt)

    def evaluate(self, save_path=None):
        results = super().evaluate(save_path)
        if save_path:
            logger.info("=> results saved to %s", save_path)
        logger.info("Overall evaluation !")
        logger.info(original_results_line({self.keeper.name: self.keeper.value()} if self.keeper else results))
        return results


class MultiTaskClassification(Classification):
    """Per-task accuracy on each task's own classes, and their average (reported first).

    Logs one Dassl result block per task (``=> result on <task>``), then the average as the last
    ``* accuracy:`` line, which is the number CoOp's parse_test_res.py and our summaries read.
    With ``original_lines`` (MVLPT) the original's lines too: ``evaluate on the *<task>* !`` before
    each task's block and its ``results ...`` after it (``metrics``: task -> ELEVATER ``(name,
    function)``, the original's score of an ELEVATER task; else Dassl's OrderedDict), then
    ``=> results saved to <path>``, ``Overall evaluation !`` and ``results {'average': ...}``.
    """

    def __init__(self, cfg, task_names, task_ranges, lab2cname=None, evalkey="average", original_lines=False,
                 metrics=None):
        self.task_names = list(task_names)
        self.task_ranges = list(task_ranges)
        if evalkey != "average" and evalkey not in self.task_names:
            raise ConfigError(f"DATASET.MULTITASK_EVALKEY is {evalkey!r}; use 'average' or one of the tasks "
                              f"{', '.join(self.task_names)}.")
        self.evalkey = evalkey
        self.original_lines = original_lines
        self.per_task = OrderedDict((name, Classification(cfg, lab2cname=lab2cname)) for name in self.task_names)
        self.keepers = {name: ScoreKeeper(metric) for name, metric in (metrics or {}).items()}
        super().__init__(cfg, lab2cname=lab2cname)

    def reset(self):
        super().reset()
        for evaluator in [*getattr(self, "per_task", {}).values(), *getattr(self, "keepers", {}).values()]:
            evaluator.reset()

    def process(self, mo, gt):
        for name, (start, end) in zip(self.task_names, self.task_ranges):
            rows = (gt >= start) & (gt < end)
            if rows.any():  # the task's slice of the logits, its labels back to 0..n_t-1
                self.per_task[name].process(mo[rows][:, start:end], gt[rows] - start)
                if name in self.keepers:
                    self.keepers[name].process(mo[rows][:, start:end], gt[rows] - start)

    def evaluate(self, save_path=None):
        results = OrderedDict()
        per_task = OrderedDict()
        original = OrderedDict()  # the original's number per task (its metric of an ELEVATER task)
        for name, evaluator in self.per_task.items():
            if self.original_lines:
                logger.info("evaluate on the *%s* !", name)
            logger.info("=> result on %s", name)
            task_results = evaluator.evaluate()
            per_task[name] = task_results["accuracy"]
            if self.original_lines:
                keeper = self.keepers.get(name)
                line = {keeper.name: keeper.value()} if keeper else task_results
                original[name] = next(iter(line.values()))
                logger.info(original_results_line(line))
        average = sum(per_task.values()) / len(per_task)
        logger.info("=> average over %d tasks", len(per_task))
        logger.info(f"* accuracy: {average:.1f}%")
        results[self.evalkey] = average if self.evalkey == "average" else per_task[self.evalkey]
        results["average"] = average
        for name, acc in per_task.items():
            results[f"accuracy/{name}"] = acc
        if save_path:
            folder = os.path.dirname(save_path)
            if folder:
                mkdir_if_missing(folder)
            # "accuracy": the reported number, as a single-task run's results file names it
            payload = {"accuracy": results[self.evalkey], "average": average, "tasks": per_task,
                       "evalkey": self.evalkey}
            atomic_write_text(save_path, json.dumps(payload, indent=2) + "\n")
        if self.original_lines:
            self.log_original_overall(original, save_path)
        return results

    def log_original_overall(self, original, save_path):
        if save_path:
            logger.info("=> results saved to %s", save_path)
        logger.info("Overall evaluation !")
        if self.evalkey == "average":
            line = {"average": sum(original.values()) / len(original)}
        else:
            line = {self.evalkey: original[self.evalkey]}
            logger.info("select %s as the evaluation key", self.evalkey)
        logger.info(original_results_line(line))
