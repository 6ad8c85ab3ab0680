"""The training loop with Dassl's API: ``TRAINER_REGISTRY``, ``SimpleTrainer``, ``TrainerX``, ``TrainerXU``.

Call order (read top to bottom)::

    trainer = build_trainer(cfg)        # build_data_loader(), build_model(), build_evaluator
    trainer.train()                     # before_train: resume from <OUTPUT_DIR|RESUME>/<model>/checkpoint
                                        # per epoch: before_epoch, run_epoch (the trainer calls update_lr() at its
                                        #   last batch, as in Dassl), after_epoch (val, checkpoints)
                                        # after_train (only when every epoch ran): "Finish training",
                                        #   final test, "Elapsed"; finally: tensorboard closed
                                        # Ctrl-C / SIGTERM: the epoch under way is dropped, the state at
                                        #   its start saved (leave_resumable_checkpoint), then re-raised
    trainer.load_model(dir, epoch); trainer.test()   # --eval-only

A trainer implements ``build_model`` (registering its trainable modules with
``register_model``) and ``forward_backward(batch)``; everything else is shared.
"""
import copy
import datetime
import logging
import os
import time
from collections import OrderedDict

import numpy as np
import torch
from yacs.config import CfgNode

from .checks import check_trainer_keys, check_val_split, check_values
from .dassl_forks import DasslForkMethods
from .errors import CheckpointError, ConfigError, UserError
from .evaluation import build_evaluator
from .registry import Registry
from .utils.checkpoint import (
    BEST_NAME, checkpoint_name, list_epochs, load_checkpoint, read_pointer, remove_stale_temporaries,
    resume_from_checkpoint, save_checkpoint)
from .utils.meters import AverageMeter, MetricMeter
from .utils.signals import StopRequested, check_stop

logger = logging.getLogger(__name__)

TRAINER_REGISTRY = Registry("TRAINER")
FINAL_MODELS = ("last_step", "best_val")


class TrainingDiverged(UserError, FloatingPointError):
    """The loss became NaN or inf."""


def build_trainer(cfg):
    trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME, hint=" Pass one with --trainer.")
    logger.info("Loading trainer: %s", cfg.TRAINER.NAME)
    return trainer_cls(cfg)


def trainer_group(cfg, trainer_cls):
    """The config group ``TRAINER.<NAME>`` of a trainer, or an empty node when it has none.

    Looked up by the registered name, then by the class names up the inheritance chain (a
    subclass registered under a new name shares its parent's group), each also
    case-insensitively (CoOp's ``CoOp`` trainer reads ``TRAINER.COOP``).
    """
    groups = {k: v for k, v in cfg.TRAINER.items() if isinstance(v, CfgNode)}
    by_upper = {k.upper(): v for k, v in groups.items()}
    for name in [cfg.TRAINER.NAME] + [c.__name__ for c in trainer_cls.__mro__]:
        if name in groups:
            return groups[name]
        if name.upper() in by_upper:
            return by_upper[name.upper()]
    return CfgNode()


