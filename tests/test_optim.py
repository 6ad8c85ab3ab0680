"""engine.optim: Dassl's optimizers, LR schedulers and warm-up wrappers on current torch."""
import io
import math

import pytest
import torch
import torch.nn as nn

from engine.config import get_cfg_default
from engine.errors import ConfigError
from engine.optim import (
    AVAI_OPTIMS,
    ConstantWarmupScheduler,
    LinearWarmupScheduler,
    build_lr_scheduler,
    build_optimizer,
)


def taskres_optim_cfg(**overrides):
    """The OPTIM node of configs/trainers/TaskRes (adam, cosine, 1 constant warm-up epoch)."""
    cfg = get_cfg_default()
    o = cfg.OPTIM
    o.NAME = "adam"
    o.LR = 2e-3
    o.MAX_EPOCH = 10
    o.LR_SCHEDULER = "cosine"
    o.WARMUP_EPOCH = 1
    o.WARMUP_TYPE = "constant"
    o.WARMUP_CONS_LR = 1e-5
    for key, value in overrides.items():
        setattr(o, key, value)
    return o


def lr_per_epoch(optimizer, scheduler, num_epochs, param):
    """The LR each epoch trains with, stepping as a trainer does (optimizer, then scheduler once per epoch)."""
    lrs = []
    for _ in range(num_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()
    return lrs


def fresh(optim_cfg):
    param = nn.Parameter(torch.zeros(4))
    optimizer = build_optimizer([param], optim_cfg)
    return param, optimizer, build_lr_scheduler(optimizer, optim_cfg)


def cosine(base_lr, epoch, t_max):
    return 0.5 * base_lr * (1 + math.cos(math.pi * epoch / t_max))


def test_taskres_schedule_is_warmup_then_dassl_cosine():
    o = taskres_optim_cfg()
    param, optimizer, scheduler = fresh(o)
    assert isinstance(scheduler, ConstantWarmupScheduler)
    lrs = lr_per_epoch(optimizer, scheduler, o.MAX_EPOCH, param)
    assert lrs[0] == pytest.approx(1e-5, abs=0)
    # after warm-up the cosine successor restarts its count: epoch e uses cos(e - 1)
    expected = [cosine(2e-3, e - 1, 10) for e in range(1, 10)]
    assert lrs[1:] == pytest.approx(expected, rel=1e-12)
    assert scheduler.get_last_lr() == pytest.approx([cosine(2e-3, 9, 10)], rel=1e-12)


def test_linear_warmup_ramps_from_min_lr():
    o = taskres_optim_cfg(WARMUP_TYPE="linear", WARMUP_EPOCH=3, WARMUP_MIN_LR=1e-6, MAX_EPOCH=8)
    param, optimizer, scheduler = fresh(o)
    assert isinstance(scheduler, LinearWarmupScheduler)
    lrs = lr_per_epoch(optimizer, scheduler, 6, param)
    assert lrs[:3] == pytest.approx([1e-6, 2e-3 / 3, 2 * 2e-3 / 3], rel=1e-12)
    assert lrs[3:] == pytest.approx([cosine(2e-3, k, 8) for k in range(3)], rel=1e-12)


@pytest.mark.parametrize("recount, decay_epoch", [(True, 2 + 4), (False, 4)])
def test_warmup_recount(recount, decay_epoch):
    # single_step with STEPSIZE 4 after 2 warm-up epochs: recounting starts the successor at 0
    # after warm-up; without it the warm-up epochs count towards the step
    o = taskres_optim_cfg(
        LR_SCHEDULER="single_step", STEPSIZE=(4,), GAMMA=0.1, WARMUP_EPOCH=2, WARMUP_RECOUNT=recount
    )
    param, optimizer, scheduler = fresh(o)
    lrs = lr_per_epoch(optimizer, scheduler, 8, param)
    assert lrs[:2] == [1e-5, 1e-5]
    assert lrs[2:decay_epoch] == pytest.approx([2e-3] * (decay_epoch - 2))
    assert lrs[decay_epoch] == pytest.approx(2e-4)


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf)  # torch's default weights_only loading must accept it


