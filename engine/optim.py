"""Optimizers and LR schedulers from ``cfg.OPTIM``, with Dassl's names and semantics.

``build_optimizer`` knows adam, amsgrad, sgd, rmsprop, radam and adamw; ``build_lr_scheduler``
knows single_step, multi_step and cosine, optionally behind a constant or linear warm-up.

Dassl's warm-up schedulers pass ``verbose`` to torch's ``LRScheduler``, which torch 2.x
removed, and their ``state_dict`` pickles the successor scheduler (optimizer included). The
warm-up wrappers here keep Dassl's learning-rate sequence exactly, work on current torch, and
save the successor as its own ``state_dict`` so a resumed run continues with the same LR.

Call order (Dassl's, one scheduler step per epoch)::

    optim = build_optimizer(model, cfg.OPTIM)
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    for epoch in range(cfg.OPTIM.MAX_EPOCH):
        ...  # optim.step() per batch
        sched.step()
"""
import logging
import warnings

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler

from .errors import ConfigError

logger = logging.getLogger(__name__)

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]
AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]
AVAI_WARMUPS = ["constant", "linear"]


def _staged_param_groups(model, optim_cfg):
    """Dassl's STAGED_LR: children named in NEW_LAYERS get LR, the rest LR * BASE_LR_MULT."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            "OPTIM.STAGED_LR is True, so build_optimizer() needs an nn.Module (it splits the "
            f"parameters by child name), got {type(model).__name__}."
        )
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    new_layers = optim_cfg.NEW_LAYERS
    if isinstance(new_layers, str):
        new_layers = [new_layers]
    new_layers = list(new_layers)
    children = [name for name, _ in model.named_children()]
    if not new_layers:
        warnings.warn("OPTIM.STAGED_LR is True but OPTIM.NEW_LAYERS is empty: every layer gets LR * BASE_LR_MULT.")
    missing = [name for name in new_layers if name not in children]
    if missing:
        raise ConfigError(
            f"OPTIM.NEW_LAYERS names {missing}, which are not children of {type(model).__name__}; "
            f"choose from {children}."
        )
    base_params, new_params = [], []
    for name, module in model.named_children():
        (new_params if name in new_layers else base_params).extend(module.parameters())
    return [
        {"params": base_params, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT},
        {"params": new_params},
    ]


def build_optimizer(model, optim_cfg, param_groups=None):
    """Build the optimizer named by ``optim_cfg.NAME`` (Dassl's ``build_optimizer``).

    Args:
        model: an ``nn.Module`` or an iterable of parameters.
        optim_cfg: the ``cfg.OPTIM`` node.
        param_groups: when given, optimised as they are and ``model`` is ignored.

    ``WEIGHT_DECAY`` is each optimizer's own ``weight_decay``: an L2 term added to the gradient
    for adam/amsgrad/sgd/rmsprop, decoupled (``p *= 1 - lr * wd``) for adamw and radam, as in
    Dassl (its RAdam decays the weights directly).
    """
    name = optim_cfg.NAME
    if name not in AVAI_OPTIMS:
        raise ConfigError(f'Unknown optimizer OPTIM.NAME "{name}"; choose one of {", ".join(AVAI_OPTIMS)}.')

    lr = optim_cfg.LR
    wd = optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)

    if param_groups is not None:
        if optim_cfg.STAGED_LR:
            warnings.warn("OPTIM.STAGED_LR is ignored because explicit param_groups were given; set the per-group lr yourself.")
    elif optim_cfg.STAGED_LR:
        param_groups = _staged_param_groups(model, optim_cfg)
    elif isinstance(model, nn.Module):
        param_groups = model.parameters()
    else:
        param_groups = model

    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas)
    if name == "amsgrad":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas, amsgrad=True)
    if name == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=wd,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd, alpha=optim_cfg.RMSPROP_ALPHA
        )
    if name == "radam":
        # Dassl's own RAdam (degenerated_to_sgd=True, decoupled decay) is the update torch's
        # RAdam computes with decoupled_weight_decay=True.
        return torch.optim.RAdam(param_groups, lr=lr, weight_decay=wd, betas=betas, decoupled_weight_decay=True)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=wd, betas=betas)  # "adamw"


class _BaseWarmupScheduler(LRScheduler):
    """Runs its own LR for ``warmup_epoch`` steps, then hands over to ``successor``.

    While warming up, the successor is not stepped; at the hand-over the optimizer gets the
    successor's last LR (its value for the epoch it is at), and every later ``step()`` steps
    the successor. This is Dassl's sequence, e.g. warm-up 1 + cosine over E epochs gives
    ``[warm, cos(0), cos(1), ...]``.
    """

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1):
        if warmup_epoch <= 0:
            raise ValueError(f"warmup_epoch must be > 0, got {warmup_epoch}")
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def warmup_lr(self):
        """The LR of each param group at warm-up epoch ``self.last_epoch``."""
        raise NotImplementedError

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return list(self.successor.get_last_lr())
        return self.warmup_lr()

    def step(self, epoch=None):
        if epoch is not None:
            raise TypeError("Warm-up schedulers count epochs themselves: call step() without an epoch.")
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step()
            self.last_epoch += 1
            self._last_lr = list(self.successor.get_last_lr())
        else:
            super().step()

    def state_dict(self):
        state = super().state_dict()
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        successor_state = state.pop("successor")
        super().load_state_dict(state)
        self.successor.load_state_dict(successor_state)
        # The successor's chained formulas read the optimizer's current LR: make it the
        # restored one, so resuming is exact even when the optimizer state was not loaded.
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    """LR = ``cons_lr`` for the first ``warmup_epoch`` epochs (Dassl's constant warm-up)."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lr(self):
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    """LR = ``min_lr`` at epoch 0, then ``base_lr * epoch / warmup_epoch`` (Dassl's linear warm-up)."""

    def __init__(self, optimizer, successor, warmup_epoch, min_lr, last_epoch=-1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lr(self):
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [base_lr * self.last_epoch / self.warmup_epoch for base_lr in self.base_lrs]


def build_lr_scheduler(optimizer, optim_cfg):
    """Build the scheduler named by ``optim_cfg.LR_SCHEDULER`` (Dassl's ``build_lr_scheduler``).

    - single_step: StepLR(STEPSIZE[-1], GAMMA); a STEPSIZE <= 0 means MAX_EPOCH.
    - multi_step: MultiStepLR(STEPSIZE, GAMMA).
    - cosine: CosineAnnealingLR(T_max=MAX_EPOCH).
    With WARMUP_EPOCH > 0 it is wrapped in a constant (WARMUP_CONS_LR) or linear
    (from WARMUP_MIN_LR) warm-up. WARMUP_RECOUNT False starts the successor's count at
    WARMUP_EPOCH instead of 0, as Dassl does (its cosine then decays from the base LR at
    the hand-over to 0 at MAX_EPOCH).
    """
    name = optim_cfg.LR_SCHEDULER
    stepsize = optim_cfg.STEPSIZE
    gamma = optim_cfg.GAMMA
    max_epoch = optim_cfg.MAX_EPOCH
    if name not in AVAI_SCHEDS:
        raise ConfigError(f'Unknown LR scheduler OPTIM.LR_SCHEDULER "{name}"; choose one of {", ".join(AVAI_SCHEDS)}.')

    if name == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int):
            raise ConfigError(f"OPTIM.STEPSIZE must be an integer for single_step, got {stepsize!r}.")
        if stepsize <= 0:
            stepsize = max_epoch
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=stepsize, gamma=gamma)
    elif name == "multi_step":
        if not isinstance(stepsize, (list, tuple)) or not all(isinstance(s, int) for s in stepsize):
            raise ConfigError(f"OPTIM.STEPSIZE must be a list of epochs for multi_step, got {stepsize!r}.")
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize), gamma=gamma)
    else:  # cosine
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=float(max_epoch))

    if optim_cfg.WARMUP_EPOCH > 0:
        if not optim_cfg.WARMUP_RECOUNT:
            scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
        if optim_cfg.WARMUP_TYPE == "constant":
            scheduler = ConstantWarmupScheduler(
                optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR
            )
        elif optim_cfg.WARMUP_TYPE == "linear":
            scheduler = LinearWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR)
        else:
            raise ConfigError(
                f'Unknown warm-up OPTIM.WARMUP_TYPE "{optim_cfg.WARMUP_TYPE}"; choose one of {", ".join(AVAI_WARMUPS)}.'
            )
    return scheduler
