"""The Dassl surface a CoOp-family trainer relies on: LR convention, stdout in log.txt, names, registry."""
import math
import os

import pytest

import dassl_toys
from helpers import make_image_folder, run_train


@pytest.fixture
def toy(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=8)
    cfg = dassl_toys.write_toy_config(tmp_path / "toy.yaml")
    return data, cfg, tmp_path


def toy_args(data, cfg, out, *opts):
    return ["--root", data, "--seed", 1, "--trainer", "CoOpIdiomToy", "--config-file", cfg,
            "--output-dir", out, *opts]


def dassl_lr(epoch, base_lr=0.002, max_epoch=6):
    """Dassl's ConstantWarmupScheduler over CosineAnnealingLR(T_max=max_epoch), 1-based epochs:
    epoch 1 at WARMUP_CONS_LR, then cosine restarted at epoch 2 (WARMUP_RECOUNT)."""
    if epoch == 1:
        return 1e-5
    return 0.5 * base_lr * (1 + math.cos(math.pi * (epoch - 2) / max_epoch))


def test_lr_per_epoch_is_dassl_schedule_for_a_trainer_stepping_at_its_last_batch(toy):
    data, cfg, tmp = toy
    trainer = run_train(*toy_args(data, cfg, tmp / "out"))
    assert trainer.lr_per_epoch == pytest.approx([dassl_lr(e) for e in range(1, 7)], rel=1e-9)


def test_lr_after_resume_continues_the_same_schedule(toy, monkeypatch):
    data, cfg, tmp = toy
    monkeypatch.setattr(dassl_toys.CoOpIdiomToy, "stop_at_epoch", 4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_train(*toy_args(data, cfg, tmp / "out", "TRAIN.CHECKPOINT_FREQ", 1))
    monkeypatch.setattr(dassl_toys.CoOpIdiomToy, "stop_at_epoch", None)
    resumed = run_train(*toy_args(data, cfg, tmp / "out", "TRAIN.CHECKPOINT_FREQ", 1))
    assert resumed.lr_per_epoch == pytest.approx([dassl_lr(e) for e in range(4, 7)], rel=1e-9)