@pytest.mark.parametrize("with_optimizer_state", [True, False])
@pytest.mark.parametrize("stop_after", [1, 4])
def test_state_dict_round_trip_resumes_exact_lr(with_optimizer_state, stop_after):
    o = taskres_optim_cfg()
    param, optimizer, scheduler = fresh(o)
    reference = lr_per_epoch(optimizer, scheduler, o.MAX_EPOCH, param)

    param, optimizer, scheduler = fresh(o)
    first = lr_per_epoch(optimizer, scheduler, stop_after, param)
    saved_sched = roundtrip(scheduler.state_dict())
    saved_optim = roundtrip(optimizer.state_dict())
    assert isinstance(saved_sched["successor"], dict)  # nested state, not a pickled scheduler

    param2, optimizer2, scheduler2 = fresh(o)  # a new process: built from the config, then loaded
    if with_optimizer_state:
        optimizer2.load_state_dict(saved_optim)
    scheduler2.load_state_dict(saved_sched)
    rest = lr_per_epoch(optimizer2, scheduler2, o.MAX_EPOCH - stop_after, param2)
    assert first + rest == reference


def test_plain_scheduler_without_warmup():
    o = taskres_optim_cfg(WARMUP_EPOCH=-1)
    param, optimizer, scheduler = fresh(o)
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.T_max == 10
    lrs = lr_per_epoch(optimizer, scheduler, 3, param)
    assert lrs == pytest.approx([cosine(2e-3, e, 10) for e in range(3)], rel=1e-12)


def test_single_step_nonpositive_stepsize_means_max_epoch():
    o = taskres_optim_cfg(LR_SCHEDULER="single_step", STEPSIZE=(-1,), WARMUP_EPOCH=-1)
    _, _, scheduler = fresh(o)
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR)
    assert scheduler.step_size == o.MAX_EPOCH


def test_multi_step_milestones():
    o = taskres_optim_cfg(LR_SCHEDULER="multi_step", STEPSIZE=(2, 3), GAMMA=0.5, WARMUP_EPOCH=-1)
    param, optimizer, scheduler = fresh(o)
    assert lr_per_epoch(optimizer, scheduler, 4, param) == pytest.approx([2e-3, 2e-3, 1e-3, 5e-4])


@pytest.mark.parametrize(
    "key, value, named",
    [
        ("LR_SCHEDULER", "cosin", "OPTIM.LR_SCHEDULER"),
        ("WARMUP_TYPE", "exp", "OPTIM.WARMUP_TYPE"),
    ],
)
def test_unknown_scheduler_settings_raise_config_error(key, value, named):
    o = taskres_optim_cfg(**{key: value})
    optimizer = build_optimizer([nn.Parameter(torch.zeros(1))], o)
    with pytest.raises(ConfigError, match=named) as info:
        build_lr_scheduler(optimizer, o)
    assert value in str(info.value)


def test_warmup_step_with_epoch_argument_is_refused():
    _, _, scheduler = fresh(taskres_optim_cfg())
    with pytest.raises(TypeError, match="without an epoch"):
        scheduler.step(3)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("adam", torch.optim.Adam),
        ("amsgrad", torch.optim.Adam),
        ("sgd", torch.optim.SGD),
        ("rmsprop", torch.optim.RMSprop),
        ("radam", torch.optim.RAdam),
        ("adamw", torch.optim.AdamW),
    ],
)
def test_each_optimizer_builds(name, cls):
    o = taskres_optim_cfg(NAME=name, WEIGHT_DECAY=1e-3)
    model = nn.Linear(3, 2)
    optimizer = build_optimizer(model, o)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == 2e-3 and group["weight_decay"] == 1e-3
    assert len(group["params"]) == 2
    if name in ("adam", "amsgrad", "radam", "adamw"):
        assert group["betas"] == (o.ADAM_BETA1, o.ADAM_BETA2)
    assert group.get("amsgrad", False) is (name == "amsgrad")