def select_device(cfg):
    if cfg.USE_CUDA and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class TrainerBase(DasslForkMethods):
    """The model store and the epoch loop, with no data or method specifics (plus the methods Dassl
    forks add that published trainers call, ``engine.dassl_forks``)."""

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None

    def register_model(self, name="model", model=None, optim=None, sched=None):
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        if name in self._models:
            raise KeyError(f'A model named "{name}" is already registered')
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        names_real = list(self._models.keys())
        if names is None:
            return names_real
        names = [names] if isinstance(names, str) else names
        for name in names:
            if name not in names_real:
                raise KeyError(f'No model named "{name}"; registered: {", ".join(names_real)}')
        return names

    # ---- checkpoints -------------------------------------------------------------------------
    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        paths = []
        for name in self.get_model_names():
            state = {
                "state_dict": self._models[name].state_dict(),
                "epoch": epoch + 1,
                "optimizer": self._optims[name].state_dict() if self._optims[name] is not None else None,
                "scheduler": self._scheds[name].state_dict() if self._scheds[name] is not None else None,
                "val_result": val_result,
            }
            # model-best is a copy for deployment: the resume pointer keeps naming the latest epoch
            paths.append(save_checkpoint(state, os.path.join(directory, name), is_best=is_best,
                                         model_name=model_name, update_pointer=model_name != BEST_NAME))
        return paths

    def resume_model_if_exist(self, directory):
        names = self.get_model_names()
        for name in names:
            remove_stale_temporaries(os.path.join(directory, name))
        if not all(read_pointer(os.path.join(directory, name)) for name in names):
            logger.info("No checkpoint found, train from scratch")
            return 0
        logger.info('Found checkpoint at "%s" (will resume training)', directory)
        start_epoch = 0
        for name in names:
            start_epoch = resume_from_checkpoint(
                os.path.join(directory, name), self._models[name], self._optims[name], self._scheds[name])
        return start_epoch

    def load_model(self, directory, epoch=None):
        """Load ``model-best.pth.tar`` (or ``model.pth.tar-<epoch>``) of every registered model."""
        if not directory:
            logger.info("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = BEST_NAME if epoch is None else checkpoint_name(epoch)
        for name in self.get_model_names():
            model_path = os.path.join(directory, name, model_file)
            if not os.path.exists(model_path):
                epochs = list_epochs(os.path.join(directory, name))
                there = f"epochs saved there: {', '.join(map(str, epochs))}" if epochs else "no model.pth.tar-* files there"
                raise CheckpointError(f'Model not found at "{model_path}" ({there}); check --model-dir and --load-epoch.')
            checkpoint = load_checkpoint(model_path)
            state_dict = self.adapt_state_dict(name, checkpoint["state_dict"])
            val_result = checkpoint.get("val_result")
            val_text = f", val_result = {val_result:.1f}" if isinstance(val_result, (int, float)) else ""
            logger.info('Loading weights to %s from "%s" (epoch = %s%s)', name, model_path, checkpoint["epoch"], val_text)
            try:
                self._models[name].load_state_dict(state_dict)
            except RuntimeError as e:
                raise CheckpointError(
                    f"Checkpoint {model_path} does not fit this model: {str(e).splitlines()[-1].strip()} "
                    "(was it trained on another dataset or backbone?).") from e

    def adapt_state_dict(self, name, state_dict):
        """Hook for trainers that evaluate a checkpoint on a class subset (ImageNet-A/R)."""
        return state_dict

    # ---- the loop ----------------------------------------------------------------------------
    def train(self, start_epoch, max_epoch):
        """before_train, the epochs, after_train; the writer is closed whatever happens.

        ``after_train`` (final test, files a trainer writes after training) runs only when every
        epoch finished; a failure is logged with the epoch it happened in and re-raised.
        """
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self._epoch_start_state = None  # the trained modules' state as the current epoch began
        self._in_loop = False  # whether the epochs began (so the state in memory is an epoch's)
        finished = False
        try:
            self.before_train()
            for self.epoch in range(self.start_epoch, self.max_epoch):
                self._epoch_start_state = self._trainable_state()
                self._in_loop = True
                self.before_epoch()
                self.run_epoch()
                self._epoch_start_state = None  # the epoch's steps are all done: its state is whole
                self.after_epoch()
                check_stop()
            self._in_loop = False
            self.after_train()
            finished = True
        except (KeyboardInterrupt, StopRequested) as e:
            e.resume_note = self.leave_resumable_checkpoint(e)
            raise
        except Exception:
            try:
                logger.error("Training stopped by an exception in epoch %d of %d", getattr(self, "epoch", 0) + 1,
                             self.max_epoch)
            except (UserError, OSError):  # a full disk took log.txt too: the first error is the one to tell
                pass
            raise
        finally:
            self.close_writer(raise_errors=finished)  # an error in flight stays the one reported

    def _trainable_state(self):
        """A copy of every registered module's, optimiser's and scheduler's state (small: only what trains)."""
        return {name: copy.deepcopy([part.state_dict() if part is not None else None for part in
                                     (self._models[name], self._optims[name], self._scheds[name])])
                for name in self.get_model_names()}

    def _restore_trainable_state(self, state):
        for name, parts in state.items():
            for part, saved in zip((self._models[name], self._optims[name], self._scheds[name]), parts):
                if part is not None:
                    part.load_state_dict(saved)

    def leave_resumable_checkpoint(self, interrupt):
        """After Ctrl-C or SIGTERM: how the run resumes, in words (SimpleTrainer saves what is needed)."""
        return "run the same command again to resume"

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    # ---- optimisation helpers ----------------------------------------------------------------
    def set_model_mode(self, mode="train", names=None):
        for name in self.get_model_names(names):
            self._models[name].train(mode == "train")

    def update_lr(self, names=None):
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss):
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(
                f"Loss is {loss.item()} at epoch {self.epoch + 1} batch {getattr(self, 'batch_idx', 0) + 1}; "
                f"{self._last_good_checkpoint()}: lower OPTIM.LR or train in fp32.")

    def _last_good_checkpoint(self):
        """Where the run would resume from, in words (nothing is saved after a NaN)."""
        directory = getattr(self, "output_dir", "")
        try:
            kept = [read_pointer(os.path.join(directory, name)) for name in self.get_model_names()]
        except CheckpointError:
            kept = [None]
        if not kept or None in kept:
            return f"no checkpoint was saved yet in {directory}"
        return f"the last good checkpoint {', '.join(kept)} is kept"

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss, names=None):
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)

    def get_current_lr(self, names=None):
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]

    # ---- tensorboard -------------------------------------------------------------------------
    # The event file is written by a background thread; its errors (a full disk) surface at the next
    # call, and are said in one sentence naming the folder.
    def init_writer(self, log_dir):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            logger.info("Initialize tensorboard (log_dir=%s)", log_dir)
            self._writer_dir = log_dir
            try:
                self._writer = SummaryWriter(log_dir=log_dir)
            except OSError as e:
                raise self._writer_error(e) from e

    def _writer_error(self, e):
        return UserError(f"Cannot write the tensorboard log in {self._writer_dir} ({getattr(e, 'strerror', None) or e}); "
                         "free space there or make it writable, then run the same command again to resume from the "
                         "last checkpoint.")

    def close_writer(self, raise_errors=True):
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception as e:  # noqa: BLE001 - the writer thread's error, whatever its type
                if raise_errors:
                    raise self._writer_error(e) from e

    trackers = None  # engine.trackers.Trackers of the run (MLflow, W&B), set by engine/launch.py

    def write_scalar(self, tag, scalar_value, global_step=None):
        if self._writer is not None:
            try:
                self._writer.add_scalar(tag, scalar_value, global_step)
            except Exception as e:  # noqa: BLE001 - idem
                raise self._writer_error(e) from e
        if self.trackers:
            self.trackers.log_metric(tag, scalar_value, global_step)


