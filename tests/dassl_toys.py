"""Toy trainers written the way CoOp-family code is written against Dassl (for the surface tests).

``CoOpIdiomToy`` reads its group with ``cfg.TRAINER.<NAME>``-style access through ``extend_cfg``,
``print``s, calls ``self.update_lr()`` at its last batch and parses batches with Dassl's
``parse_batch_train`` -> ``(input, label)``; no CLIP, so a run takes a fraction of a second.
Tests register it with ``registered(monkeypatch)``.
"""
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY, TrainerX
from engine.metrics import compute_accuracy
from engine.optim import build_lr_scheduler, build_optimizer

TOY_CONFIG = """\
DATASET:
  NAME: ImageFolder
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 4
  TEST:
    BATCH_SIZE: 16
  NUM_WORKERS: 0
INPUT:
  SIZE: (8, 8)
  TRANSFORMS: ["normalize"]
OPTIM:
  NAME: "sgd"
  LR: 0.002
  MAX_EPOCH: 6
  LR_SCHEDULER: "cosine"
  WARMUP_EPOCH: 1
  WARMUP_TYPE: "constant"
  WARMUP_CONS_LR: 1e-5
TRAIN:
  PRINT_FREQ: 5
"""


def extend_cfg(cfg):
    cfg.TRAINER.COOPIDIOMTOY = CN()
    cfg.TRAINER.COOPIDIOMTOY.HIDDEN = 4


class Flat(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class CoOpIdiomToy(TrainerX):
    """Records the LR each epoch trains with; ``stop_at_epoch`` (1-based) simulates a crash."""

    stop_at_epoch = None

    def build_model(self):
        self.model = Flat(self.num_classes).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("prompt_learner", self.model, self.optim, self.sched)
        self.lr_per_epoch = []

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        if self.batch_idx == 0 and self.epoch + 1 == self.stop_at_epoch:
            raise RuntimeError("simulated crash")
        if self.batch_idx == 0:
            self.lr_per_epoch.append(self.optim.param_groups[0]["lr"])
            print(f"toy print: epoch {self.epoch + 1} starts")
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}


def registered(monkeypatch):
    """Register the toy for one test only (monkeypatch restores the registry after it)."""
    monkeypatch.setattr(TRAINER_REGISTRY, "_obj_map", dict(TRAINER_REGISTRY._obj_map))
    TRAINER_REGISTRY.register(CoOpIdiomToy)


def write_toy_config(path):
    with open(path, "w") as f:
        f.write(TOY_CONFIG)
    return str(path)
