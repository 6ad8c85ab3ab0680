"""Zero-shot CLIP (CoOp's ``ZeroshotCLIP``): classify with normalised prompt embeddings, no training.

One template per dataset (CoOp's CUSTOM_TEMPLATES) with ``_`` in class names read as spaces.
Run with ``--eval-only``; test features come from the feature cache like every frozen-CLIP trainer.
"""
import logging

from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.protocol import Protocol

from .clip_trainer import CosineClassifier, FrozenCLIPTrainer
from .taskres import taskres_schedule
from .templates import CUSTOM_TEMPLATES, DEFAULT_TEMPLATE
from .text_features import prompt_features

logger = logging.getLogger(__name__)


def extend_cfg(cfg):
    cfg.TRAINER.ZeroshotCLIP = CN()
    cfg.TRAINER.ZeroshotCLIP.PREC = "fp16"


def _taskres_one_shot_config(dataset, shots, family):
    # the TaskRes scripts' zero-shot run: the 1-shot TaskRes config (its backbone, input, batch size)
    return taskres_schedule(dataset, 1)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(FrozenCLIPTrainer):
    training_free = True  # --eval-only runs without --model-dir; no training views are encoded
    protocol = Protocol(label="ZeroshotCLIP", config=_taskres_one_shot_config, config_dir="TaskRes", trains=False,
                        evaluations=("dg",), order=10, extra={"backbone_from_config": True},
                        source="geekyutao/TaskRes scripts/zeroshot.sh")

    def build_head(self, clip_model):
        template = CUSTOM_TEMPLATES.get(self.cfg.DATASET.NAME, DEFAULT_TEMPLATE)
        classnames = [c.replace("_", " ") for c in self.dm.dataset.classnames]
        logger.info("Prompt template: %s", template)
        return CosineClassifier(prompt_features(clip_model, classnames, [template])[0], clip_model.logit_scale)

    def train(self):
        logger.info("ZeroshotCLIP has nothing to train: evaluating")
        self.test()