def test_all_names_covered():
    assert sorted(AVAI_OPTIMS) == sorted(["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"])


def test_sgd_and_rmsprop_options():
    o = taskres_optim_cfg(NAME="sgd", MOMENTUM=0.8, SGD_DAMPNING=0.1, SGD_NESTEROV=False)
    group = build_optimizer([nn.Parameter(torch.zeros(1))], o).param_groups[0]
    assert (group["momentum"], group["dampening"], group["nesterov"]) == (0.8, 0.1, False)
    o = taskres_optim_cfg(NAME="rmsprop", RMSPROP_ALPHA=0.9, MOMENTUM=0.5)
    group = build_optimizer([nn.Parameter(torch.zeros(1))], o).param_groups[0]
    assert (group["alpha"], group["momentum"]) == (0.9, 0.5)


def test_unknown_optimizer_names_key_and_choices():
    o = taskres_optim_cfg(NAME="adan")
    with pytest.raises(ConfigError) as info:
        build_optimizer([nn.Parameter(torch.zeros(1))], o)
    msg = str(info.value)
    assert "OPTIM.NAME" in msg and '"adan"' in msg
    assert all(name in msg for name in AVAI_OPTIMS)


@pytest.mark.parametrize(
    "name, expected",
    [
        # L2 decay enters the gradient: Adam's first step moves by lr whatever the gradient's size
        ("adam", 1.0 - 0.1),
        # decoupled decay shrinks the weight by lr * wd; the zero gradient adds no step
        ("adamw", 1.0 - 0.1 * 0.5),
        ("radam", 1.0 - 0.1 * 0.5),
        # SGD: p - lr * (grad + wd * p)
        ("sgd", 1.0 - 0.1 * 0.5),
    ],
)
def test_weight_decay_semantics(name, expected):
    o = taskres_optim_cfg(NAME=name, LR=0.1, WEIGHT_DECAY=0.5)
    param = nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer = build_optimizer([param], o)
    param.grad = torch.zeros_like(param)
    optimizer.step()
    assert param.item() == pytest.approx(expected, rel=1e-6)


def test_zero_weight_decay_leaves_weights_alone():
    o = taskres_optim_cfg(NAME="adam", WEIGHT_DECAY=0.0)
    param = nn.Parameter(torch.ones(1))
    optimizer = build_optimizer([param], o)
    param.grad = torch.zeros_like(param)
    optimizer.step()
    assert param.item() == 1.0


class TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)


def test_staged_lr_splits_children():
    o = taskres_optim_cfg(STAGED_LR=True, NEW_LAYERS=("head",), BASE_LR_MULT=0.1)
    model = TwoPart()
    optimizer = build_optimizer(model, o)
    base, new = optimizer.param_groups
    assert base["lr"] == pytest.approx(2e-4) and new["lr"] == pytest.approx(2e-3)
    assert {id(p) for p in new["params"]} == {id(p) for p in model.head.parameters()}
    assert {id(p) for p in base["params"]} == {id(p) for p in model.backbone.parameters()}


def test_staged_lr_unknown_layer_and_non_module():
    o = taskres_optim_cfg(STAGED_LR=True, NEW_LAYERS=("classifier",))
    with pytest.raises(ConfigError, match="OPTIM.NEW_LAYERS.*classifier.*backbone"):
        build_optimizer(TwoPart(), o)
    with pytest.raises(TypeError, match="nn.Module"):
        build_optimizer(list(TwoPart().parameters()), o)


def test_explicit_param_groups_win():
    o = taskres_optim_cfg()
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(None, o, param_groups=[{"params": [a], "lr": 1.0}, {"params": [b]}])
    assert [g["lr"] for g in optimizer.param_groups] == [1.0, 2e-3]
