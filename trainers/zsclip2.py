"""Zero-shot CLIP with prompt ensembling (CoOp's ``ZeroshotCLIP2``), no training.

Templates: CLIP's 7 selected ImageNet templates, plus the dataset's own template for every
dataset but ImageNet; each template's class embeddings are normalised, averaged and normalised
again. Class names read ``_`` as a space. Run with ``--eval-only`` (no ``--model-dir`` needed)
or without: either way it evaluates.
"""
import logging

from yacs.config import CfgNode as CN

from engine import TRAINER_REGISTRY
from engine.protocol import Protocol, family_config

from .methods.prompt_ensemble import ensemble_classifier, ensemble_templates
from .templates import CUSTOM_TEMPLATES, DEFAULT_TEMPLATE, IMAGENET_TEMPLATES_SELECT
from .text_features import prompt_features
from .clip_trainer import CosineClassifier
from .zsclip import ZeroshotCLIP

logger = logging.getLogger(__name__)


def extend_cfg(cfg):
    cfg.TRAINER.ZeroshotCLIP2 = CN()
    cfg.TRAINER.ZeroshotCLIP2.PREC = "fp16"  # fp16 | fp32 | amp; fp16 runs in fp32 on the CPU


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """Prompt-ensembled zero-shot CLIP; ``train`` (evaluate only) as ZeroshotCLIP."""

    protocol = Protocol(label="ZeroshotCLIP2 (ensemble)", config=family_config, trains=False, evaluations=("dg",),
                        order=20, source="KaiyangZhou/CoOp (its CoOp/<backbone>.yaml)")

    def trainer_cfg(self):
        return self.cfg.TRAINER.ZeroshotCLIP2

    def build_head(self, clip_model):
        name = self.cfg.DATASET.NAME
        templates = ensemble_templates(IMAGENET_TEMPLATES_SELECT, CUSTOM_TEMPLATES.get(name, DEFAULT_TEMPLATE), name)
        logger.info("Prompt ensembling (n=%d)", len(templates))
        classnames = [c.replace("_", " ") for c in self.dm.dataset.classnames]
        return CosineClassifier(ensemble_classifier(prompt_features(clip_model, classnames, templates)),
                                clip_model.logit_scale)