class SimpleTrainer(TrainerBase):
    """Dassl's SimpleTrainer: data, model, evaluator, resume, checkpoints and the final test."""

    # True: the trainer learns nothing (zero-shot), so --eval-only needs no --model-dir;
    # None: decided by whether it registers any model
    training_free = None
    # keys of engine.config's "read by nothing" list that this trainer does read (accepted when set),
    # and TRAINER.<group> keys of another trainer's group that it reads too
    reads_keys = ()
    # False: it learns in one pass (FitOnceTrainer), so OPTIM.MAX_EPOCH is not its training length
    epoch_loop = True

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.run_config_checks(cfg)
        self.device = select_device(cfg)
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.build_data_loader()
        check_val_split(cfg, getattr(getattr(self, "dm", None), "dataset", None), self.val_loader is not None)
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf
        self._rolling_epoch = None  # epoch of a resume-only checkpoint, replaced by the next one
        self._last_save = time.time()

    def run_config_checks(self, cfg):
        """The base checks of every class up the inheritance chain (each class's own ``base_check_cfg``,
        the engine's first), then the trainer's ``check_cfg`` hook: a subclass that overrides
        ``check_cfg`` without ``super()`` (as Dassl's trainers do) still gets every base check."""
        for klass in reversed(type(self).__mro__):
            check = vars(klass).get("base_check_cfg")
            if check is not None:
                check(self, cfg)
        self.check_cfg(cfg)

    def check_cfg(self, cfg):
        """Trainers check their own config keys here (raise ConfigError), before any data or weights load."""

    def base_check_cfg(self, cfg):
        """The engine's checks, run for every trainer (see ``run_config_checks``)."""
        if cfg.TEST.SPLIT not in ("val", "test"):
            raise ConfigError(f"TEST.SPLIT must be val or test, got {cfg.TEST.SPLIT!r}.")
        if cfg.TEST.FINAL_MODEL not in FINAL_MODELS:
            raise ConfigError(f"TEST.FINAL_MODEL must be one of {', '.join(FINAL_MODELS)}, "
                              f"got {cfg.TEST.FINAL_MODEL!r}.")
        trains = self.training_free is not True
        check_values(cfg, trains=trains, epoch_loop=trains and self.epoch_loop)
        check_trainer_keys(cfg, cfg.TRAINER.NAME, type(self), TRAINER_REGISTRY, own_group=self.trainer_cfg())

    def trainer_cfg(self):
        """This trainer's config group ``TRAINER.<NAME>`` (see ``trainer_group``)."""
        return trainer_group(self.cfg, type(self))

    def build_data_loader(self):
        from .data.data_manager import DataManager

        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm
        self.warn_short_classes(dm.dataset.train_x)

    def warn_short_classes(self, train_x, show=5):
        """Say, on every run (a cached few-shot sample included), when classes have fewer than NUM_SHOTS images."""
        num_shots = self.cfg.DATASET.NUM_SHOTS
        if num_shots < 1 and train_x:  # Dassl's generate_fewshot_dataset samples nothing below 1
            say = logger.info if self.training_free is True else logger.warning
            say("DATASET.NUM_SHOTS is %d: not a few-shot run, the full train set (%d images) is used "
                "(Dassl's meaning of NUM_SHOTS < 1)", num_shots, len(train_x))
        if num_shots < 1 or not train_x:
            return
        counts = OrderedDict()
        for item in train_x:
            counts[item.label] = counts.get(item.label, 0) + 1
        short = [(label, n) for label, n in sorted(counts.items()) if n < num_shots]
        if not short:
            return
        used = ", ".join(f"{n} for {self.lab2cname.get(label, label)}" for label, n in short[:show])
        more = f" and {len(short) - show} more classes" if len(short) > show else ""
        logger.warning("DATASET.NUM_SHOTS is %d but %d of %d classes have fewer training images; used %s%s",
                       num_shots, len(short), len(counts), used, more)

    def build_model(self):
        raise NotImplementedError

    def train(self):
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self):
        directory = self.cfg.RESUME or self.cfg.OUTPUT_DIR
        self.start_epoch = self.resume_model_if_exist(directory)
        if self.start_epoch and not self.is_dassl_checkpoint(self.start_epoch) and directory == self.output_dir:
            self._rolling_epoch = self.start_epoch  # a resume-only checkpoint: replaced by the next one
        self.init_writer(os.path.join(self.output_dir, "tensorboard"))
        self.time_start = time.time()

    def after_train(self):
        logger.info("Finish training")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                logger.info("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                logger.info("Deploy the last-epoch model")
            self.test()
        elapsed = str(datetime.timedelta(seconds=round(time.time() - self.time_start)))
        logger.info("Elapsed: %s", elapsed)
        self.close_writer()

    def is_dassl_checkpoint(self, epoch):
        """Whether Dassl saves after (1-based) ``epoch``: at CHECKPOINT_FREQ and at the last epoch."""
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        return (freq > 0 and epoch % freq == 0) or epoch == self.max_epoch

    def after_epoch(self):
        # no LR step here: as in Dassl, the trainer calls update_lr() at its last batch
        # (TaskRes, CoOp, CoCoOp all do), so stepping here too would run the schedule twice as fast
        scheduled = self.is_dassl_checkpoint(self.epoch + 1)
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name=BEST_NAME)
        resume_due = time.time() - self._last_save >= self.cfg.TRAIN.RESUME_SAVE_SECONDS
        if scheduled or resume_due:
            self.save_model(self.epoch, self.output_dir)
            self._last_save = time.time()
            self._drop_rolling_checkpoint()
            # a checkpoint Dassl would not have written is kept only until the next one lands
            self._rolling_epoch = None if scheduled else self.epoch + 1

    def leave_resumable_checkpoint(self, interrupt):
        """Leave a checkpoint of the last whole epoch; returns where the run resumes from, in words.

        Stopped inside an epoch, its steps so far are dropped (the state saved as it began comes back),
        so the resumed run replays that epoch with the same order and views as an uninterrupted one.
        """
        names = self.get_model_names()
        why = "Ctrl-C" if isinstance(interrupt, KeyboardInterrupt) else str(interrupt).replace("stopped by ", "")
        epoch = getattr(self, "epoch", self.start_epoch)
        if not names or not getattr(self, "_in_loop", False):  # nothing trained in this process yet
            return f"{self._last_good_checkpoint()}; run the same command again to resume"
        if self._epoch_start_state is not None:
            self._restore_trainable_state(self._epoch_start_state)
            done = epoch
        else:
            done = epoch + 1
        logger.warning("Stopped by %s in epoch %d of %d%s", why, epoch + 1, self.max_epoch,
                       " (its steps so far are dropped)" if self._epoch_start_state is not None else "")
        if done == 0:
            return f"no epoch had finished; run the same command again to start the run in {self.output_dir}"
        try:
            pointers = [read_pointer(os.path.join(self.output_dir, name)) for name in names]
        except CheckpointError:
            pointers = [None]
        if all(p is not None and os.path.basename(p) == checkpoint_name(done) for p in pointers):
            paths = pointers
        else:
            try:
                paths = self.save_model(done - 1, self.output_dir)
            except (CheckpointError, OSError) as e:
                logger.error("%s", e)
                return f"{self._last_good_checkpoint()}; run the same command again to resume from it"
            self._drop_rolling_checkpoint()
            self._rolling_epoch = None if self.is_dassl_checkpoint(done) else done
        return f"run the same command again to resume from epoch {done} ({', '.join(paths)})"

    def _drop_rolling_checkpoint(self):
        if self._rolling_epoch is None:
            return
        for name in self.get_model_names():
            path = os.path.join(self.output_dir, name, checkpoint_name(self._rolling_epoch))
            if os.path.exists(path):
                os.remove(path)

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on ``split`` (TEST.SPLIT by default); logs Dassl's lines, writes results_<split>.json."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        logger.info("Evaluate on the *%s* set", split)
        for batch in data_loader:
            inputs, label = self.parse_batch_test(batch)
            self.evaluator.process(self.model_inference(inputs), label)
        results = self.evaluator.evaluate(save_path=os.path.join(self.output_dir, f"results_{split}.json"))
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        return list(results.values())[0]

    def model_inference(self, inputs):
        return self.model(inputs)

    def parse_batch_test(self, batch):
        inputs = batch["feat"] if "feat" in batch else batch["img"]
        return inputs.to(self.device), batch["label"].to(self.device)


class _EpochLoop(SimpleTrainer):
    """The per-batch bookkeeping TrainerX and TrainerXU share: timing, the progress line, tensorboard."""

    def before_epoch(self):
        for loader in (self.train_loader_x, getattr(self, "train_loader_u", None)):
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):  # the epoch's order and augmentation views
                sampler.set_epoch(self.epoch)

    def run_epoch(self):
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = self.count_batches()
        print_freq = self.cfg.TRAIN.PRINT_FREQ
        end = time.time()
        for self.batch_idx, batches in enumerate(self.batches()):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(*batches)
            check_stop()  # SIGTERM: stop here, between steps
            batch_time.update(time.time() - end)
            losses.update(loss_summary)
            if (self.batch_idx + 1) % print_freq == 0 or self.num_batches < print_freq:
                nb_remain = self.num_batches - self.batch_idx - 1
                nb_remain += (self.max_epoch - self.epoch - 1) * self.num_batches
                eta = str(datetime.timedelta(seconds=int(batch_time.avg * nb_remain)))
                logger.info(" ".join([
                    f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                    f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                    f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                    f"{losses}",
                    f"lr {self.get_current_lr():.4e}",
                    f"eta {eta}",
                ]))
            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()


class TrainerX(_EpochLoop):
    """A trainer using labelled data only: one pass over ``train_loader_x`` per epoch.

    ``forward_backward(batch)`` gets Dassl's batch dict; ``parse_batch_train(batch)`` returns
    ``(input, label)`` on the device (``input`` is cached features when the loader serves them).
    """

    def count_batches(self):
        return len(self.train_loader_x)

    def batches(self):
        return ((batch,) for batch in self.train_loader_x)

    def parse_batch_train(self, batch):
        inputs = batch["feat"] if "feat" in batch else batch["img"]
        return inputs.to(self.device), batch["label"].to(self.device)


COUNT_ITERS = ("train_x", "train_u", "smaller_one")


class TrainerXU(_EpochLoop):
    """Dassl's trainer over labelled and unlabelled data: ``forward_backward(batch_x, batch_u)``.

    The epoch length follows TRAIN.COUNT_ITER (train_x | train_u | smaller_one); the shorter
    loader restarts when it runs out, as in Dassl. Needs a dataset with ``train_u``.
    """

    def count_batches(self):
        if self.train_loader_u is None:
            raise ConfigError(f"{type(self).__name__} trains on unlabelled data too, but dataset "
                              f"{self.cfg.DATASET.NAME} has no train_u split; use a TrainerX trainer.")
        mode = self.cfg.TRAIN.COUNT_ITER
        sizes = {"train_x": len(self.train_loader_x), "train_u": len(self.train_loader_u)}
        sizes["smaller_one"] = min(sizes.values())
        if mode not in sizes:
            raise ConfigError(f"TRAIN.COUNT_ITER must be one of {', '.join(COUNT_ITERS)}, got {mode!r}.")
        return sizes[mode]

    def batches(self):
        iter_x, iter_u = iter(self.train_loader_x), iter(self.train_loader_u)
        for _ in range(self.num_batches):
            batch_x = next(iter_x, None)
            if batch_x is None:
                iter_x = iter(self.train_loader_x)
                batch_x = next(iter_x)
            batch_u = next(iter_u, None)
            if batch_u is None:
                iter_u = iter(self.train_loader_u)
                batch_u = next(iter_u)
            yield batch_x, batch_u

    def parse_batch_train(self, batch_x, batch_u):
        return (batch_x["img"].to(self.device), batch_x["label"].to(self.device), batch_u["img"].to(self.device))
